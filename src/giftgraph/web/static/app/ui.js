// DOM helpers, forms with visible labels and per-field errors, and words for people:
// money, dates, times and activity lines.

// h('tag.class', {attrs}, ...children): an element; strings become text (never HTML).
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name);
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    // Through the CSSOM: a `style` attribute is inline style, which the page's CSP refuses.
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

export const $ = (id) => document.getElementById(id);
// A view's refresh (fetch, then redraw), one at a time: a call while one runs gets one
// more run after it, shared by every call made meanwhile. Two overlapping refreshes could
// otherwise finish out of order, and the older answer be drawn last.
export function serialized(refresh) {
  let running = null;
  let again = null;
  const run = (...args) => {
    if (running) {
      again = again || running.catch(() => {}).then(() => { again = null; return run(...args); });
      return again;
    }
    running = refresh(...args).finally(() => { running = null; });
    return running;
  };
  return run;
}

export const STATUSES = ['IDEA', 'SELECTED', 'PURCHASED', 'RECEIVED'];
export const statusWord = (s) => ({ IDEA: 'Idea', SELECTED: 'Selected', PURCHASED: 'Purchased', RECEIVED: 'Received' }[s] || s);

let familyCurrency = null;
export function setCurrency(c) { familyCurrency = c || null; }

export function money(v, currency = familyCurrency) {
  if (v === null || v === undefined) return '—';
  const n = Number(v);
  if (!currency) return n.toFixed(2);
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(n);
  } catch {
    return `${n.toFixed(2)} ${currency}`;
  }
}

// [{amount, currency}] when the server splits sums by currency, else one amount.
export function moneyList(parts, fallback) {
  if (parts && parts.length) return parts.map((m) => money(m.amount, m.currency)).join(', ');
  return money(fallback);
}

export function day(iso) {
  if (!iso) return '';
  const d = new Date(`${iso}T00:00:00`);
  return d.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
}

export function ago(iso, now = Date.now()) {
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const hrs = Math.round(m / 60);
  if (hrs < 24) return `${hrs} h ago`;
  return new Date(iso).toLocaleDateString(undefined, { day: 'numeric', month: 'short' });
}

const TYPE_WORD = { ListItem: 'a gift from a list', Person: 'a person', Occasion: 'an occasion', GiftList: 'a list',
  Gift: 'a gift', Comment: 'a comment', User: 'a member', Family: 'the family' };

const ADDED_WORD = { Person: '', Occasion: 'the occasion ', GiftList: 'the list ', Gift: 'the gift ' };

// "Ann moved Scarf to Purchased", from an Event with its node.
export function describe(e) {
  const who = e.actor ? e.actor.displayName : (e.entityType === 'User' && e.node ? e.node.displayName : 'Someone');
  const n = e.node || {};
  const what = n.gift ? n.gift.name : (n.name || n.displayName || TYPE_WORD[e.entityType] || 'something');
  switch (e.kind) {
    case 'STATUS_CHANGED': return `${who} moved ${what} to ${statusWord(n.status)}`;
    case 'ASSIGNED':
      if (!n.assignee) return `${who} unassigned ${what}`;
      if (e.actor && e.actor.id === n.assignee.id) return `${who} took on ${what}`;
      return `${who} assigned ${what} to ${n.assignee.displayName}`;
    case 'COMMENT_ADDED': return `${who} commented: “${short(n.body)}”`;
    case 'ADDED':
      if (e.entityType === 'User' && !e.actor) return `${what} joined`;
      if (e.entityType === 'User') return `${who} added ${what} to the family`;
      if (e.entityType === 'Comment') return `${who} commented: “${short(n.body)}”`;
      if (e.entityType === 'ListItem') return `${who} put ${what} on ${n.list ? n.list.name : 'a list'}`;
      return `${who} added ${ADDED_WORD[e.entityType] || ''}${what}`;
    case 'UPDATED': return `${who} edited ${what}`;
    case 'DELETED': return `${who} removed ${TYPE_WORD[e.entityType] || 'something'}`;
    default: return `${who} changed ${what}`;
  }
}

const short = (s) => { const t = String(s || ''); return t.length > 60 ? `${t.slice(0, 57)}…` : t; };

// A gift added to a list as a new gift is two events, one right after the other: the
// gift's ADDED, then its item's. Other clients (subscriptions, `since`, live queries of
// gifts) need both; the app shows the pair as one line, the item's ("Ann put Scarf on …").
export function sameAddition(gift, item) {
  return gift.kind === 'ADDED' && gift.entityType === 'Gift' && item.kind === 'ADDED' && item.entityType === 'ListItem'
    && Boolean(item.node && item.node.gift) && item.node.gift.id === gift.entityId
    && (gift.actor ? gift.actor.id : null) === (item.actor ? item.actor.id : null);
}

// Which gift each list item is, as far as the page has seen (the items it drew, the
// events with their node). A DELETED event has no node: this is how a removed item's
// line and its gift's delete are known to be one change.
const giftOfItem = new Map();
export function noteItem(itemId, giftId) {
  if (itemId && giftId) giftOfItem.set(itemId, giftId);
}
export function noteEvents(events) {
  for (const e of events) if (e.entityType === 'ListItem' && e.node && e.node.gift) noteItem(e.entityId, e.node.gift.id);
}

const actorOf = (e) => (e.actor ? e.actor.id : null);

// The app's Remove takes an item off its list, then deletes its gift (on no other list):
// two changes, each with its event (and one per comment deleted with the gift, between
// them). The app shows the pair as one line, the item's ("Ann removed a gift from a
// list"), as it does a gift added with its item; only where it knows the item's gift.
// `older`: the events before the gift's, newest first. The item's removal, or null.
export function removalOf(gift, older) {
  if (gift.kind !== 'DELETED' || gift.entityType !== 'Gift') return null;
  for (const e of older) {
    if (actorOf(e) !== actorOf(gift) || e.kind !== 'DELETED') return null;
    if (e.entityType === 'ListItem') return giftOfItem.get(e.entityId) === gift.entityId ? e : null;
    if (e.entityType !== 'Comment') return null;
  }
  return null;
}

// Events, newest first, without the gift lines that their item's line says already.
export function oneLinePerChange(events) {
  noteEvents(events);
  return events.filter((e, i) => !(i > 0 && sameAddition(e, events[i - 1])) && !removalOf(e, events.slice(i + 1)));
}

export function activityLine(e) {
  return h('li', { 'data-seq': e.seq }, h('span', { text: describe(e) }),
    h('time', { datetime: e.at, 'data-at': e.at, title: new Date(e.at).toLocaleString(), text: ago(e.at) }));
}

// A node taken out of the document loses the focus inside it: a row redrawn around a kept
// comment box or gift editor while someone types in it (on a phone, the keyboard closes,
// and what is typed next goes nowhere), a list of links rebuilt by a live refresh. The
// focus and the caret go back where they were; a control redrawn anew hands the focus to
// its successor: the element of the same id (a row's Status or Assign), or within
// `scope`, the link to the same place with the same words.
export function keepingFocus(change, scope = null) {
  const had = document.activeElement;
  let caret = null;
  try { caret = had && had.setSelectionRange ? [had.selectionStart, had.selectionEnd] : null; } catch { caret = null; }
  change();
  if (!had || had === document.activeElement || had === document.body) return;
  const now = had.isConnected ? had : successor(had, scope);
  if (!now) return;
  now.focus({ preventScroll: true });
  try { if (now === had && caret && caret[0] !== null) had.setSelectionRange(caret[0], caret[1]); } catch { /* not a text field */ }
}

function successor(el, scope) {
  if (el.id) return document.getElementById(el.id);
  const href = el.getAttribute('href');
  if (!href || !scope) return null;
  return [...scope.querySelectorAll('a[href]')].find((a) => a.getAttribute('href') === href && a.textContent === el.textContent) || null;
}

// `container`'s children replaced (a live refresh's redraw), the focus kept (keepingFocus).
export function redraw(container, ...children) {
  keepingFocus(() => container.replaceChildren(...children), container);
}

let uid = 0;
// A form: fields [{name, label, type, required, minLength, options:[[value, text]], value,
// hint}], `submit` names its button; onSubmit(values) may throw an ApiError whose `fields`
// are shown under their inputs (matched on the last part of the key). `done(values)`: what
// to say once it went through (a new row may be out of sight on a phone).
export function form({ title, fields, submit, onSubmit, cls = 'card-form', reset = true, extra, done }) {
  const id = `f${++uid}`;
  const errors = {};
  const general = h('p.error', { role: 'alert', id: `${id}-err` });
  const said = h('p.done', { role: 'status' });
  const inputs = {};
  const rows = fields.map((f) => {
    const fid = `${id}-${f.name}`;
    const err = h('span.field-error', { id: `${fid}-err` });
    errors[f.name] = err;
    const attrs = { id: fid, name: f.name, required: f.required, autocomplete: f.autocomplete || 'off',
      'aria-describedby': `${fid}-err`, type: f.type && f.type !== 'select' && f.type !== 'textarea' ? f.type : null,
      inputmode: f.inputmode, step: f.step, min: f.min };
    let input;
    if (f.type === 'select') {
      input = h('select', attrs, f.options.map(([v, t]) => h('option', { value: v, text: t })));
    } else if (f.type === 'textarea') {
      input = h('textarea', { ...attrs, rows: 2 });
    } else {
      input = h('input', attrs);
    }
    if (f.value !== undefined && f.value !== null) input.value = f.value;
    // A field's error goes once it is edited: "Name is required" under a filled-in name misleads.
    input.addEventListener('input', () => { err.textContent = ''; input.removeAttribute('aria-invalid'); });
    inputs[f.name] = input;
    const hint = f.hint ? h('small', { id: `${fid}-hint`, text: f.hint }) : null;
    if (hint) input.setAttribute('aria-describedby', `${fid}-err ${fid}-hint`);
    return h(`div.field${f.cls ? `.${f.cls}` : ''}`, {}, h('label', { for: fid, text: f.label }), input, err, hint);
  });
  const button = h('button', { type: 'submit', text: submit });
  const el = h(`form.${cls}`, { novalidate: true, 'aria-labelledby': title ? `${id}-title` : null },
    title ? h('h3', { id: `${id}-title`, text: title }) : null, ...rows, h('div.row', {}, button, extra), general, said);
  el.addEventListener('input', () => { said.textContent = ''; });
  el.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (busy(button)) return; // still sending the last press
    general.textContent = '';
    said.textContent = '';
    for (const [name, e] of Object.entries(errors)) { e.textContent = ''; inputs[name].removeAttribute('aria-invalid'); }
    const values = {};
    let missing = false;
    for (const f of fields) {
      values[f.name] = inputs[f.name].value.trim();
      if (f.inputmode === 'decimal' && values[f.name]) {
        const typed = amount(values[f.name]);
        if (typed === null) {
          errors[f.name].textContent = `${f.label}: an amount such as 19.99`;
          inputs[f.name].setAttribute('aria-invalid', 'true');
          missing = true;
          continue;
        }
        values[f.name] = typed;
      }
      // A link typed without its scheme (www.shop.example/scarf) is an https one.
      if (f.type === 'url' && values[f.name] && !/^[a-z][a-z0-9+.-]*:/i.test(values[f.name])) {
        values[f.name] = `https://${values[f.name]}`;
      }
      if (f.required && !values[f.name] && !inputs[f.name].closest('[hidden]')) {
        errors[f.name].textContent = `${f.label} is required`;
        inputs[f.name].setAttribute('aria-invalid', 'true');
        missing = true;
      } else if (f.minLength && values[f.name] && inputs[f.name].value.length < f.minLength) {
        errors[f.name].textContent = `${f.label} needs at least ${f.minLength} characters`;
        inputs[f.name].setAttribute('aria-invalid', 'true');
        missing = true;
      }
    }
    if (missing) { el.querySelector('[aria-invalid]').focus(); return; }
    await sending(button, async () => {
      try {
        await onSubmit(values);
        if (reset) el.reset();
        if (done) said.textContent = done(values);
      } catch (err) {
        showErrors(err, errors, inputs, general);
      }
    });
  });
  el.inputs = inputs;
  el.errors = errors;
  el.general = general;
  return el;
}

// work() with `button` busy: marked aria-disabled, and a press meanwhile does nothing
// (`busy`). Not `disabled`: a disabled button loses the focus to the page, and a keyboard
// or screen reader user who pressed it would be sent to its top.
export async function sending(button, work) {
  button.setAttribute('aria-disabled', 'true');
  try {
    await work();
  } finally {
    button.removeAttribute('aria-disabled');
  }
}

export const busy = (button) => button.getAttribute('aria-disabled') === 'true';

// An amount as people type it, as the API takes it ("19.99"), or null: a currency sign or
// ISO 4217 code (capitals) before or after it goes ("$150", "150 €", "EUR 150"), and so do
// spaces (also between thousands: "1 000"); a decimal comma is a decimal point ("12,50");
// commas between thousands go ("1,000.50"), and so do points ("1.000", "1.000,50": an
// amount has at most two decimals). Anything else ("150k", "−150", "(150)") is no amount:
// never guessed at.
export function amount(text) {
  const t = text.replace(/[\s\u00a0\u202f'’]/g, '').replace(/^(\p{Sc}|[A-Z]{3})|(\p{Sc}|[A-Z]{3})$/gu, '');
  let n = null;
  if (/^\d{1,3}(,\d{3})+(\.\d{1,2})?$/.test(t)) n = t.replace(/,/g, '');
  else if (/^\d{1,3}(\.\d{3})+(,\d{1,2})?$/.test(t)) n = t.replace(/\./g, '').replace(',', '.');
  else if (/^\d+(,\d{1,2})?$/.test(t)) n = t.replace(',', '.');
  else if (/^\d+\.\d{1,2}$/.test(t)) n = t;
  return n;
}

export function showErrors(err, errors, inputs, general) {
  let placed = false;
  for (const [key, msg] of Object.entries(err.fields || {})) {
    const name = key.split('.').pop();
    if (errors[name]) {
      errors[name].textContent = msg;
      inputs[name].setAttribute('aria-invalid', 'true');
      placed = true;
    } else {
      general.textContent += `${key}: ${msg}. `;
    }
  }
  if (err.code === 'RATE_LIMITED' && err.retryAfter) {
    general.textContent = `Too many attempts; try again in ${err.retryAfter} s.`;
  } else if (!placed && !general.textContent) {
    general.textContent = err.message;
  }
  const bad = Object.values(inputs).find((i) => i.getAttribute('aria-invalid'));
  if (bad) bad.focus();
}

// A button that shows and hides a panel, whose content is built on first opening (so a
// closed editor adds no fields to the page). build() may be async.
export function reveal(text, build, attrs = {}) {
  const panel = h('div.editor', { hidden: true, id: `r${++uid}` });
  const button = h('button.secondary', { type: 'button', 'aria-expanded': 'false', 'aria-controls': panel.id, text, ...attrs });
  let built = false;
  button.addEventListener('click', async () => {
    if (!built) { built = true; panel.replaceChildren(await build()); }
    panel.hidden = !panel.hidden;
    button.setAttribute('aria-expanded', String(!panel.hidden));
    if (!panel.hidden) { const first = panel.querySelector('input, select, textarea'); if (first) first.focus(); }
  });
  return { button, panel };
}
