// The built-in live family dashboard: log in, then a `dashboard` subscription (a fresh
// snapshot at once and after every change) and `familyEvents` for the activity feed,
// resumed with `since` after any drop so nothing is missed. Plain JS, no build step.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const http = location.origin + '/graphql';
  const wsUrl = http.replace(/^http/, 'ws');
  const store = window.localStorage;
  let client = null;
  let stopActivity = null;
  let stopDashboard = null;
  let lastSeq = null;
  let connectedOnce = false;

  const NODE = `node { ... on ListItem { status gift { name } } ... on Person { name }
    ... on Occasion { name } ... on GiftList { name } ... on Gift { name }
    ... on Comment { body } ... on User { displayName } }`;
  const DASHBOARD = `subscription { dashboard {
    pipeline { idea selected purchased received } budget spent
    nextOccasions { id name date budget summary { spent } }
    people { person { id name } pipeline { idea selected purchased received } spent }
    recentIdeas { id gift { name } list { name } }
    activity { seq kind entityType at actor { displayName } ${NODE} }
  } }`;
  const EVENTS = `subscription($since: String) { familyEvents(since: $since) {
    seq kind entityType at actor { displayName } ${NODE}
  } }`;

  async function post(query, variables, token) {
    const headers = { 'content-type': 'application/json', accept: 'application/graphql-response+json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(http, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
    const body = await res.json();
    if (body.errors && body.errors.length) {
      const err = new Error(body.errors[0].message);
      err.code = body.errors[0].extensions && body.errors[0].extensions.code;
      throw err;
    }
    return body.data;
  }

  function saveTokens(p) {
    store.setItem('gg.access', p.accessToken);
    store.setItem('gg.refresh', p.refreshToken);
    store.setItem('gg.expires', String(Date.now() + (p.expiresIn - 30) * 1000));
  }

  // A fresh access token, refreshed (and rotated) shortly before it expires.
  async function accessToken() {
    if (Number(store.getItem('gg.expires') || 0) > Date.now()) return store.getItem('gg.access');
    const refresh = store.getItem('gg.refresh');
    if (!refresh) throw new Error('not logged in');
    const data = await post(`mutation($r: String!) { refreshToken(refreshToken: $r)
      { accessToken refreshToken expiresIn } }`, { r: refresh });
    saveTokens(data.refreshToken);
    return data.refreshToken.accessToken;
  }

  function setStatus(state) {
    const el = $('status');
    el.dataset.state = state;
    el.textContent = state;
  }

  const esc = (s) => String(s == null ? '' : s).replace(/[&<>"']/g, (c) => (
    { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  const money = (v) => (v == null ? '—' : Number(v).toFixed(2));

  function renderDashboard(d) {
    for (const k of ['idea', 'selected', 'purchased', 'received']) $(`pipeline-${k}`).textContent = d.pipeline[k];
    $('budget').textContent = money(d.budget);
    $('spent').textContent = money(d.spent);
    $('occasions').innerHTML = d.nextOccasions.map((o) => {
      const spent = Number(o.summary.spent);
      const pct = o.budget ? Math.min(100, (spent / Number(o.budget)) * 100) : 0;
      return `<li><div><b>${esc(o.name)}</b> <small>${esc(o.date)}</small>
        <div class="bar"><span style="width:${pct}%"></span></div></div>
        <small>${money(spent)} / ${money(o.budget)}</small></li>`;
    }).join('') || '<li><small>No upcoming occasions</small></li>';
    $('people').innerHTML = d.people.map((p) => `<li><span>${esc(p.person.name)}</span>
      <small>${p.pipeline.idea}·${p.pipeline.selected}·${p.pipeline.purchased}·${p.pipeline.received}
      — ${money(p.spent)}</small></li>`).join('') || '<li><small>No people yet</small></li>';
    $('ideas').innerHTML = d.recentIdeas.map((i) => `<li><span>${esc(i.gift.name)}</span>
      <small>${esc(i.list.name)}</small></li>`).join('') || '<li><small>No ideas yet</small></li>';
    if (lastSeq === null && d.activity.length) {
      // The snapshot's newest event anchors `since`, so a drop before any live event
      // still resumes without a gap.
      $('activity').innerHTML = d.activity.map(activityItem).join('');
      lastSeq = d.activity[0].seq;
    }
  }

  function describe(e) {
    const n = e.node || {};
    const what = n.gift ? n.gift.name : (n.name || n.displayName || n.body || e.entityType);
    const status = n.status ? ` → ${n.status}` : '';
    return `${e.kind.toLowerCase().replace('_', ' ')} ${e.entityType}: ${what}${status}`;
  }

  function activityItem(e) {
    const who = e.actor ? e.actor.displayName : 'someone';
    return `<li data-seq="${esc(e.seq)}"><span>${esc(describe(e))}</span><small>${esc(who)}</small></li>`;
  }

  function onEvent(e) {
    if (lastSeq !== null && Number(e.seq) <= Number(lastSeq)) return; // already shown
    lastSeq = e.seq;
    store.setItem('gg.lastSeq', e.seq);
    const list = $('activity');
    list.insertAdjacentHTML('afterbegin', activityItem(e));
    list.firstElementChild.classList.add('fresh');
    while (list.children.length > 30) list.lastElementChild.remove();
  }

  // A `since` the server will not replay (too far back, or no event of this log): refetch
  // the snapshot (it anchors the feed again) and follow the events from now on.
  const sinceRefused = (errors) => (errors || []).some(
    (e) => e.extensions && e.extensions.fields && e.extensions.fields.since);

  function refetch() {
    lastSeq = null;
    store.removeItem('gg.lastSeq');
    subscribeDashboard();
    subscribeActivity();
  }

  function subscribeActivity() {
    if (stopActivity) stopActivity();
    const since = lastSeq;
    stopActivity = client.subscribe(
      { query: EVENTS, variables: { since } },
      { next: (r) => {
          if (since !== null && sinceRefused(r.errors)) refetch();
          else if (r.data) onEvent(r.data.familyEvents);
        },
        error: (err) => {
          if (since !== null && sinceRefused(Array.isArray(err) ? err : [])) refetch();
          else console.warn('familyEvents', err);
        },
        complete: () => {} });
  }

  function subscribeDashboard() {
    if (stopDashboard) stopDashboard();
    stopDashboard = client.subscribe(
      { query: DASHBOARD },
      { next: (r) => r.data && renderDashboard(r.data.dashboard),
        error: (err) => console.warn('dashboard', err), complete: () => {} });
  }

  async function start() {
    const me = await post('{ me { displayName family { name } } }', {}, await accessToken());
    $('family').textContent = `${me.me.family.name} — ${me.me.displayName}`;
    $('auth').hidden = true;
    $('board').hidden = false;
    $('logout').hidden = false;
    setStatus('connecting');
    client = graphqlWs.createClient({
      url: wsUrl,
      lazy: false,
      retryAttempts: Infinity,
      shouldRetry: () => true,
      retryWait: async (n) => new Promise((r) => setTimeout(r, Math.min(250 * 2 ** n, 5000))),
      connectionParams: async () => ({ authorization: `Bearer ${await accessToken()}` }),
      on: {
        connecting: () => setStatus(connectedOnce ? 'reconnecting' : 'connecting'),
        connected: () => {
          setStatus('live');
          // After a drop, resubscribe from the last seq seen: replay, then live.
          if (connectedOnce) { subscribeActivity(); subscribeDashboard(); }
          connectedOnce = true;
        },
        closed: (e) => {
          setStatus('reconnecting');
          if (e && e.code === 4403) logout('Your access was revoked; please log in again.');
        },
      },
    });
    subscribeDashboard();
    subscribeActivity();
  }

  function logout(message) {
    if (client) client.dispose();
    client = null;
    for (const k of ['gg.access', 'gg.refresh', 'gg.expires', 'gg.lastSeq']) store.removeItem(k);
    lastSeq = null;
    connectedOnce = false;
    $('board').hidden = true;
    $('auth').hidden = false;
    $('logout').hidden = true;
    $('family').textContent = '';
    $('auth-error').textContent = message || '';
    setStatus('offline');
  }

  $('toggle-signup').addEventListener('click', () => {
    const form = $('login-form');
    form.classList.toggle('signup');
    const signup = form.classList.contains('signup');
    $('login').textContent = signup ? 'Sign up' : 'Log in';
    $('toggle-signup').textContent = signup ? 'Have an account? Log in' : 'New family? Sign up';
  });

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('auth-error').textContent = '';
    const email = $('email').value;
    const password = $('password').value;
    try {
      let payload;
      if ($('login-form').classList.contains('signup')) {
        const data = await post(`mutation($i: SignUpInput!) { signUp(input: $i)
          { accessToken refreshToken expiresIn } }`, { i: {
          email, password, familyName: $('family-name').value, displayName: $('display-name').value } });
        payload = data.signUp;
      } else {
        const data = await post(`mutation($e: String!, $p: String!) { login(email: $e, password: $p)
          { accessToken refreshToken expiresIn } }`, { e: email, p: password });
        payload = data.login;
      }
      saveTokens(payload);
      await start();
    } catch (err) {
      $('auth-error').textContent = err.message;
    }
  });

  $('logout').addEventListener('click', async () => {
    const refresh = store.getItem('gg.refresh');
    if (refresh) post('mutation($r: String!) { logout(refreshToken: $r) }', { r: refresh }).catch(() => {});
    logout();
  });

  if (store.getItem('gg.refresh')) start().catch(() => logout());
})();
