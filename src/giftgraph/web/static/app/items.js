// Lists: every list with a "New list" form, and one list with its items, each with
// Status (one step back or forward), Assign, Comment, edit and remove controls.
import { post } from './api.js';
import { h, money, ago, day, form, reveal, statusWord, STATUSES, serialized, noteItem, keepingFocus, redraw } from './ui.js';
import { deleteButton } from './views.js';

const edges = (c) => c.edges.map((e) => e.node);
const LIST_KINDS = [['IDEAS', 'Ideas'], ['WISHLIST', 'Wish list'], ['GIFT_PLAN', 'Gift plan']];
const kindWord = (k) => (LIST_KINDS.find(([v]) => v === k) || [k, k])[1];
const empty = (text) => h('li.empty', { text });
const section = (title, ...children) => h('section.card', { 'aria-label': title }, h('h3', { text: title }), ...children);

export function listRow(l) {
  const about = [kindWord(l.kind), l.person && `for ${l.person.name}`, l.occasion && l.occasion.name,
    `${l.items.totalCount} ${l.items.totalCount === 1 ? 'gift' : 'gifts'}`].filter(Boolean).join(' · ');
  return h('li', {}, h('a', { href: `#/list/${l.id}`, text: l.name }), h('small', { text: about }));
}

async function choices() {
  const d = await post('{ persons(first: 100) { edges { node { id name } } } occasions(first: 100) { edges { node { id name date } } } }');
  return { persons: [['', 'Nobody in particular'], ...edges(d.persons).map((p) => [p.id, p.name])],
    occasions: [['', 'No occasion'], ...edges(d.occasions).map((o) => [o.id, `${o.name} (${day(o.date)})`])] };
}

const LIST_FIELDS = (c, l = {}) => [
  { name: 'name', label: 'Name', required: true, value: l.name },
  { name: 'kind', label: 'Kind', type: 'select', options: LIST_KINDS, value: l.kind },
  { name: 'personId', label: 'For', type: 'select', options: c.persons, value: l.person ? l.person.id : '' },
  { name: 'occasionId', label: 'Occasion', type: 'select', options: c.occasions, value: l.occasion ? l.occasion.id : '' },
  { name: 'budget', label: 'Budget', inputmode: 'decimal', value: l.budget },
];
const listInput = (v) => ({ name: v.name, kind: v.kind, personId: v.personId || null, occasionId: v.occasionId || null, budget: v.budget || null });

// #/lists/new?person=ID: the new list's form with that person chosen.
export function listView(app, id, params) {
  return id && id !== 'new' ? oneList(app, id) : allLists(params && params.get('person'));
}

function allLists(person) {
  const list = h('ul.rows');
  const slot = h('div');
  const refresh = serialized(async () => {
    const [d, c] = await Promise.all([
      post('{ lists(first: 100) { edges { node { id name kind person { name } occasion { name } items { totalCount } } } } }'), choices()]);
    const rows = edges(d.lists).map(listRow);
    redraw(list, ...(rows.length ? rows : [empty('No lists yet')]));
    if (slot.firstChild) {
      // New people or occasions: new choices, keeping what is typed and chosen.
      for (const [name, options] of [['personId', c.persons], ['occasionId', c.occasions]]) {
        const select = slot.firstChild.inputs[name];
        const chosen = select.value;
        select.replaceChildren(...options.map(([v, t]) => h('option', { value: v, text: t })));
        select.value = options.some(([v]) => v === chosen) ? chosen : '';
      }
    } else {
      const chosen = c.persons.some(([v]) => v && v === person) ? { person: { id: person } } : {};
      slot.replaceChildren(form({ title: 'Start a list', fields: LIST_FIELDS(c, chosen), submit: 'New list',
        onSubmit: async (v) => {
          const r = await post('mutation($i: GiftListInput!) { createList(input: $i) { id } }', { i: listInput(v) });
          location.hash = `#/list/${r.createList.id}`;
        } }));
    }
  });
  return { el: h('div', {}, h('h2', { text: 'Lists' }), h('div.split', {}, section('All lists', list), slot)), refresh };
}

const GIFT_FIELDS = (g = {}) => [
  { name: 'name', label: 'Name', required: true, value: g.name },
  { name: 'url', label: 'Link (URL of the shop page)', type: 'url', value: g.url },
  { name: 'price', label: 'Price', inputmode: 'decimal', value: g.price },
];
const giftInput = (v) => ({ name: v.name, url: v.url || null, price: v.price || null });

function oneList(app, id) {
  const head = h('h2', { text: 'List' });
  const about = h('p.about');
  const items = h('ul.items', { 'aria-label': 'Items' });
  const rows = new Map(); // item id -> { el, sig, comments, editor }
  let latest = null;
  const editList = reveal('Edit list', async () => form({ title: 'Edit list', fields: LIST_FIELDS(await choices(), latest),
    submit: 'Save list', reset: false,
    onSubmit: (v) => post('mutation($id: ID!, $i: GiftListPatch!) { updateList(id: $id, input: $i) { id } }', { id, i: listInput(v) }),
    extra: deleteButton(latest.name, async () => { await post('mutation($id: ID!) { deleteList(id: $id) }', { id }); location.hash = '#/lists'; }) }));
  const add = form({ title: 'Add a gift', fields: GIFT_FIELDS(), submit: 'Add gift',
    onSubmit: async (v) => {
      await post('mutation($l: ID!, $i: ListItemInput!) { addListItem(listId: $l, input: $i) { id } }', { l: id, i: { gift: giftInput(v) } });
      await refresh();
    } });

  const refresh = serialized(async () => {
    const d = await post(`query($id: ID!) { node(id: $id) { ... on GiftList { id name kind budget
      person { id name } occasion { id name date }
      items(first: 100) { edges { node { id status quantity notes commentCount assignee { id displayName }
        gift { id name url store price currency } } } } } } }`, { id });
    const l = d.node;
    if (!l) throw Object.assign(new Error('gone'), { code: 'NOT_FOUND' });
    latest = l;
    head.textContent = l.name;
    about.replaceChildren(kindWord(l.kind), l.person ? ' for ' : '', l.person ? h('a', { href: `#/person/${l.person.id}`, text: l.person.name }) : '',
      l.occasion ? ' · ' : '', l.occasion ? h('a', { href: `#/occasion/${l.occasion.id}`, text: l.occasion.name }) : '',
      l.budget ? ` · budget ${money(l.budget)}` : '');
    const seen = new Set();
    const order = edges(l.items);
    keepingFocus(() => {
      for (const it of order) {
        seen.add(it.id);
        const sig = JSON.stringify([it, app.members.map((m) => m.id)]);
        const row = rows.get(it.id);
        if (row && row.sig === sig) continue;
        const fresh = itemRow(app, it, refresh, row);
        if (row) row.el.replaceWith(fresh.el);
        rows.set(it.id, { ...fresh, sig });
      }
      for (const [k, row] of rows) if (!seen.has(k)) { row.el.remove(); rows.delete(k); }
      // Only rows out of place move: a redraw that changes nothing touches nothing.
      order.forEach((it, i) => {
        const el = rows.get(it.id).el;
        if (items.children[i] !== el) items.insertBefore(el, items.children[i] || null);
      });
      while (items.children.length > order.length) items.lastElementChild.remove();
      if (!order.length) items.append(empty('No gifts yet: add the first one.'));
    });
  });
  function onEvent(e) {
    if (e.entityType !== 'Comment' || !e.node) return;
    const row = rows.get(e.node.targetId);
    if (row && row.comments.open) row.comments.load();
  }
  const jump = h('button.link.jump', { type: 'button', onclick: () => {
    add.scrollIntoView({ block: 'start' });
    add.querySelector('input').focus({ preventScroll: true });
  } }, 'Add a gift');
  return { el: h('div', {}, h('p.crumbs', {}, h('a', { href: '#/lists', text: 'Lists' })), head, about, jump,
    h('div.split', {}, section('Gifts', items), h('div.stack', {}, add, h('div.card', {}, editList.button, editList.panel)))), refresh, onEvent };
}

function itemRow(app, it, refresh, prior) {
  const g = it.gift;
  noteItem(it.id, g.id); // its Remove's two events are one line in the activity
  const error = h('p.error', { role: 'alert' });
  const run = async (fn, control) => {
    error.textContent = '';
    try { await fn(); await refresh(); return true; } catch (err) { error.textContent = err.message; if (control) control.reset(); return false; }
  };
  const uid = it.id.replace(/[^a-zA-Z0-9]/g, '');
  // Status: the current one, and only the statuses one step back or forward.
  const i = STATUSES.indexOf(it.status);
  const allowed = [STATUSES[i - 1], it.status, STATUSES[i + 1]].filter(Boolean);
  const status = h('select', { id: `st-${uid}`, onchange: () => run(() => post('mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i, status: $s) { id } }',
    { i: it.id, s: status.value }), status) }, allowed.map((s) => h('option', { value: s, selected: s === it.status,
    text: s === it.status ? statusWord(s) : `${STATUSES.indexOf(s) > i ? 'Move on to' : 'Back to'} ${statusWord(s)}` })));
  status.reset = () => { status.value = it.status; };
  const assign = h('select', { id: `as-${uid}`, onchange: () => run(() => post('mutation($i: ID!, $u: ID) { assignListItem(id: $i, userId: $u) { id } }',
    { i: it.id, u: assign.value || null }), assign) },
  h('option', { value: '', text: 'Nobody' }), app.members.filter((m) => m.isActive || (it.assignee && it.assignee.id === m.id))
    .map((m) => h('option', { value: m.id, selected: it.assignee && it.assignee.id === m.id, text: m.displayName })));
  assign.reset = () => { assign.value = it.assignee ? it.assignee.id : ''; };
  // A change made elsewhere redraws the row but keeps an open comment box or gift editor
  // (and whatever is typed in it).
  const comments = prior ? prior.comments : commentsPanel(it, uid);
  // A comment posted or deleted elsewhere: the count follows, and an open box reloads.
  if (comments.setCount(it.commentCount) && comments.open) comments.load();
  const keep = prior && !prior.editor.panel.hidden;
  const editor = keep ? prior.editor : reveal('Edit', () => form({ fields: GIFT_FIELDS(g), submit: 'Save gift', reset: false, cls: 'inline-form',
    onSubmit: async (v) => {
      if (!await run(() => post('mutation($id: ID!, $i: GiftPatch!) { updateGift(id: $id, input: $i) { id } }', { id: g.id, i: giftInput(v) }))) return;
      editor.panel.hidden = true; // saved: close the editor (the row was redrawn around it)
      editor.button.setAttribute('aria-expanded', 'false');
      editor.button.focus();
    } }),
  { 'aria-label': `Edit ${g.name}` });
  const remove = deleteButton(g.name, () => run(async () => {
    await post('mutation($i: ID!) { removeListItem(id: $i) }', { i: it.id });
    // The gift is deleted with it, unless another list still has it (CONFLICT).
    try { await post('mutation($g: ID!) { deleteGift(id: $g) }', { g: g.id }); } catch (err) { if (err.code !== 'CONFLICT') throw err; }
  }));
  remove.textContent = 'Remove';
  remove.setAttribute('aria-label', `Remove ${g.name}`);
  const title = g.url ? h('a', { href: g.url, rel: 'noopener noreferrer', target: '_blank', text: g.name }) : h('span', { text: g.name });
  const el = h('li.item', { 'data-status': it.status, 'aria-label': g.name },
    h('div.item-head', {}, h('b', {}, title), h('span.badge', { text: statusWord(it.status) })),
    h('p.meta', { text: [g.store && `from ${g.store}`, g.price != null && money(g.price, g.currency), it.quantity > 1 && `× ${it.quantity}`,
      it.assignee ? `${it.assignee.displayName} is on it` : 'nobody assigned', it.notes].filter(Boolean).join(' · ') }),
    h('div.controls', {},
      h('div.field', {}, h('label', { for: `st-${uid}`, text: 'Status' }), status),
      h('div.field', {}, h('label', { for: `as-${uid}`, text: 'Assign' }), assign),
      h('div.buttons', {}, comments.toggle, editor.button, remove)),
    error, editor.panel, comments.el);
  return { el, comments, editor };
}

function commentsPanel(it, uid) {
  const list = h('ul.comments');
  const panel = h('div.comments-panel', { id: `cm-${uid}`, hidden: true });
  let count = null;
  // The button's name stays "Comment" (SPEC.md's accessible names); the count beside it is
  // a badge, and the button's description ("3 comments"). True when the count changed.
  const badge = h('span.count', { 'aria-hidden': 'true', hidden: true });
  const setCount = (n) => {
    if (n === count) return false;
    count = n;
    badge.textContent = n ? String(n) : '';
    badge.hidden = !n;
    if (n) toggle.title = n === 1 ? '1 comment' : `${n} comments`;
    else toggle.removeAttribute('title');
    return true;
  };
  const api = { el: panel, open: false, load, setCount };
  const toggle = h('button.secondary', { type: 'button', 'aria-expanded': 'false', 'aria-controls': `cm-${uid}`,
    onclick: () => {
      api.open = panel.hidden;
      panel.hidden = !api.open;
      toggle.setAttribute('aria-expanded', String(api.open));
      if (api.open) { load(); panel.querySelector('textarea').focus(); }
    } }, 'Comment', badge);
  let loads = 0;
  async function load() {
    const mine = ++loads; // answers can arrive out of order: only the newest load draws
    const d = await post(`query($id: ID!) { comments(target: LIST_ITEM, targetId: $id, last: 50) { totalCount edges { node {
      id body createdAt author { displayName } } } } }`, { id: it.id });
    if (mine !== loads) return;
    setCount(d.comments.totalCount);
    const cs = edges(d.comments);
    list.replaceChildren(...(cs.length ? cs.map((c) => h('li', {}, h('span', {}, h('b', { text: c.author ? c.author.displayName : 'A former member' }), `: ${c.body}`),
      h('time', { datetime: c.createdAt, 'data-at': c.createdAt, text: ago(c.createdAt) }))) : [empty('No comments yet')]));
  }
  panel.append(list, form({ fields: [{ name: 'body', label: 'Message', type: 'textarea', required: true }], submit: 'Post', cls: 'inline-form',
    onSubmit: async (v) => { await post('mutation($i: CommentInput!) { addComment(input: $i) { id } }', { i: { target: 'LIST_ITEM', targetId: it.id, body: v.body } }); await load(); } }));
  api.toggle = toggle;
  return api;
}
