#!/usr/bin/env node
'use strict';
// A load generator for bench/scale.py, on the official socketcluster-client
// (20.0.2, installed in tests/interop by `npm ci --prefix tests/interop`).
//
//   node bench/load.js rpc    <url> <connections> <seconds>
//   node bench/load.js fanout <url> <subscribers> <publications>
//
// rpc: every connection invokes "echo" in a loop (one request in flight per
// connection) for <seconds>; prints {"mode":"rpc","requests":N,"seconds":S}.
// fanout: <subscribers> clients subscribe to "bench"; one more client
// publishes <publications> messages (acked, at most 20 in flight); prints
// {"mode":"fanout","deliveries":N,"seconds":S} once every subscriber got
// every message (S from the first publish to the last delivery).
// Every run is bounded: it gives up after 120 s with {"error": ...}.

const path = require('path');
const sc = require(path.join(__dirname, '..', 'tests', 'interop', 'node_modules', 'sc20'));

const [mode, url, a, b] = process.argv.slice(2);
const u = new URL(url);
const options = { hostname: u.hostname, port: Number(u.port), path: u.pathname, autoReconnect: false };

function fail(message) {
  process.stdout.write(JSON.stringify({ error: message }) + '\n', () => process.exit(1));
}
setTimeout(() => fail('gave up after 120 s'), 120000).unref();

async function connected() {
  const socket = sc.create(options);
  for await (const _ of socket.listener('connect')) break;
  return socket;
}

async function rpc(connections, seconds) {
  const sockets = await Promise.all(Array.from({ length: connections }, connected));
  let requests = 0;
  const start = Date.now();
  const end = start + seconds * 1000;
  await Promise.all(sockets.map(async (socket) => {
    while (Date.now() < end) {
      await socket.invoke('echo', { n: requests });
      requests++;
    }
  }));
  const elapsed = (Date.now() - start) / 1000;
  sockets.forEach((s) => s.disconnect());
  return { mode: 'rpc', connections, requests, seconds: elapsed };
}

async function fanout(subscribers, publications) {
  const sockets = await Promise.all(Array.from({ length: subscribers }, connected));
  let deliveries = 0;
  let last = 0;
  const total = subscribers * publications;
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  await Promise.all(sockets.map(async (socket) => {
    const channel = socket.subscribe('bench');
    await channel.listener('subscribe').once();
    (async () => {
      for await (const _ of channel) {
        deliveries++;
        if (deliveries === total) { last = Date.now(); done(); }
      }
    })();
  }));
  const publisher = await connected();
  const start = Date.now();
  let inFlight = [];
  for (let i = 0; i < publications; i++) {
    inFlight.push(publisher.invokePublish('bench', { seq: i, text: 'x'.repeat(100) }));
    if (inFlight.length >= 20) { await Promise.all(inFlight); inFlight = []; }
  }
  await Promise.all(inFlight);
  await finished;
  sockets.forEach((s) => s.disconnect());
  publisher.disconnect();
  return { mode: 'fanout', subscribers, publications, deliveries, seconds: (last - start) / 1000 };
}

(async () => {
  let result;
  if (mode === 'rpc') result = await rpc(Number(a), Number(b));
  else if (mode === 'fanout') result = await fanout(Number(a), Number(b));
  else return fail('mode must be rpc or fanout');
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
})().catch((e) => fail(String(e && e.stack || e)));
