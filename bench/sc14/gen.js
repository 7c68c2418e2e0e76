#!/usr/bin/env node
'use strict';
// The load generator of bench/compare.py: raw SocketCluster protocol 1 frames
// (JSON text messages) over plain WebSockets (the `ws` package pinned in
// package.json), the same generator for every server.  It handshakes
// ({"event":"#handshake","data":{"authToken":null},"cid":1}), answers the
// server's ping "#1" with "#2", emits "echo" with a cid and waits for the
// {"rid":..,"data":..} ack, subscribes with "#subscribe" and publishes with
// "#publish" (with a cid: every publication is acked).  Latency is measured
// here: every payload carries the time it was sent ("t", performance.now() of
// this process) and the ack or delivery that brings it back is timed on
// arrival.
//
//   node bench/sc14/gen.js SCENARIO URL 'JSON OPTIONS'
//
// SCENARIO:
//   connect      {"conns": 2000, "concurrency": 50}: opens and handshakes
//                <conns> connections, <concurrency> handshakes in flight;
//                prints {"phase":"idle"} and keeps them open and idle until a
//                line arrives on stdin (the driver reads the server's RSS
//                meanwhile), then closes them.
//   rpc          {"conns": 50, "warmup": 1, "seconds": 4, "rate": 5000}:
//                "echo" with ack; max: closed loop, one request in flight per
//                connection; fixed: <rate> requests/s in all, open loop.
//   fanout       {"subscribers": 1000, "window": 20, "rate": 20, ...}: one
//                channel, one publisher; max: at most <window> publications
//                not yet delivered to every subscriber; fixed: <rate>
//                publications/s.
//   pubsub-many  {"channels": 1000, "publishers": 10, "window": 2000,
//                "rate": 10000, ...}: one subscriber connection per channel,
//                <publishers> connections publishing round-robin over the
//                channels; max: at most <window> messages not yet delivered;
//                fixed: <rate> messages/s in all.
//   warmup       {"seconds": 3}: a little of everything (handshakes, echo,
//                subscribe, publish), not measured.
//
// Phases of a measured scenario: warm-up (<warmup> s at full speed, not
// measured), "fixed" (the fixed rate, <seconds> s) then "max" (as fast as the
// server goes, <seconds> s).  Each phase ends by waiting (at most <drain> s)
// for every ack and delivery it expects; what is still missing is "lost".
// Output: one JSON object per line: {"phase":..,"mark":"start"|"end"} around
// each measured phase (the driver samples the server's CPU there), then
// {"result": {...}}.  Every run is bounded: it gives up after 58 s with
// {"error": ...}.

const path = require('path');
const { performance } = require('perf_hooks');
const WebSocket = require(path.join(__dirname, 'node_modules', 'ws'));

const [scenario, url, optionsText] = process.argv.slice(2);
const options = JSON.parse(optionsText || '{}');
const PAYLOAD = 'x'.repeat(options.payload === undefined ? 64 : options.payload);
const DRAIN = options.drain === undefined ? 5 : options.drain;
const CONNECT_TIMEOUT_MS = 15000;
const now = () => performance.now();

function out(object) {
  process.stdout.write(JSON.stringify(object) + '\n');
}
function fail(message) {
  process.stdout.write(JSON.stringify({ error: message }) + '\n', () => process.exit(1));
}
setTimeout(() => fail('gave up after 58 s'), 58000).unref();

// --- latency samples --------------------------------------------------------

class Samples {
  constructor(capacity) {
    this.values = new Float64Array(capacity || 4000000);
    this.count = 0;
  }
  add(ms) {
    if (this.count < this.values.length) this.values[this.count++] = ms;
  }
  summary() {
    if (this.count === 0) return { p50: null, p99: null, max: null };
    const sorted = this.values.slice(0, this.count).sort();
    const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    return { p50: round(at(0.5)), p99: round(at(0.99)), max: round(sorted[sorted.length - 1]) };
  }
}
const round = (x) => Math.round(x * 1000) / 1000;

// --- one connection ---------------------------------------------------------

let unexpectedCloses = 0;
let errorReplies = 0;
let closing = false;

class Conn {
  constructor(ws) {
    this.ws = ws;
    this.cid = 1;
    this.acks = new Map();   // cid -> callback(message)
    this.onPublish = null;   // (channel, data)
  }

  request(event, data, callback) {
    const cid = ++this.cid;
    this.acks.set(cid, callback);
    this.ws.send(JSON.stringify({ event, data, cid }));
  }

  received(raw) {
    if (raw.length === 2 && raw[0] === 0x23) {   // "#1": ping (protocol 1)
      if (raw[1] === 0x31) this.ws.send('#2');
      return;
    }
    if (raw.length === 0) return;                 // protocol 2 ping: ignored
    const message = JSON.parse(raw.toString());
    if (Array.isArray(message)) message.forEach((m) => this.dispatch(m));
    else this.dispatch(message);
  }

  dispatch(message) {
    if (message.rid !== undefined) {
      const callback = this.acks.get(message.rid);
      if (callback === undefined) return;
      this.acks.delete(message.rid);
      if (message.error !== undefined && message.error !== null) errorReplies++;
      callback(message);
    } else if (message.event === '#publish') {
      if (this.onPublish) this.onPublish(message.data.channel, message.data.data);
    }
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('handshake timed out')); },
      CONNECT_TIMEOUT_MS);
    let conn = null;
    ws.on('open', () => {
      conn = new Conn(ws);
      conn.cid = 1;
      conn.acks.set(1, (reply) => {
        clearTimeout(timer);
        if (!reply.data || reply.data.id === undefined) reject(new Error('bad handshake reply'));
        else resolve(conn);
      });
      ws.send(JSON.stringify({ event: '#handshake', data: { authToken: null }, cid: 1 }));
    });
    ws.on('message', (data) => conn && conn.received(data));
    ws.on('error', (e) => { clearTimeout(timer); reject(e); });
    ws.on('close', () => { if (!closing) unexpectedCloses++; });
  });
}

// `count` connections, at most `concurrency` handshakes in flight.
async function connectMany(count, concurrency) {
  const conns = new Array(count);
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      conns[i] = await connect();
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency || 50, count) }, worker));
  return conns;
}

function subscribe(conn, channel) {
  return new Promise((resolve, reject) => conn.request('#subscribe', { channel }, (reply) => {
    if (reply.error) reject(new Error('subscribe refused: ' + JSON.stringify(reply.error)));
    else resolve();
  }));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(condition, seconds) {
  const deadline = now() + seconds * 1000;
  while (!condition() && now() < deadline) await sleep(2);
  return condition();
}

// Calls `send(n)` every millisecond with how many messages are due at `rate`
// per second, for `seconds`.
function paced(rate, seconds, send) {
  return new Promise((resolve) => {
    const start = now();
    let sent = 0;
    const timer = setInterval(() => {
      const elapsed = now() - start;
      const due = Math.min(Math.floor(rate * Math.min(elapsed, seconds * 1000) / 1000), Math.round(rate * seconds));
      if (due > sent) { send(due - sent); sent = due; }
      if (elapsed >= seconds * 1000) { clearInterval(timer); resolve(sent); }
    }, 1);
  });
}

// --- scenarios --------------------------------------------------------------

async function phase(name, body) {
  out({ phase: name, mark: 'start' });
  const result = await body();
  out({ phase: name, mark: 'end' });
  return result;
}

async function scenarioConnect() {
  const count = options.conns || 2000;
  const start = now();
  out({ phase: 'connect', mark: 'start' });
  const conns = await connectMany(count, options.concurrency || 50);
  const seconds = (now() - start) / 1000;
  out({ phase: 'connect', mark: 'end' });
  out({ phase: 'idle', conns: conns.length });
  await new Promise((resolve) => {
    process.stdin.once('data', resolve);
    setTimeout(resolve, 30000);
  });
  const lost = unexpectedCloses;
  closing = true;
  conns.forEach((c) => c.ws.terminate());
  return { handshakes: count, seconds: round(seconds), handshakes_per_s: Math.round(count / seconds),
    lost, errors: errorReplies };
}

async function scenarioRpc() {
  const conns = await connectMany(options.conns || 50, 50);
  const seconds = options.seconds || 4;
  let acked = 0;
  let sent = 0;
  let samples = null;
  const onAck = (reply) => {
    acked++;
    if (samples) samples.add(now() - reply.data.t);
  };
  const echo = (conn, callback) => {
    sent++;
    conn.request('echo', { t: now(), p: PAYLOAD }, callback);
  };

  async function closedLoop(duration) {
    const end = now() + duration * 1000;
    acked = sent = 0;
    const start = now();
    await Promise.all(conns.map((conn) => new Promise((resolve) => {
      const next = (reply) => {
        if (reply) onAck(reply);
        if (now() < end) echo(conn, next);
        else resolve();
      };
      next(null);
    })));
    const elapsed = (now() - start) / 1000;
    await waitUntil(() => acked === sent, DRAIN);
    return { sent, acked, seconds: elapsed };
  }

  await closedLoop(options.warmup === undefined ? 1 : options.warmup);
  const result = {};
  if (options.rate) {
    result.fixed = await phase('fixed', async () => {
      samples = new Samples();
      acked = sent = 0;
      let i = 0;
      await paced(options.rate, seconds, (n) => {
        for (let k = 0; k < n; k++) echo(conns[i++ % conns.length], onAck);
      });
      await waitUntil(() => acked === sent, DRAIN);
      return Object.assign({ rate: options.rate, sent, lost: sent - acked }, samples.summary());
    });
  }
  result.max = await phase('max', async () => {
    samples = new Samples();
    const r = await closedLoop(seconds);
    return Object.assign({ acks_per_s: Math.round(r.acked / r.seconds), acked: r.acked,
      lost: r.sent - r.acked }, samples.summary());
  });
  closing = true;
  conns.forEach((c) => c.ws.terminate());
  return Object.assign(result, { errors: errorReplies, unexpected_closes: unexpectedCloses });
}

// Publications (fanout: one channel, many subscribers; pubsub-many: many
// channels, one subscriber each), the delivery count and latency recorded by
// every subscriber.
async function scenarioPublish(many) {
  const channels = many ? (options.channels || 1000) : 1;
  const subscriberCount = many ? channels : (options.subscribers || 1000);
  const perPublication = many ? 1 : subscriberCount;
  const seconds = options.seconds || 4;
  const subscribers = await connectMany(subscriberCount, 50);
  const publishers = await connectMany(many ? (options.publishers || 10) : 1, 10);
  const names = Array.from({ length: channels }, (_, i) => 'bench' + i);
  await Promise.all(subscribers.map((conn, i) => subscribe(conn, names[i % channels])));

  let delivered = 0;
  let published = 0;
  let acked = 0;
  let samples = null;
  let lastDelivery = 0;
  subscribers.forEach((conn) => {
    conn.onPublish = (channel, data) => {
      delivered++;
      lastDelivery = now();
      if (samples) samples.add(lastDelivery - data.t);
    };
  });
  let seq = 0;
  const onAck = () => { acked++; };
  const publish = () => {
    const i = seq++;
    published++;
    publishers[i % publishers.length].request('#publish',
      { channel: names[i % channels], data: { t: now(), p: PAYLOAD } }, onAck);
  };
  const expected = () => published * perPublication;
  const settled = () => delivered === expected() && acked === published;
  const reset = () => { delivered = published = acked = 0; };

  // As fast as deliveries come back: at most `window` publications (fanout)
  // or messages (pubsub-many) not yet delivered.
  async function closedLoop(duration) {
    reset();
    const window = options.window || (many ? 2000 : 20);
    const start = now();
    const end = start + duration * 1000;
    await new Promise((resolve) => {
      const pump = () => {
        if (now() >= end) { clearInterval(timer); resolve(); return; }
        let inFlight = published - Math.floor(delivered / perPublication);
        while (inFlight < window) { publish(); inFlight++; }
      };
      // Re-fill the window from the delivery handler and a 1 ms timer.
      const timer = setInterval(pump, 1);
      subscribers.forEach((conn) => {
        const deliver = conn.onPublish;
        conn.onPublish = (channel, data) => {
          deliver(channel, data);
          if (delivered % perPublication === 0) pump();
        };
        conn.onPublishBase = conn.onPublishBase || deliver;
      });
      pump();
    });
    subscribers.forEach((conn) => { conn.onPublish = conn.onPublishBase; });
    await waitUntil(settled, DRAIN);
    const elapsed = (Math.max(lastDelivery, start) - start) / 1000;
    return { published, delivered, acked, seconds: elapsed };
  }

  await closedLoop(options.warmup === undefined ? 1 : options.warmup);
  const result = {};
  if (options.rate) {
    result.fixed = await phase('fixed', async () => {
      reset();
      samples = new Samples();
      await paced(options.rate, seconds, (n) => { for (let k = 0; k < n; k++) publish(); });
      await waitUntil(settled, DRAIN);
      return Object.assign({ rate: options.rate, unit: many ? 'msgs/s' : 'publications/s',
        published, lost: expected() - delivered + published - acked }, samples.summary());
    });
  }
  result.max = await phase('max', async () => {
    samples = new Samples();
    const r = await closedLoop(seconds);
    return Object.assign({
      per_s: Math.round(r.delivered / r.seconds), published: r.published,
      delivered: r.delivered, lost: r.published * perPublication - r.delivered + r.published - r.acked,
    }, samples.summary());
  });
  closing = true;
  subscribers.concat(publishers).forEach((c) => c.ws.terminate());
  return Object.assign(result, { errors: errorReplies, unexpected_closes: unexpectedCloses });
}

async function scenarioWarmup() {
  const seconds = options.seconds || 3;
  const end = now() + seconds * 1000;
  let rounds = 0;
  while (now() < end) {
    const conns = await connectMany(100, 50);
    await Promise.all(conns.map((conn, i) => subscribe(conn, 'warm' + (i % 10))));
    let pending = 0;
    await new Promise((resolve) => {
      conns.forEach((conn, i) => {
        for (let k = 0; k < 20; k++) {
          pending += 2;
          conn.request('echo', { t: now(), p: PAYLOAD }, () => { if (--pending === 0) resolve(); });
          conn.request('#publish', { channel: 'warm' + ((i + k) % 10), data: { t: now(), p: PAYLOAD } },
            () => { if (--pending === 0) resolve(); });
        }
      });
    });
    closing = true;
    conns.forEach((c) => c.ws.close());
    await sleep(50);
    closing = false;
    rounds++;
  }
  return { rounds, errors: errorReplies };
}

(async () => {
  let result;
  if (scenario === 'connect') result = await scenarioConnect();
  else if (scenario === 'rpc') result = await scenarioRpc();
  else if (scenario === 'fanout') result = await scenarioPublish(false);
  else if (scenario === 'pubsub-many') result = await scenarioPublish(true);
  else if (scenario === 'warmup') result = await scenarioWarmup();
  else return fail('scenario must be connect, rpc, fanout, pubsub-many or warmup');
  process.stdout.write(JSON.stringify({ result }) + '\n', () => process.exit(0));
})().catch((e) => fail(String((e && e.stack) || e)));
