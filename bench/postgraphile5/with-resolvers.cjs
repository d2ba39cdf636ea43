// Node 20 lacks Promise.withResolvers (Node 22); PostGraphile 5 needs it. Preloaded with
// NODE_OPTIONS=--require <this file>.
Promise.withResolvers ??= function () { let resolve, reject; const promise = new Promise((a, b) => { resolve = a; reject = b; }); return { promise, resolve, reject }; };
