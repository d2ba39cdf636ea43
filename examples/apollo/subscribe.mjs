#!/usr/bin/env node
// GiftGraph with Apollo Client (core, no React) in Node.
//
// Queries and mutations go over HTTP (HttpLink); subscriptions go over a WebSocket speaking
// graphql-transport-ws (GraphQLWsLink on a graphql-ws client); `split` routes each operation
// by its type. The flow: sign up (or log in with EMAIL/PASSWORD), create a list with one item,
// subscribe to listEvents(listId), move the item IDEA -> SELECTED, and print the event:
//
//   EVENT {"kind":"STATUS_CHANGED","seq":"42","topic":"list:…","node":{"id":"…","status":"SELECTED"}}
//
// Usage: node subscribe.mjs [BASE_URL]   (or GIFTGRAPH_URL; default http://127.0.0.1:8000)
// Exits 0 once the event arrives, 1 on any error or when nothing arrives within 10 s.

import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql, split } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const TIMEOUT_MS = 10_000;
const base = (process.argv[2] || process.env.GIFTGRAPH_URL || "http://127.0.0.1:8000")
  .replace(/\/+$/, "");
const httpUrl = `${base}/graphql`;
const wsUrl = httpUrl.replace(/^http/, "ws"); // http -> ws, https -> wss

// Node 20 has no global WebSocket; graphql-ws takes an implementation, and Apollo's link
// refers to the global's constants when it inspects a close, so provide both.
globalThis.WebSocket ??= WebSocket;

const SIGN_UP = gql`
  mutation SignUp($input: SignUpInput!) {
    signUp(input: $input) { accessToken user { id email } }
  }
`;
const LOGIN = gql`
  mutation Login($email: String!, $password: String!) {
    login(email: $email, password: $password) { accessToken user { id email } }
  }
`;
const CREATE_LIST = gql`
  mutation CreateList($input: GiftListInput!) {
    createList(input: $input) { id name }
  }
`;
const ADD_ITEM = gql`
  mutation AddItem($listId: ID!, $input: ListItemInput!) {
    addListItem(listId: $listId, input: $input) { id status gift { id name } }
  }
`;
// The newest event's seq: subscribing `since` it means the status change below is delivered
// even if it commits before the server has started listening (replay, then live, no gap).
const LATEST_SEQ = gql`
  query LatestSeq {
    events(first: 1) { edges { node { id seq } } }
  }
`;
const SET_STATUS = gql`
  mutation SetStatus($id: ID!, $status: ItemStatus!) {
    setListItemStatus(id: $id, status: $status) { id status }
  }
`;
const LIST_EVENTS = gql`
  subscription ListEvents($listId: ID!, $since: String) {
    listEvents(listId: $listId, since: $since) {
      id seq kind topic entityType entityId
      node { id ... on ListItem { status } }
    }
  }
`;

let token = null; // read lazily by both links, so one client serves before and after login

const authLink = new ApolloLink((operation, forward) => {
  if (token) {
    operation.setContext(({ headers = {} }) => ({
      headers: { ...headers, authorization: `Bearer ${token}` },
    }));
  }
  return forward(operation);
});

const wsClient = createClient({
  url: wsUrl,
  webSocketImpl: WebSocket,
  lazy: true, // connect on the first subscription, i.e. after we have a token
  retryAttempts: 0,
  connectionParams: () => ({ authorization: `Bearer ${token}` }),
});

const link = split(
  ({ query }) => {
    const def = getMainDefinition(query);
    return def.kind === "OperationDefinition" && def.operation === "subscription";
  },
  new GraphQLWsLink(wsClient),
  ApolloLink.from([authLink, new HttpLink({ uri: httpUrl })]),
);

const client = new ApolloClient({ link, cache: new InMemoryCache() });

async function authenticate() {
  const { EMAIL: email, PASSWORD: password } = process.env;
  if (email && password) {
    const { data } = await client.mutate({ mutation: LOGIN, variables: { email, password } });
    return data.login;
  }
  const suffix = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const { data } = await client.mutate({
    mutation: SIGN_UP,
    variables: {
      input: {
        familyName: "Apollo Example Family",
        email: `apollo-${suffix}@example.com`,
        password: "apollo example password",
        displayName: "Apollo Example",
      },
    },
  });
  return data.signUp;
}

async function main() {
  const auth = await authenticate();
  token = auth.accessToken;
  console.error(`signed in as ${auth.user.email}`);

  const { data: listData } = await client.mutate({
    mutation: CREATE_LIST,
    variables: { input: { name: "Birthday ideas", kind: "IDEAS" } },
  });
  const list = listData.createList;
  const { data: itemData } = await client.mutate({
    mutation: ADD_ITEM,
    variables: { listId: list.id, input: { gift: { name: "Board game", price: "29.99" } } },
  });
  const item = itemData.addListItem;
  console.error(`list ${list.id}, item ${item.id} (${item.status})`);

  const { data: seqData } = await client.query({ query: LATEST_SEQ, fetchPolicy: "no-cache" });
  const since = seqData.events.edges[0]?.node.seq ?? null;

  const received = new Promise((resolve, reject) => {
    const sub = client
      .subscribe({ query: LIST_EVENTS, variables: { listId: list.id, since } })
      .subscribe({
        next: ({ data, error }) => {
          if (error) {
            sub.unsubscribe();
            reject(error);
          } else if (data?.listEvents?.kind === "STATUS_CHANGED") {
            sub.unsubscribe();
            resolve(data.listEvents);
          }
        },
        error: reject,
        complete: () => reject(new Error("subscription completed before any event")),
      });
  });
  received.catch(() => {}); // a socket error may come before we await it; it is rethrown below

  const { data: statusData } = await client.mutate({
    mutation: SET_STATUS,
    variables: { id: item.id, status: "SELECTED" },
  });
  console.error(`item is now ${statusData.setListItemStatus.status}`);

  const event = await received;
  console.log(`EVENT ${JSON.stringify({
    kind: event.kind,
    seq: event.seq,
    topic: event.topic,
    node: event.node && { id: event.node.id, status: event.node.status },
  })}`);
}

const timer = setTimeout(() => {
  console.error(`timed out after ${TIMEOUT_MS / 1000} s without an event`);
  process.exit(1);
}, TIMEOUT_MS);

main()
  .then(async () => {
    clearTimeout(timer);
    await wsClient.dispose();
    client.stop();
    process.exit(0);
  })
  .catch((err) => {
    const cause = err?.cause ? ` (${err.cause.message ?? err.cause})` : "";
    console.error(`error: ${err?.name ?? "Error"}: ${err?.message ?? err}${cause}`);
    process.exit(1);
  });
