// GraphQL over HTTP and graphql-ws for the family app: tokens (refreshed before they
// expire), errors carrying `code`, per-field messages and `retryAfter`, and one socket.
const HTTP = location.origin + '/graphql';
const WS = HTTP.replace(/^http/, 'ws');
const store = window.localStorage;
const KEYS = ['gg.access', 'gg.refresh', 'gg.expires'];

export class ApiError extends Error {
  constructor(e) {
    super(e.message || 'Something went wrong');
    const ext = e.extensions || {};
    this.code = ext.code;
    this.fields = ext.fields || {};
    this.retryAfter = ext.retryAfter;
    this.validation = !e.path; // refused before execution (parse or validation)
  }
}

export async function post(query, variables = {}, auth = true, accept = 'application/graphql-response+json') {
  const headers = { 'content-type': 'application/json', accept };
  if (auth) {
    try {
      headers.authorization = `Bearer ${await accessToken()}`;
    } catch (err) {
      if (err.code === 'UNAUTHENTICATED') sessionEnded();
      throw err;
    }
  }
  let res;
  try {
    res = await fetch(HTTP, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  } catch {
    throw new ApiError({ message: 'The server cannot be reached; check your connection.', extensions: { code: 'OFFLINE' } });
  }
  let body;
  try {
    body = await res.json();
  } catch {
    throw new ApiError({ message: `The server answered ${res.status}; please try again.`, path: [] });
  }
  if (body.errors && body.errors.length) {
    const err = new ApiError(body.errors[0]);
    if (auth && err.code === 'UNAUTHENTICATED') sessionEnded();
    throw err;
  }
  return body.data;
}

// Called when a logged-in request is refused for its token (expired session, revoked).
let sessionEnded = () => {};
export function onSessionEnded(fn) { sessionEnded = fn; }

export function saveTokens(p, email) {
  if (email && p.deviceToken) store.setItem(deviceKey(email), p.deviceToken);
  store.setItem('gg.access', p.accessToken);
  store.setItem('gg.refresh', p.refreshToken);
  store.setItem('gg.expires', String(Date.now() + (p.expiresIn - 30) * 1000));
}

// This device's token for a member (kept after logout, one per email): sent at login, it
// lets the login go ahead of a flood of others' attempts from any network.
const deviceKey = (email) => `gg.device:${email.trim().toLowerCase()}`;
export const deviceToken = (email) => store.getItem(deviceKey(email));

export const loggedIn = () => Boolean(store.getItem('gg.refresh'));

export function clearTokens() {
  for (const k of KEYS) store.removeItem(k);
}

// A fresh access token, refreshed (and rotated) shortly before it expires.
let refreshing = null;
export async function accessToken() {
  if (Number(store.getItem('gg.expires') || 0) > Date.now()) return store.getItem('gg.access');
  const refresh = store.getItem('gg.refresh');
  if (!refresh) throw new ApiError({ message: 'Please log in.', extensions: { code: 'UNAUTHENTICATED' } });
  if (!refreshing) {
    refreshing = post(`mutation($r: String!) { refreshToken(refreshToken: $r)
      { accessToken refreshToken expiresIn } }`, { r: refresh }, false)
      .then((d) => { saveTokens(d.refreshToken); return d.refreshToken.accessToken; })
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

// One graphql-ws client (window.graphqlWs, vendored) that retries forever; `on` gets
// 'connecting' | 'live' | 'reconnecting' | 'revoked'.
export function connect(on) {
  let connectedOnce = false;
  const client = window.graphqlWs.createClient({
    url: WS,
    lazy: false,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    retryWait: (n) => new Promise((r) => setTimeout(r, Math.min(250 * 2 ** n, 5000))),
    connectionParams: async () => ({ authorization: `Bearer ${await accessToken()}` }),
    on: {
      connecting: () => on(connectedOnce ? 'reconnecting' : 'connecting'),
      connected: () => { on('live', connectedOnce); connectedOnce = true; },
      closed: (e) => on(e && e.code === 4403 ? 'revoked' : 'reconnecting'),
    },
  });
  return client;
}
