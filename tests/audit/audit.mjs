// Usage: node audit.mjs <url> [bearer token]; prints one JSON line per audit result.
import { serverAudits } from 'graphql-http';

const [url, token] = process.argv.slice(2);
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  if (token) headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};
for (const audit of serverAudits({ url, fetchFn })) {
  const result = await audit.fn();
  console.log(JSON.stringify({ id: audit.id, name: audit.name, status: result.status,
    reason: result.reason || null }));
}
