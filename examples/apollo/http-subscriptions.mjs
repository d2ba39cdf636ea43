#!/usr/bin/env node
// GiftGraph subscriptions over plain HTTP, no WebSocket:
//
//   node http-subscriptions.mjs multipart [BASE_URL]   Apollo Client's HttpLink alone: it
//       sends a subscription as POST /graphql with Accept: multipart/mixed;subscriptionSpec=1.0
//       and reads the multipart response (heartbeat parts included).
//   node http-subscriptions.mjs sse [BASE_URL]         the graphql-sse client (distinct
//       connections mode): POST /graphql/stream with Accept: text/event-stream.
//
// Both authenticate with `Authorization: Bearer <access token>`. The flow is subscribe.mjs's:
// sign up, create a list with one item, subscribe to listEvents(listId) `since` the newest
// event, move the item IDEA -> SELECTED, and print the event as one line:
//
//   EVENT {"kind":"STATUS_CHANGED","seq":"42","topic":"list:…","node":{"id":"…","status":"SELECTED"}}
//
// BASE_URL: the second argument, else GIFTGRAPH_URL, else http://127.0.0.1:8000.
// Exits 0 once the event arrives, 1 on any error or when nothing arrives within 10 s.

import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { print } from "graphql";
import { createClient } from "graphql-sse";

const TIMEOUT_MS = 10_000;
const mode = process.argv[2];
if (mode !== "multipart" && mode !== "sse") {
  console.error("usage: node http-subscriptions.mjs multipart|sse [BASE_URL]");
  process.exit(2);
}
const base = (process.argv[3] || process.env.GIFTGRAPH_URL || "http://127.0.0.1:8000")
  .replace(/\/+$/, "");

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

let token = null;

const authLink = new ApolloLink((operation, forward) => {
  if (token) {
    operation.setContext(({ headers = {} }) => ({
      headers: { ...headers, authorization: `Bearer ${token}` },
    }));
  }
  return forward(operation);
});
// One HttpLink for everything: queries and mutations as usual, subscriptions as multipart.
const client = new ApolloClient({
  link: ApolloLink.from([authLink, new HttpLink({ uri: `${base}/graphql` })]),
  cache: new InMemoryCache(),
});

function viaApollo(listId, since, onEvent, onError) {
  const sub = client.subscribe({ query: LIST_EVENTS, variables: { listId, since } }).subscribe({
    next: ({ data, error }) => (error ? onError(error) : onEvent(data?.listEvents)),
    error: onError,
    complete: () => onError(new Error("subscription completed before any event")),
  });
  return () => sub.unsubscribe();
}

function viaSSE(listId, since, onEvent, onError) {
  const sse = createClient({
    url: `${base}/graphql/stream`,
    headers: () => ({ authorization: `Bearer ${token}` }),
    retryAttempts: 0,
  });
  const stop = sse.subscribe(
    { query: print(LIST_EVENTS), variables: { listId, since } },
    {
      next: ({ data, errors }) => (errors ? onError(new Error(JSON.stringify(errors)))
        : onEvent(data?.listEvents)),
      error: onError,
      complete: () => {},
    },
  );
  return () => { stop(); sse.dispose(); };
}

async function main() {
  const suffix = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const { data } = await client.mutate({
    mutation: SIGN_UP,
    variables: {
      input: {
        familyName: "HTTP Subscriptions Example",
        email: `http-${mode}-${suffix}@example.com`,
        password: "apollo example password",
        displayName: "HTTP Example",
      },
    },
  });
  token = data.signUp.accessToken;
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
  const { data: seqData } = await client.query({ query: LATEST_SEQ, fetchPolicy: "no-cache" });
  const since = seqData.events.edges[0]?.node.seq ?? null;

  let stop = () => {};
  const received = new Promise((resolve, reject) => {
    const subscribe = mode === "multipart" ? viaApollo : viaSSE;
    stop = subscribe(list.id, since, (event) => {
      if (event?.kind === "STATUS_CHANGED") resolve(event);
    }, reject);
  });
  received.catch(() => {});
  await client.mutate({ mutation: SET_STATUS, variables: { id: item.id, status: "SELECTED" } });
  const event = await received;
  stop();
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
  .then(() => {
    clearTimeout(timer);
    client.stop();
    process.exit(0);
  })
  .catch((err) => {
    console.error(`error: ${err?.name ?? "Error"}: ${err?.message ?? err}`);
    process.exit(1);
  });
