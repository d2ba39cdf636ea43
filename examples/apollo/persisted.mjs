#!/usr/bin/env node
// GiftGraph with Apollo Client's automatic persisted queries (APQ), unmodified:
// `createPersistedQueryLink({ sha256 })` (node's crypto) in front of an HttpLink.
//
// Each operation is first sent as its SHA-256 alone; a server that does not know it answers
// PersistedQueryNotFound and the link sends the query with its hash, which the server then
// stores (shared by every instance). The flow: sign up, read `me` (hash, then hash + query),
// then read `me` again from a second client (the hash alone is enough). Every request the
// link sends is printed as one line on stdout:
//
//   APQ {"op":"Me","sent":["hash"],"codes":["PERSISTED_QUERY_NOT_FOUND"]}
//
// Usage: node persisted.mjs [BASE_URL]   (or GIFTGRAPH_URL; default http://127.0.0.1:8000)
// Exits 0 when both reads answered, 1 on any error or after 10 s.

import { createHash } from "node:crypto";
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { createPersistedQueryLink } from "@apollo/client/link/persisted-queries";

const TIMEOUT_MS = 10_000;
const base = (process.argv[2] || process.env.GIFTGRAPH_URL || "http://127.0.0.1:8000")
  .replace(/\/+$/, "");
const httpUrl = `${base}/graphql`;

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

const SIGN_UP = gql`
  mutation SignUp($input: SignUpInput!) {
    signUp(input: $input) { accessToken user { id email } }
  }
`;
const ME = gql`
  query Me { me { id email } }
`;

let token = null;

// What the link sent (the hash, the query, or both) and the error codes that came back.
async function recordingFetch(uri, options) {
  const body = JSON.parse(options.body);
  const sent = [];
  if (body.extensions?.persistedQuery) sent.push("hash");
  if (body.query) sent.push("query");
  const response = await fetch(uri, options);
  const answer = await response.clone().json();
  const codes = (answer.errors ?? []).map((e) => e.extensions?.code);
  console.log(`APQ ${JSON.stringify({ op: body.operationName, sent, codes })}`);
  return response;
}

function makeClient() {
  const authLink = new ApolloLink((operation, forward) => {
    if (token) {
      operation.setContext(({ headers = {} }) => ({
        headers: { ...headers, authorization: `Bearer ${token}` },
      }));
    }
    return forward(operation);
  });
  const link = ApolloLink.from([
    authLink,
    createPersistedQueryLink({ sha256 }),
    new HttpLink({ uri: httpUrl, fetch: recordingFetch }),
  ]);
  return new ApolloClient({ link, cache: new InMemoryCache() });
}

async function main() {
  const first = makeClient();
  const suffix = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const { data } = await first.mutate({
    mutation: SIGN_UP,
    variables: {
      input: {
        familyName: "APQ Example Family",
        email: `apq-${suffix}@example.com`,
        password: "apollo example password",
        displayName: "APQ Example",
      },
    },
  });
  token = data.signUp.accessToken;
  const one = await first.query({ query: ME, fetchPolicy: "no-cache" });
  const second = makeClient(); // a new link: it does not know the server has the document
  const two = await second.query({ query: ME, fetchPolicy: "no-cache" });
  if (one.data.me.id !== data.signUp.user.id || two.data.me.id !== data.signUp.user.id) {
    throw new Error("`me` is not the user who signed up");
  }
  console.error(`read me twice as ${two.data.me.email}`);
}

const timer = setTimeout(() => {
  console.error(`timed out after ${TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, TIMEOUT_MS);

main()
  .then(() => {
    clearTimeout(timer);
    process.exit(0);
  })
  .catch((err) => {
    console.error(`error: ${err?.name ?? "Error"}: ${err?.message ?? err}`);
    process.exit(1);
  });
