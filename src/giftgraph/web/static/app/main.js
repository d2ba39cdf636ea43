// The family app: log in or sign up, then views by hash route (#/, #/people, #/person/ID,
// #/occasions, #/occasion/ID, #/lists, #/list/ID, #/family), all kept live by a
// `dashboard` subscription (the overview), `familyEvents` (activity; every change
// refreshes the open view), resumed with `since` after a drop so nothing is missed, and a
// live query of the family and its members (names, currency, who can be assigned).
import { post, saveTokens, clearTokens, deviceToken, loggedIn, connect, onSessionEnded, ApiError } from './api.js';
import { $, h, activityLine, ago, noteEvents, noteItem, oneLinePerChange, removalOf, sameAddition, setCurrency,
  busy, sending, showErrors } from './ui.js';
import { VIEWS } from './views.js';

const NODE = `node { id ... on ListItem { status gift { id name } list { name } assignee { id displayName } }
  ... on Person { name } ... on Occasion { name } ... on GiftList { name } ... on Gift { name }
  ... on Comment { body targetId } ... on User { displayName } }`;
const EVENT = `seq kind entityType entityId at actor { id displayName } ${NODE}`;

const app = { me: null, members: [], dashboard: null, activity: [], view: null, logout: (m) => logout(m) };
let client = null;
let stops = [];
let lastSeq = null;
let refreshTimer = null;
let generation = 0;
let subscribed = 0; // which subscribe() the live sinks belong to
let retryTimer = null;
let retryDelay = 1000;

function setStatus(state) {
  $('status').dataset.state = state;
  $('status').textContent = state;
}

// ---- live ----
function onEvent(e) {
  if (lastSeq !== null && BigInt(e.seq) <= BigInt(lastSeq)) return; // already shown
  lastSeq = e.seq;
  noteEvents([e]);
  const list = $('activity');
  if (!removalOf(e, app.activity)) { // a removed item's gift: the item's line says it
    if (app.activity.length && sameAddition(app.activity[0], e)) { // its gift's line: one line
      const gift = app.activity.shift();
      const line = list && list.querySelector(`li[data-seq="${gift.seq}"]`);
      if (line) line.remove();
    }
    app.activity.unshift(e);
    app.activity.length = Math.min(app.activity.length, 30);
    if (list) {
      list.prepend(activityLine(e));
      list.firstElementChild.classList.add('fresh');
      while (list.children.length > 30) list.lastElementChild.remove();
    }
  }
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => refreshView(e), 60);
  if (app.view && app.view.onEvent) app.view.onEvent(e);
}

function onDashboard(d) {
  app.dashboard = d;
  for (const it of d.recentIdeas) noteItem(it.id, it.gift.id);
  if (lastSeq === null) {
    // The snapshot's newest event anchors `since`, so a drop before any live event
    // still resumes without a gap.
    app.activity = oneLinePerChange(d.activity);
    if (d.activity.length) lastSeq = d.activity[0].seq;
    const list = $('activity'); // shown already (a refetch): the snapshot's activity replaces it
    if (list) list.replaceChildren(...app.activity.map(activityLine));
  }
  if (app.view && app.view.onDashboard) app.view.onDashboard(d);
}

// The live query's result: the family and its members as they are now (a member another
// admin added, a rename or a new currency included). Views read them when they draw (the
// member's or family's event redraws the open view; this must not take that event's place).
function onFamily(d) {
  if (!app.me) return;
  app.members = d.users.edges.map((e) => e.node);
  app.me.family = d.family;
  setCurrency(d.family.currency);
  $('family').textContent = `${d.family.name} · ${app.me.displayName}`;
}

const FAMILY = `subscription { live { family { name currency }
  users(first: 100) { edges { node { id displayName email role isActive } } } } }`;

// A subscription the server ended (an error in its stream, a feed that failed) while the
// page still wants it: subscribe again, from the last seq, after a pause that grows while
// it keeps ending (1 s, doubling to 30 s; any data resets it).
function resubscribeSoon(current) {
  if (current !== subscribed || retryTimer || !client) return;
  const gen = generation;
  retryTimer = setTimeout(() => {
    retryTimer = null;
    if (current === subscribed && gen === generation && client) subscribe();
  }, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 30000);
}

function subscribe() {
  const current = ++subscribed; // before the old ones stop: their `complete` is ours
  for (const stop of stops) stop();
  const spent = 'spentByCurrency { amount currency }';
  const dashboard = `subscription { dashboard {
    pipeline { idea selected purchased received } budget spent ${spent}
    nextOccasions { id name date budget summary { spent ${spent} } }
    people { person { id name } pipeline { idea selected purchased received } spent ${spent} }
    recentIdeas { id gift { id name } list { id name } }
    activity { ${EVENT} } } }`;
  const ended = () => resubscribeSoon(current);
  const sink = (fn, name) => ({
    next: (r) => { if (r.data) { retryDelay = 1000; fn(r.data[name]); } },
    error: (err) => { console.warn(name, err); ended(); }, complete: ended });
  const since = lastSeq;
  // A `since` the server will not replay (too far back, or no event of this log): take a
  // fresh snapshot (it anchors the feed again) and follow the events from now on.
  const refused = (errors) => since !== null && (errors || []).some(
    (e) => e.extensions && e.extensions.fields && e.extensions.fields.since);
  const events = {
    next: (r) => {
      if (refused(r.errors)) refetch();
      else if (r.data) { retryDelay = 1000; onEvent(r.data.familyEvents); }
    },
    error: (err) => {
      if (refused(Array.isArray(err) ? err : [])) refetch();
      else { console.warn('familyEvents', err); ended(); }
    },
    complete: ended,
  };
  stops = [
    client.subscribe({ query: dashboard }, sink(onDashboard, 'dashboard')),
    client.subscribe({ query: `subscription($since: String) { familyEvents(since: $since) { ${EVENT} } }`,
      variables: { since } }, events),
    client.subscribe({ query: FAMILY }, sink(onFamily, 'live')),
  ];
}

function refetch() {
  lastSeq = null;
  subscribe();
}

async function loadMembers() {
  const d = await post('{ users(first: 100) { edges { node { id displayName email role isActive } } } }');
  app.members = d.users.edges.map((e) => e.node);
}

// ---- session ----
async function start() {
  const me = await post('{ me { id displayName role family { name currency } } }');
  app.me = me.me;
  setCurrency(app.me.family.currency);
  await loadMembers();
  $('family').textContent = `${app.me.family.name} · ${app.me.displayName}`;
  authSection.remove(); // out of the document, so its fields never clash with a view's
  $('page').hidden = false;
  $('nav').hidden = false;
  $('logout').hidden = false;
  $('status').hidden = false; // the connection's state, once there is one to show
  setStatus('connecting');
  const gen = ++generation;
  client = connect((state, again) => {
    if (gen !== generation) return; // a disposed client's last words
    if (state === 'revoked') { logout('Your access was revoked; please log in again.'); return; }
    setStatus(state);
    if (state === 'live' && again) subscribe(); // replay from the last seq, then live
  });
  subscribe();
  route();
}

function logout(message) {
  const c = client;
  client = null;
  generation += 1;
  subscribed += 1; // the stopped sinks' `complete` resubscribes nothing
  clearTimeout(retryTimer);
  retryTimer = null;
  for (const stop of stops) stop();
  stops = [];
  if (c) c.dispose();
  clearTokens();
  Object.assign(app, { me: null, members: [], dashboard: null, activity: [], view: null });
  lastSeq = null;
  setCurrency(null);
  $('page').replaceChildren();
  $('page').hidden = true;
  $('nav').hidden = true;
  if (!authSection.isConnected) $('view').prepend(authSection);
  $('logout').hidden = true;
  $('status').hidden = true;
  $('family').textContent = '';
  setMode(false);
  loginForm.reset();
  clearAuthErrors();
  authError.textContent = message || '';
  setStatus('offline');
  if (location.hash) history.replaceState(null, '', location.pathname);
  authInputs.email.focus();
}

// ---- routing ----
// Redraw the open view after a change; one deleted elsewhere says so instead.
async function refreshView(e) {
  const view = app.view;
  if (!view || !view.refresh) return;
  try {
    await view.refresh(e);
  } catch (err) {
    if (view !== app.view || view.el.querySelector('.gone')) return;
    view.el.append(h('p.error.gone', { role: 'alert', text: err.code === 'NOT_FOUND' ? 'This was deleted or does not exist.' : err.message }));
  }
}

async function route() {
  if (!app.me) return;
  // #/name/id, optionally ?key=value (a person chosen in a new list's form).
  const [path, query = ''] = location.hash.replace(/^#\/?/, '/').split('?');
  const [, name = '', id] = (path || '/').split('/');
  const make = VIEWS[name] || VIEWS[''];
  for (const a of document.querySelectorAll('#nav a')) {
    const section = { person: 'people', occasion: 'occasions', list: 'lists' }[name] || name;
    if (a.getAttribute('href').slice(2) === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = make(app, id ? decodeURIComponent(id) : null, new URLSearchParams(query));
  app.view = view;
  $('page').replaceChildren(view.el);
  document.title = `${view.el.querySelector('h2').textContent} — GiftGraph`;
  try {
    if (view.refresh) await view.refresh();
    if (view !== app.view) return; // left while it loaded: the view shown now is another's
    if (view.onDashboard && app.dashboard) view.onDashboard(app.dashboard);
    document.title = `${view.el.querySelector('h2').textContent} — GiftGraph`;
  } catch (err) {
    if (err.code === 'UNAUTHENTICATED' || view !== app.view) return; // logged out already (onSessionEnded)
    view.el.append(h('p.error.gone', { role: 'alert', text: err.code === 'NOT_FOUND' ? 'This was deleted or does not exist.' : err.message }));
  }
  const first = id === 'new' && view.el.querySelector('form input, form select');
  if (first) { first.focus(); return; } // from a quick "Add …" link
  const heading = view.el.querySelector('h2');
  if (heading && document.activeElement && document.activeElement.closest('#nav')) {
    heading.tabIndex = -1;
    heading.focus();
  }
}
window.addEventListener('hashchange', route);
setInterval(() => {
  for (const t of document.querySelectorAll('time[data-at]')) t.textContent = ago(t.dataset.at);
}, 30000);

// ---- the log in / sign up form ----
// Looked up once: the section is out of the document while someone is logged in.
const authSection = $('auth');
const [loginForm, loginButton, authTitle, switchText, toggleButton, authError, currencyField] = [
  'login-form', 'login', 'auth-title', 'switch-text', 'toggle-signup', 'auth-error', 'currency-field'].map($);
const AUTH_FIELDS = { familyName: 'family-name', displayName: 'display-name', email: 'email', password: 'password', currency: 'currency' };
const authInputs = Object.fromEntries(Object.entries(AUTH_FIELDS).map(([k, id]) => [k, $(id)]));
const authErrors = Object.fromEntries(Object.entries(AUTH_FIELDS).map(([k, id]) => [k, $(`${id}-err`)]));
const signingUp = () => loginForm.classList.contains('signup');
for (const k of Object.keys(AUTH_FIELDS)) {
  authInputs[k].addEventListener('input', () => { authErrors[k].textContent = ''; authInputs[k].removeAttribute('aria-invalid'); });
}

function clearAuthErrors() {
  authError.textContent = '';
  for (const k of Object.keys(AUTH_FIELDS)) { authErrors[k].textContent = ''; authInputs[k].removeAttribute('aria-invalid'); }
}

function setMode(signup) {
  loginForm.classList.toggle('signup', signup);
  authTitle.textContent = signup ? 'Sign up' : 'Log in';
  loginButton.textContent = signup ? 'Sign up' : 'Log in';
  switchText.textContent = signup ? 'Have an account?' : 'New family?';
  toggleButton.textContent = signup ? 'Log in' : 'Sign up';
  authInputs.password.autocomplete = signup ? 'new-password' : 'current-password';
  for (const el of document.querySelectorAll('#login-form .signup-only input')) el.required = signup;
  document.title = signup ? 'Sign up — GiftGraph' : 'GiftGraph — our family\'s gifts';
  clearAuthErrors();
}

toggleButton.addEventListener('click', () => { setMode(!signingUp()); (signingUp() ? authInputs.familyName : authInputs.email).focus(); });

loginForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (busy(loginButton)) return; // still sending the last press
  clearAuthErrors();
  const v = Object.fromEntries(Object.entries(authInputs).map(([k, el]) => [k, el.value.trim()]));
  v.password = authInputs.password.value;
  const need = signingUp() ? ['familyName', 'displayName', 'email', 'password'] : ['email', 'password'];
  // Every field's problem at once (not one per submit); the password's length too: the
  // hint says so, no round trip to hear it.
  const problems = need.filter((k) => !v[k]).map((k) =>
    [k, `${document.querySelector(`label[for="${AUTH_FIELDS[k]}"]`).textContent} is required`]);
  if (signingUp() && v.password && v.password.length < 8) problems.push(['password', 'Password needs at least 8 characters']);
  if (problems.length) {
    for (const [k, text] of problems) {
      authErrors[k].textContent = text;
      authInputs[k].setAttribute('aria-invalid', 'true');
    }
    const first = need.find((k) => problems.some(([p]) => p === k));
    authInputs[first].focus();
    return;
  }
  await sending(loginButton, async () => {
    try {
      let payload;
      if (signingUp()) {
        const input = { email: v.email, password: v.password, familyName: v.familyName, displayName: v.displayName };
        if (!currencyField.hidden && v.currency) input.currency = v.currency.toUpperCase();
        payload = (await post(`mutation($i: SignUpInput!) { signUp(input: $i)
          { accessToken refreshToken expiresIn deviceToken } }`, { i: input }, false)).signUp;
      } else {
        payload = (await post(`mutation($e: String!, $p: String!, $d: String) {
          login(email: $e, password: $p, deviceToken: $d) { accessToken refreshToken expiresIn deviceToken } }`,
        { e: v.email, p: v.password, d: deviceToken(v.email) }, false)).login;
      }
      saveTokens(payload, v.email);
      loginForm.reset();
      await start();
    } catch (err) {
      if (!(err instanceof ApiError)) console.error(err);
      showErrors(err, authErrors, authInputs, authError);
    }
  });
});

$('logout').addEventListener('click', () => {
  const refresh = window.localStorage.getItem('gg.refresh');
  if (refresh) post('mutation($r: String!) { logout(refreshToken: $r) }', { r: refresh }, false).catch(() => {});
  logout();
});

onSessionEnded(() => { if (app.me) logout('Your session ended; please log in again.'); });
if (loggedIn()) start().catch(() => logout());
