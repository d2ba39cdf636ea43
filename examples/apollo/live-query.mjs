#!/usr/bin/env node
// A live query (`subscription { live { …any selection of Query… } }`) with two real clients:
// Apollo Client's `client.subscribe` through GraphQLWsLink, and the graphql-ws reference
// client on its own. Both get the selection's result at once, then a new one after each
// change that changes it. The flow: sign up, subscribe with both, create a person, and
// print what each received:
//
//   LIVE {"apollo":[0,1],"graphqlWs":[0,1]}   (persons.totalCount, result by result)
//
// Usage: node live-query.mjs [BASE_URL]   (or GIFTGRAPH_URL; default http://127.0.0.1:8000)
// Exits 0 once both saw the change, 1 on any error or after 10 s.

import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const TIMEOUT_MS = 10_000;
const base = (process.argv[2] || process.env.GIFTGRAPH_URL || "http://127.0.0.1:8000")
  .replace(/\/+$/, "");
const httpUrl = `${base}/graphql`;
const wsUrl = httpUrl.replace(/^http/, "ws");
globalThis.WebSocket ??= WebSocket;

const LIVE = `subscription LivePersons {
  live { persons { totalCount edges { node { id name } } } }
}`;

async function post(query, variables, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(httpUrl, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await res.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

// Resolves once `counts` ends with `until`; counts each result's persons.totalCount.
function collector(until) {
  const counts = [];
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  return {
    counts,
    finished,
    next(data) {
      counts.push(data.live.persons.totalCount);
      if (counts.at(-1) === until) done();
    },
  };
}

async function main() {
  const suffix = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const { signUp } = await post(
    "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
    { i: { familyName: "Live", email: `live-${suffix}@example.com`,
           password: "live example password", displayName: "Live" } });
  const token = signUp.accessToken;
  const params = { authorization: `Bearer ${token}` };

  // 1. The graphql-ws reference client.
  const wsClient = createClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0,
                                  connectionParams: params });
  const viaWs = collector(1);
  const firstWs = new Promise((resolve, reject) => {
    wsClient.subscribe({ query: LIVE }, {
      next: ({ data, errors }) => {
        if (errors) reject(new Error(JSON.stringify(errors)));
        viaWs.next(data);
        resolve();
      },
      error: reject,
      complete: () => reject(new Error("graphql-ws: completed")),
    });
  });

  // 2. Apollo Client, client.subscribe through GraphQLWsLink.
  const apolloWs = createClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0,
                                  connectionParams: params });
  const apollo = new ApolloClient({
    link: new GraphQLWsLink(apolloWs),
    cache: new InMemoryCache(),
  });
  const viaApollo = collector(1);
  const firstApollo = new Promise((resolve, reject) => {
    apollo.subscribe({ query: gql(LIVE), fetchPolicy: "no-cache" }).subscribe({
      next: ({ data, error }) => {
        if (error) reject(error);
        viaApollo.next(data);
        resolve();
      },
      error: reject,
      complete: () => reject(new Error("apollo: completed")),
    });
  });

  await Promise.all([firstWs, firstApollo]); // the current result, at once
  await post("mutation { createPerson(input: {name: \"Ada\"}) { id } }", {}, token);
  await Promise.all([viaWs.finished, viaApollo.finished]);
  console.log(`LIVE ${JSON.stringify({ apollo: viaApollo.counts, graphqlWs: viaWs.counts })}`);
  await wsClient.dispose();
  await apolloWs.dispose();
  apollo.stop();
}

const timer = setTimeout(() => {
  console.error(`timed out after ${TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, TIMEOUT_MS);

main()
  .then(() => { clearTimeout(timer); process.exit(0); })
  .catch((err) => {
    console.error(`error: ${err?.message ?? err}`);
    process.exit(1);
  });
