// The views: overview, people, occasions, lists (see items.js for one list) and family.
// Each view is { el, refresh(event?), onDashboard? }: forms are built once, the data
// parts are redrawn on every change so typing is never lost.
import { post } from './api.js';
import { h, money, moneyList, day, activityLine, statusWord, setCurrency, reveal, serialized, redraw, busy, sending } from './ui.js';
import { form } from './ui.js';
import { listView, listRow } from './items.js';

const edges = (c) => c.edges.map((e) => e.node);
const go = (hash) => { location.hash = hash; };
const KINDS = [['BIRTHDAY', 'Birthday'], ['HOLIDAY', 'Holiday'], ['ANNIVERSARY', 'Anniversary'], ['OTHER', 'Other']];
const empty = (text) => h('li.empty', { text });
const section = (title, ...children) => h('section.card', { 'aria-label': title }, h('h3', { text: title }), ...children);

// "2 ideas · 1 selected · 0 purchased · 0 received"
export const pipelineWords = (p) => `${p.idea} ${p.idea === 1 ? 'idea' : 'ideas'} · ${p.selected} selected · ${p.purchased} purchased · ${p.received} received`;

// Delete with a second, explicit press (no blocking confirm dialog).
export function deleteButton(label, run) {
  const b = h('button.danger', { type: 'button', text: `Delete ${label}` });
  let armed = false;
  b.addEventListener('click', async () => {
    if (busy(b)) return;
    if (!armed) { armed = true; b.textContent = `Really delete ${label}?`; return; }
    await sending(b, async () => { try { await run(); } catch (err) { b.textContent = err.message; } });
  });
  b.addEventListener('blur', () => { if (armed && !busy(b)) { armed = false; b.textContent = `Delete ${label}`; } });
  return b;
}

// ---- overview ----
function overview(app) {
  const counts = h('div.pipeline', { role: 'group', 'aria-labelledby': 'pipeline-legend' });
  const spent = h('p.money');
  const occasions = h('ul');
  const people = h('ul');
  const ideas = h('ul');
  const activity = h('ul', { id: 'activity' });
  const quick = h('p.quick', {}, h('a', { href: '#/people/new', text: 'Add person' }), h('a', { href: '#/occasions/new', text: 'Add occasion' }),
    h('a', { href: '#/lists/new', text: 'New list' }), app.me.role === 'ADMIN' ? h('a', { href: '#/family/new', text: 'Invite member' }) : '');
  // They count list items: a gift on two lists is two of them.
  const legend = h('p.legend', { id: 'pipeline-legend', text: 'Items on all lists, by status' });
  const el = h('div', {}, h('h2', { text: 'Overview' }), quick, legend, counts, spent,
    h('div.grid', {}, section('Next occasions', occasions),
      section('People', h('p.legend', { text: 'Items on each person\'s lists by status, and what was spent on them.' }), people),
      section('Recent ideas', ideas), section('Activity', activity)));
  return {
    el,
    onDashboard(d) {
      redraw(counts, ...['idea', 'selected', 'purchased', 'received'].map((k) => h('div.stage', {},
        h('span.count', { id: `pipeline-${k}`, text: String(d.pipeline[k]) }),
        h('span', { text: `${d.pipeline[k] === 1 ? 'item' : 'items'} at ${statusWord(k.toUpperCase())}` }))));
      redraw(spent, h('span', { text: 'Spent on upcoming occasions: ' }),
        h('b', { id: 'spent', text: moneyList(d.spentByCurrency, d.spent) }),
        h('span', { text: d.budget == null ? ' (no budget set)' : ' of a budget of ' }),
        d.budget == null ? '' : h('b', { id: 'budget', text: money(d.budget) }));
      redraw(occasions, ...d.nextOccasions.map((o) => {
        const pct = o.budget ? Math.min(100, (Number(o.summary.spent) / Number(o.budget)) * 100) : 0;
        return h('li', {}, h('div.grow', {}, h('a', { href: `#/occasion/${o.id}`, text: o.name }), ' ',
          h('small.nowrap', { text: day(o.date) }),
          o.budget ? h('div.bar', { role: 'img', 'aria-label': `${Math.round(pct)}% of budget spent` }, h('span', { style: `width:${pct}%` })) : ''),
        h('small.nowrap', { text: `${moneyList(o.summary.spentByCurrency, o.summary.spent)} ${o.budget == null ? 'spent (no budget)' : `of ${money(o.budget)}`}` }));
      }));
      if (!d.nextOccasions.length) occasions.append(empty('No upcoming occasions'));
      redraw(people, ...d.people.map((p) => h('li', {},
        h('a', { href: `#/person/${p.person.id}`, text: p.person.name }),
        h('small', { text: `${pipelineWords(p.pipeline)} · spent ${moneyList(p.spentByCurrency, p.spent)}` }))));
      if (!d.people.length) people.append(empty('No people yet'));
      redraw(ideas, ...d.recentIdeas.map((i) => h('li', {}, h('span', { text: i.gift.name }),
        h('a', { href: `#/list/${i.list.id}`, text: i.list.name }))));
      if (!d.recentIdeas.length) ideas.append(empty('No ideas yet'));
      if (!activity.children.length) activity.replaceChildren(...app.activity.map(activityLine));
      if (!app.activity.length && !activity.children.length) activity.append(empty('Nothing yet'));
    },
    onEvent() { const e = activity.querySelector('.empty'); if (e) e.remove(); },
  };
}

// ---- people ----
const PERSON_FIELDS = (p = {}) => [
  { name: 'name', label: 'Name', required: true, value: p.name },
  { name: 'relationship', label: 'Relationship', value: p.relationship },
  { name: 'birthday', label: 'Birthday', type: 'date', value: p.birthday },
  { name: 'interests', label: 'Interests (comma separated)', value: (p.interests || []).join(', ') },
];
const personInput = (v) => ({ name: v.name, relationship: v.relationship || null, birthday: v.birthday || null,
  interests: v.interests ? v.interests.split(',').map((s) => s.trim()).filter(Boolean) : [] });

function people() {
  const list = h('ul.rows');
  const add = form({ title: 'Add a person', fields: PERSON_FIELDS(), submit: 'Add person',
    onSubmit: async (v) => { await post('mutation($i: PersonInput!) { createPerson(input: $i) { id } }', { i: personInput(v) }); await refresh(); },
    done: (v) => `Added ${v.name}.` });
  const refresh = serialized(async () => {
    const d = await post('{ persons(first: 100) { edges { node { id name relationship birthday interests } } } }');
    const rows = edges(d.persons).map((p) => h('li', {}, h('a', { href: `#/person/${p.id}`, text: p.name }),
      h('small', { text: [p.relationship, p.birthday && `born ${day(p.birthday)}`, p.interests.join(', ')].filter(Boolean).join(' · ') })));
    redraw(list, ...(rows.length ? rows : [empty('Nobody yet: add the people you give gifts to.')]));
  });
  return { el: h('div', {}, h('h2', { text: 'People' }), h('div.split', {}, section('Everyone', list), add)), refresh };
}

function person(app, id) {
  const head = h('h2', { text: 'Person' });
  const about = h('p.about');
  const history = h('ul.rows');
  const lists = h('ul.rows');
  const start = h('a', { href: `#/lists/new?person=${encodeURIComponent(id)}`, text: 'Start a list' });
  const slot = h('div');
  let built = false;
  const refresh = serialized(async () => {
    const d = await post(`query($id: ID!) { node(id: $id) { ... on Person { id name relationship birthday interests notes
      giftHistory(first: 50) { edges { node { id status gift { name price currency store } list { id name occasion { name date } } } } } } }
      lists(personId: $id, first: 100) { edges { node { id name kind occasion { name } items { totalCount } } } } }`, { id });
    const p = d.node;
    if (!p) throw Object.assign(new Error('gone'), { code: 'NOT_FOUND' });
    head.textContent = p.name;
    // What the Edit form holds, readable at a glance (the form is for changing it).
    about.textContent = [p.relationship, p.birthday && `born ${day(p.birthday)}`,
      p.interests.length && `likes ${p.interests.join(', ')}`, p.notes].filter(Boolean).join(' · ');
    about.hidden = !about.textContent;
    const items = edges(p.giftHistory).map((i) => h('li', {}, h('span', {}, h('b', { text: i.gift.name }),
      ` · ${statusWord(i.status)}`, i.gift.store ? ` · ${i.gift.store}` : ''),
      h('small', { text: `${i.list.occasion ? `${i.list.occasion.name} ${day(i.list.occasion.date)} · ` : ''}${money(i.gift.price, i.gift.currency)}` })));
    redraw(history, ...(items.length ? items : [empty('Nothing purchased or received yet')]));
    const ls = edges(d.lists).map(listRow);
    redraw(lists, ...(ls.length ? ls : [empty('No lists for them yet')]));
    start.textContent = `Start a list for ${p.name}`;
    if (!built) {
      built = true;
      slot.replaceChildren(form({ title: 'Edit', fields: PERSON_FIELDS(p), submit: 'Save person', reset: false,
        onSubmit: (v) => post('mutation($id: ID!, $i: PersonPatch!) { updatePerson(id: $id, input: $i) { id } }', { id, i: personInput(v) }),
        extra: deleteButton(p.name, async () => { await post('mutation($id: ID!) { deletePerson(id: $id) }', { id }); go('#/people'); }) }));
    }
  });
  return { el: h('div', {}, h('p.crumbs', {}, h('a', { href: '#/people', text: 'People' })), head, about,
    h('div.grid', {}, section('Gift history', history), section('Lists', lists, h('p.quick', {}, start)), slot)), refresh };
}

// ---- occasions ----
const OCCASION_FIELDS = (o = {}) => [
  { name: 'name', label: 'Name', required: true, value: o.name },
  { name: 'kind', label: 'Kind', type: 'select', options: KINDS, value: o.kind },
  { name: 'date', label: 'Date', type: 'date', required: true, value: o.date },
  { name: 'budget', label: 'Budget', inputmode: 'decimal', value: o.budget },
];
const occasionInput = (v) => ({ name: v.name, kind: v.kind, date: v.date, budget: v.budget || null });

function occasions() {
  const list = h('ul.rows');
  const add = form({ title: 'Add an occasion', fields: OCCASION_FIELDS(), submit: 'Add occasion',
    onSubmit: async (v) => { await post('mutation($i: OccasionInput!) { createOccasion(input: $i) { id } }', { i: occasionInput(v) }); await refresh(); },
    done: (v) => `Added ${v.name}.` });
  const refresh = serialized(async () => {
    const d = await post('{ occasions(first: 100) { edges { node { id name kind date budget } } } }');
    const rows = edges(d.occasions).map((o) => h('li', {}, h('a', { href: `#/occasion/${o.id}`, text: o.name }),
      h('small.nowrap', { text: `${day(o.date)}${o.budget ? ` · budget ${money(o.budget)}` : ''}` })));
    redraw(list, ...(rows.length ? rows : [empty('No occasions yet')]));
  });
  return { el: h('div', {}, h('h2', { text: 'Occasions' }), h('div.split', {}, section('All occasions', list), add)), refresh };
}

function occasion(app, id) {
  const head = h('h2', { text: 'Occasion' });
  const summary = h('div');
  const lists = h('ul.rows');
  const slot = h('div');
  let built = false;
  const refresh = serialized(async () => {
    const spent = 'spentByCurrency { amount currency }';
    const d = await post(`query($id: ID!) { node(id: $id) { ... on Occasion { id name kind date budget description
      summary { budget spent ${spent} people { person { id name } pipeline { idea selected purchased received } spent ${spent} } } } }
      lists(occasionId: $id, first: 100) { edges { node { id name kind person { name } items { totalCount } } } } }`, { id });
    const o = d.node;
    if (!o) throw Object.assign(new Error('gone'), { code: 'NOT_FOUND' });
    head.textContent = `${o.name} · ${day(o.date)}`;
    const s = o.summary;
    summary.replaceChildren(h('p.money', {}, 'Spent on this occasion: ', h('b', { text: moneyList(s.spentByCurrency, s.spent) }),
      s.budget == null ? ' (no budget set)' : ` of a budget of ${money(s.budget)}`),
    h('ul.rows', {}, ...(s.people.length ? s.people.map((p) => h('li', {}, h('a', { href: `#/person/${p.person.id}`, text: p.person.name }),
      h('small', { text: `${pipelineWords(p.pipeline)} · spent ${moneyList(p.spentByCurrency, p.spent)}` })))
      : [empty('No lists for a person yet')])));
    const ls = edges(d.lists).map(listRow);
    redraw(lists, ...(ls.length ? ls : [empty('No lists for this occasion yet')]));
    if (!built) {
      built = true;
      slot.replaceChildren(form({ title: 'Edit', fields: OCCASION_FIELDS(o), submit: 'Save occasion', reset: false,
        onSubmit: (v) => post('mutation($id: ID!, $i: OccasionPatch!) { updateOccasion(id: $id, input: $i) { id } }', { id, i: occasionInput(v) }),
        extra: deleteButton(o.name, async () => { await post('mutation($id: ID!) { deleteOccasion(id: $id) }', { id }); go('#/occasions'); }) }));
    }
  });
  return { el: h('div', {}, h('p.crumbs', {}, h('a', { href: '#/occasions', text: 'Occasions' })), head,
    h('div.grid', {}, section('Summary', summary), section('Lists', lists), slot)), refresh };
}

// ---- family ----
function family(app) {
  const list = h('ul.rows');
  const admin = app.me.role === 'ADMIN';
  // registerUser: the member's account is made now, with a password the admin chooses, and
  // no email is sent; "Invite member" is a fixed name (SPEC.md), so the hints say so.
  const invite = admin ? form({ title: 'Invite a member', submit: 'Invite member', fields: [
    { name: 'displayName', label: 'Name', required: true },
    { name: 'email', label: 'Email', type: 'email', required: true, hint: 'They log in with it. No email is sent to it.' },
    { name: 'password', label: 'Password', type: 'password', required: true, minLength: 8, autocomplete: 'new-password', hint: 'You set their first password (at least 8 characters) and tell it to them; they can change it later (Family, Change your password).' },
    { name: 'role', label: 'Role', type: 'select', options: [['MEMBER', 'Member'], ['ADMIN', 'Admin']] }],
  onSubmit: async (v) => { await post('mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }', { i: v }); await refresh(); },
  done: (v) => `Invited ${v.displayName}: tell them their email and first password.` })
    : h('p', { text: 'Ask an admin of your family to invite new members.' });
  // Family name and currency (updateFamily, ADMIN).
  const settings = admin ? reveal('Family settings', () => form({ title: 'Family settings', submit: 'Save family', reset: false,
    fields: [{ name: 'name', label: 'Family name', required: true, value: app.me.family.name },
      { name: 'currency', label: 'Currency (3 letters, e.g. EUR)', required: true, value: app.me.family.currency }],
    onSubmit: async (v) => {
      const d = await post('mutation($n: String!, $c: String!) { updateFamily(input: {name: $n, currency: $c}) { name currency } }',
        { n: v.name, c: v.currency.toUpperCase() });
      Object.assign(app.me.family, d.updateFamily);
      setCurrency(d.updateFamily.currency);
    } })) : null;

  // Your own password (updateUser with currentPassword): it ends every session, this one too.
  const password = reveal('Change your password', () => form({ title: 'Change your password', submit: 'Change password',
    fields: [{ name: 'currentPassword', label: 'Current password', type: 'password', required: true, autocomplete: 'current-password' },
      { name: 'password', label: 'New password', type: 'password', required: true, minLength: 8, autocomplete: 'new-password', hint: 'At least 8 characters. You log in again with it, here and on your other devices.' }],
    onSubmit: async (v) => {
      await post('mutation($id: ID!, $i: UpdateUserInput!) { updateUser(id: $id, input: $i) { id } }',
        { id: app.me.id, i: { password: v.password, currentPassword: v.currentPassword } });
      app.logout('Your password was changed: log in with the new one.');
    } }));

  const refresh = serialized(async () => {
    const d = await post('{ users(first: 100) { edges { node { id displayName email role isActive } } } }');
    app.members = edges(d.users);
    redraw(list, ...app.members.map((u) => h('li', {}, h('span', { text: u.displayName }),
      h('small', { text: `${u.email} · ${u.role === 'ADMIN' ? 'admin' : 'member'}${u.isActive ? '' : ' · inactive'}` }))));
  });
  return { el: h('div', {}, h('h2', { text: `Family: ${app.me.family.name}` }), h('div.split', {}, section('Members', list), h('div.stack', {}, invite, settings ? h('div.card', {}, settings.button, settings.panel) : '',
    h('div.card', {}, password.button, password.panel)))), refresh };
}

export const VIEWS = { '': overview, people, person, occasions, occasion, lists: listView, list: listView, family };
