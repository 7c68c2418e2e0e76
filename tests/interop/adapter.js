'use strict';
// One small adapter over the two official SocketCluster clients, so that a
// scenario is written once:
//   v14: socketcluster-client@14.3.2 (package alias "sc14"): callback/EventEmitter API,
//        protocol v1 (pings "#1" / pongs "#2").
//   v20: socketcluster-client@20.0.2 (package alias "sc20"): async-iterator API,
//        protocol v2 by default (pings "" / pongs "").
//
// Every method that talks to the server returns a Promise that never rejects
// for a server-side error: it resolves to {data} or {error: <plain object>},
// so scenarios can report exactly what the client observed.

const path = require('path');

const LIBS = {
  14: 'sc14',
  20: 'sc20'
};

function loadClientLib(version) {
  const name = LIBS[String(version)];
  if (!name) throw new Error('unknown client version ' + JSON.stringify(version) + ' (use 14 or 20)');
  return require(name);
}

// The `ws` package each client uses internally (ws@7 for v14, ws@8 for v20),
// for raw WebSocket scenarios.
function loadWs(version) {
  const name = LIBS[String(version)];
  if (!name) throw new Error('unknown client version ' + JSON.stringify(version));
  const pkgDir = path.dirname(require.resolve(name + '/package.json'));
  return require(require.resolve('ws', { paths: [pkgDir] }));
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// An error as a JSON-able value: objects become {name, message, ...own
// enumerable properties}; strings, booleans etc. are returned unchanged
// (the clients pass non-object errors through as they are).
function errJson(err) {
  if (err === null || err === undefined) return null;
  if (typeof err !== 'object') return err;
  const out = { name: err.name, message: err.message };
  for (const key of Object.keys(err)) {
    if (key === 'stack') continue;
    out[key] = jsonable(err[key]);
  }
  return out;
}

function jsonable(value) {
  if (value === undefined) return null;
  if (value instanceof Error) return errJson(value);
  try {
    return JSON.parse(JSON.stringify(value));
  } catch (e) {
    return String(value);
  }
}

// A handshake status as JSON, keeping a hydrated authError's message.
function statusJson(status) {
  const out = jsonable(status);
  if (out && typeof out === 'object' && status && status.authError) out.authError = errJson(status.authError);
  return out;
}

// Parse ws://host:port/path?query into client options.
function urlOptions(url) {
  const u = new URL(url);
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new Error('URL must be ws:// or wss://, got ' + url);
  }
  const secure = u.protocol === 'wss:';
  const opts = {
    hostname: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port ? Number(u.port) : (secure ? 443 : 80),
    path: u.pathname || '/',
    secure
  };
  if (u.search && u.search.length > 1) {
    const query = {};
    for (const [k, v] of u.searchParams) query[k] = v;
    opts.query = query;
  }
  return opts;
}

// A v14 ack callback's (err, data) as {data} / {error[, data]}. On a timeout
// or a lost connection v14 passes its internal event object as `data`: drop it.
function v14Reply(err, d) {
  if (!err) return { data: jsonable(d) };
  const out = { error: errJson(err) };
  const internal = err && (err.name === 'TimeoutError' || err.name === 'BadConnectionError');
  if (d !== undefined && !internal) out.data = jsonable(d);
  return out;
}

let clientCounter = 0;

class Client {
  // options: {url, rejectUnauthorized, clientOptions}
  constructor(version, url, options) {
    options = options || {};
    this.version = Number(version);
    this.name = options.name || ('c' + (clientCounter++));
    this.url = url;
    this.events = []; // unified socket-level event log, in order
    this.frames = []; // every inbound WebSocket message, raw, in order
    this.received = []; // custom events from the server: {event, data, kind}
    this.channelMessages = []; // {channel, data} in arrival order
    this._waiters = [];
    this._t0 = Date.now();
    this._lib = loadClientLib(version);

    const base = urlOptions(url);
    const opts = Object.assign(base, {
      autoReconnect: false
    });
    if (base.secure && options.rejectUnauthorized !== true) {
      // A self-signed test certificate: the v14 client hands its whole
      // options object to `new WebSocket(uri, null, options)`, the v20 client
      // hands only `wsOptions` to ws.
      if (this.version === 14) {
        opts.rejectUnauthorized = false;
      } else {
        opts.wsOptions = { rejectUnauthorized: false };
      }
    }
    if (this.version === 14) {
      // Without this the v14 factory returns the SAME socket for a second
      // create() with the same URL.
      opts.multiplex = false;
    }
    Object.assign(opts, options.clientOptions || {});
    if (options.wsOptions) {
      // Extra options for the client's `ws` (e.g. {origin: ...}): the v14
      // client passes its whole options object to ws, v20 only wsOptions.
      if (this.version === 14) Object.assign(opts, options.wsOptions);
      else opts.wsOptions = Object.assign({}, opts.wsOptions || {}, options.wsOptions);
    }
    const storedToken = options.authToken;
    if (storedToken != null) opts.autoConnect = false;
    this.options = opts;
    this.socket = this._lib.create(opts);
    this._listen();
    if (storedToken != null) {
      // Put the token where the client keeps its signed token between
      // connections (its auth engine, under its authTokenName: memory
      // storage in Node), then connect: the #handshake carries it.
      const s = this.socket;
      if (this.version === 14) {
        s.auth.saveToken(s.authTokenName, storedToken, {}, () => s.connect());
      } else {
        Promise.resolve(s.auth.saveToken(s.authTokenName, storedToken, {})).then(() => s.connect());
      }
    }
  }

  // ---- event log ------------------------------------------------------

  _log(event, fields) {
    const entry = Object.assign({ event, t: Date.now() - this._t0 }, fields || {});
    this.events.push(entry);
    for (const w of this._waiters.slice()) {
      if (w.match(entry, this.events.length - 1)) {
        this._waiters.splice(this._waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(entry);
      }
    }
  }

  mark() {
    return this.events.length;
  }

  // Resolve with the first logged event called `name` (at index >= since,
  // matching pred), or null after timeoutMs.
  waitEvent(name, options) {
    options = options || {};
    const since = options.since || 0;
    const pred = options.pred || (() => true);
    const names = Array.isArray(name) ? name : [name];
    const match = (e, i) => i >= since && names.includes(e.event) && pred(e);
    for (let i = since; i < this.events.length; i++) {
      if (match(this.events[i], i)) return Promise.resolve(this.events[i]);
    }
    return new Promise((resolve) => {
      const w = { match, resolve };
      w.timer = setTimeout(() => {
        this._waiters.splice(this._waiters.indexOf(w), 1);
        resolve(null);
      }, options.timeout == null ? 5000 : options.timeout);
      this._waiters.push(w);
    });
  }

  // Resolve when pred() becomes true (polled), or with false after timeoutMs.
  async until(pred, timeoutMs) {
    const end = Date.now() + (timeoutMs == null ? 3000 : timeoutMs);
    while (Date.now() < end) {
      if (pred()) return true;
      await sleep(10);
    }
    return !!pred();
  }

  eventNames() {
    return this.events.map((e) => e.event);
  }

  _onFrame(message) {
    let m = message;
    if (typeof m !== 'string') {
      try { m = Buffer.from(m).toString('utf8'); } catch (e) { m = String(m); }
    }
    this.frames.push(m);
  }

  _listen() {
    const s = this.socket;
    if (this.version === 14) {
      s.on('connect', (status) => this._log('connect', { status: statusJson(status) }));
      s.on('connectAbort', (code, reason) => this._log('connectAbort', { code, reason: jsonable(reason) }));
      s.on('disconnect', (code, reason) => this._log('disconnect', { code, reason: jsonable(reason) }));
      s.on('close', (code, reason) => this._log('close', { code, reason: jsonable(reason) }));
      s.on('error', (err) => this._log('error', { error: errJson(err) }));
      s.on('kickOut', (message, channel) => this._log('kickOut', { message: jsonable(message), channel }));
      s.on('subscribe', (channel) => this._log('subscribe', { channel }));
      s.on('subscribeFail', (err, channel) => this._log('subscribeFail', { channel, error: errJson(err) }));
      s.on('unsubscribe', (channel) => this._log('unsubscribe', { channel }));
      s.on('raw', (message) => this._log('raw', { message: jsonable(message) }));
      s.on('message', (message) => this._onFrame(message));
      s.on('authenticate', (signed) => this._log('authenticate', { signedAuthToken: signed }));
      s.on('deauthenticate', (oldSigned) => this._log('deauthenticate', { oldSignedAuthToken: jsonable(oldSigned) }));
      s.on('authStateChange', (d) => this._log('authStateChange', { oldState: d.oldState, newState: d.newState }));
      s.on('removeAuthToken', (old) => this._log('removeAuthToken', { oldAuthToken: jsonable(old) }));
    } else {
      const consume = (name, fn) => {
        (async () => {
          for await (const x of s.listener(name)) {
            try { fn(x || {}); } catch (e) { /* keep consuming */ }
          }
        })();
      };
      consume('connect', (d) => {
        const status = Object.assign({}, d);
        delete status.processPendingSubscriptions;
        this._log('connect', { status: statusJson(status) });
      });
      consume('connectAbort', (d) => this._log('connectAbort', { code: d.code, reason: jsonable(d.reason) }));
      consume('disconnect', (d) => this._log('disconnect', { code: d.code, reason: jsonable(d.reason) }));
      consume('close', (d) => this._log('close', { code: d.code, reason: jsonable(d.reason) }));
      consume('error', (d) => this._log('error', { error: errJson(d.error) }));
      consume('kickOut', (d) => this._log('kickOut', { message: jsonable(d.message), channel: d.channel }));
      consume('subscribe', (d) => this._log('subscribe', { channel: d.channel }));
      consume('subscribeFail', (d) => this._log('subscribeFail', { channel: d.channel, error: errJson(d.error) }));
      consume('unsubscribe', (d) => this._log('unsubscribe', { channel: d.channel }));
      consume('raw', (d) => this._log('raw', { message: jsonable(d.message) }));
      consume('message', (d) => this._onFrame(d.message));
      consume('authenticate', (d) => this._log('authenticate', { signedAuthToken: d.signedAuthToken }));
      consume('deauthenticate', (d) => this._log('deauthenticate', { oldSignedAuthToken: jsonable(d.oldSignedAuthToken) }));
      consume('authStateChange', (d) => this._log('authStateChange', { oldState: d.oldAuthState, newState: d.newAuthState }));
      consume('removeAuthToken', (d) => this._log('removeAuthToken', { oldAuthToken: jsonable(d.oldAuthToken) }));
    }
  }

  // ---- connection -----------------------------------------------------

  get id() {
    return this.socket.id;
  }

  get state() {
    return this.socket.state;
  }

  // Wait for the first 'connect' (the handshake reply). Resolves with the
  // status object; rejects if the connection was aborted or timed out.
  async connected(timeoutMs) {
    const e = await this.waitEvent(['connect', 'connectAbort', 'disconnect', 'close'], { timeout: timeoutMs || 5000 });
    if (!e) throw new Error(this.name + ': no connect event within ' + (timeoutMs || 5000) + ' ms');
    if (e.event !== 'connect') {
      throw new Error(this.name + ': connection failed: ' + e.event + ' code=' + e.code + ' reason=' + JSON.stringify(e.reason));
    }
    return e.status;
  }

  disconnect(code, reason) {
    if (this.socket.state === 'closed') return;
    this.socket.disconnect(code, reason);
  }

  // Connect again (after a disconnect) and wait for the handshake: resolves
  // with the new status (rejects like connected()).
  async reconnect(timeoutMs) {
    const since = this.mark();
    this.socket.connect();
    const e = await this.waitEvent(['connect', 'connectAbort', 'disconnect', 'close'], { since, timeout: timeoutMs || 5000 });
    if (!e) throw new Error(this.name + ': no connect event within ' + (timeoutMs || 5000) + ' ms');
    if (e.event !== 'connect') {
      throw new Error(this.name + ': reconnection failed: ' + e.event + ' code=' + e.code + ' reason=' + JSON.stringify(e.reason));
    }
    return e.status;
  }

  // ---- authentication ---------------------------------------------------

  // The client's view: {authState, authToken (decoded), signedAuthToken}.
  authInfo() {
    return {
      authState: this.socket.authState,
      authToken: jsonable(this.socket.authToken),
      signedAuthToken: this.socket.signedAuthToken
    };
  }

  // The token in the client's storage (what the next #handshake sends), or null.
  storedToken() {
    const s = this.socket;
    if (this.version === 14) {
      return new Promise((resolve) => s.auth.loadToken(s.authTokenName, (err, t) => resolve(err ? null : t)));
    }
    return Promise.resolve(s.auth.loadToken(s.authTokenName)).then((t) => t, () => null);
  }

  // client.authenticate(signedToken): {data: authStatus} or {error[, data]}.
  authenticate(signedToken) {
    return new Promise((resolve) => {
      if (this.version === 14) {
        this.socket.authenticate(signedToken, (err, status) => {
          if (!err) {
            resolve({ data: statusJson(status) });
          } else {
            const out = { error: errJson(err) };
            if (status !== undefined) out.data = statusJson(status);
            resolve(out);
          }
        });
      } else {
        this.socket.authenticate(signedToken).then(
          (status) => resolve({ data: statusJson(status) }),
          (err) => resolve({ error: errJson(err) })
        );
      }
    });
  }

  // client.deauthenticate() (#removeAuthToken to the server, no reply).
  deauthenticate() {
    return new Promise((resolve) => {
      if (this.version === 14) this.socket.deauthenticate(() => resolve());
      else this.socket.deauthenticate().then(() => resolve(), () => resolve());
    });
  }

  destroy() {
    try {
      if (this.version === 14) {
        this.socket.destroy();
      } else {
        this.socket.disconnect();
        this.socket.closeAllListeners && this.socket.closeAllListeners();
      }
    } catch (e) { /* already gone */ }
  }

  // ---- events / RPC ---------------------------------------------------

  // Emit with an acknowledgement (v14 emit with callback, v20 invoke).
  invoke(event, data) {
    return new Promise((resolve) => {
      if (this.version === 14) {
        this.socket.emit(event, data, (err, d) => {
          resolve(v14Reply(err, d));
        });
      } else {
        this.socket.invoke(event, data).then(
          (d) => resolve({ data: jsonable(d) }),
          (err) => resolve({ error: errJson(err) })
        );
      }
    });
  }

  // Emit without acknowledgement (v14 emit, v20 transmit).
  transmit(event, data) {
    if (this.version === 14) this.socket.emit(event, data);
    else this.socket.transmit(event, data);
  }

  // Handle a server-originated event. fn(data) may return a value or a
  // Promise (the reply when the server asked for one) or throw/reject (an
  // error reply). Everything received is logged in this.received.
  handle(event, fn) {
    const run = async (data) => fn(data);
    if (this.version === 14) {
      this.socket.on(event, (data, res) => {
        this.received.push({ event, data: jsonable(data) });
        run(data).then((result) => res(null, result), (err) => res(err));
      });
    } else {
      (async () => {
        for await (const req of this.socket.procedure(event)) {
          this.received.push({ event, data: jsonable(req.data), kind: 'invoke' });
          run(req.data).then((result) => req.end(result), (err) => req.error(err));
        }
      })();
      (async () => {
        for await (const data of this.socket.receiver(event)) {
          this.received.push({ event, data: jsonable(data), kind: 'transmit' });
          run(data).catch(() => {});
        }
      })();
    }
  }

  // ---- pub/sub --------------------------------------------------------

  // Subscribe and start collecting messages of that channel (in
  // this.channelMessages and via onMessage). Returns the channel object.
  subscribe(channel, options, onMessage) {
    const ch = this.socket.subscribe(channel, options);
    const deliver = (data) => {
      const entry = { channel, data: jsonable(data) };
      this.channelMessages.push(entry);
      if (onMessage) onMessage(entry);
    };
    if (this.version === 14) {
      ch.watch(deliver);
    } else {
      (async () => {
        for await (const data of ch) deliver(data);
      })();
    }
    return ch;
  }

  // Subscribe and wait for the outcome: {subscribed: true} or
  // {subscribed: false, error} (or {subscribed: false, timeout: true}).
  async subscribeAndWait(channel, options, onMessage, timeoutMs) {
    const since = this.mark();
    this.subscribe(channel, options, onMessage);
    const e = await this.waitEvent(['subscribe', 'subscribeFail'], {
      since, timeout: timeoutMs || 3000, pred: (x) => x.channel === channel
    });
    if (!e) return { channel, subscribed: false, timeout: true };
    if (e.event === 'subscribe') return { channel, subscribed: true };
    return { channel, subscribed: false, error: e.error };
  }

  unsubscribe(channel) {
    this.socket.unsubscribe(channel);
  }

  isSubscribed(channel, includePending) {
    return !!this.socket.isSubscribed(channel, !!includePending);
  }

  messagesOf(channel) {
    return this.channelMessages.filter((m) => m.channel === channel).map((m) => m.data);
  }

  // Every inbound frame that is JSON, decoded, batches flattened, in order.
  packets() {
    const out = [];
    for (const f of this.frames) {
      let packets;
      try { packets = JSON.parse(f); } catch (e) { continue; }
      if (!Array.isArray(packets)) packets = [packets];
      for (const p of packets) if (p && typeof p === 'object') out.push(p);
    }
    return out;
  }

  // The cid the next emit/invoke/publish will get (both clients count in
  // socket._cid).
  nextCid() {
    return this.socket._cid;
  }

  // #publish frames for `channel` that actually came over the wire (the
  // clients drop publishes for channels they are not subscribed to, so this
  // is what shows whether the SERVER still delivers).
  publishFramesOf(channel) {
    return this.packets()
      .filter((p) => p.event === '#publish' && p.data && p.data.channel === channel)
      .map((p) => p.data.data);
  }

  // Publish with an acknowledgement.
  publish(channel, data) {
    return new Promise((resolve) => {
      if (this.version === 14) {
        this.socket.publish(channel, data, (err, d) => {
          resolve(v14Reply(err, d));
        });
      } else {
        this.socket.invokePublish(channel, data).then(
          (d) => resolve({ data: jsonable(d) }),
          (err) => resolve({ error: errJson(err) })
        );
      }
    });
  }

  transmitPublish(channel, data) {
    if (this.version === 14) this.socket.publish(channel, data);
    else this.socket.transmitPublish(channel, data);
  }
}

// A raw WebSocket (the client's own `ws`), for scenarios below the SC layer.
// Logs messages and the close code/reason.
class RawClient {
  // options: {rejectUnauthorized, wsOptions (extra ws options, e.g. {origin})}
  constructor(version, url, options) {
    options = options || {};
    const WS = loadWs(version);
    const wsOpts = Object.assign({}, options.wsOptions || {});
    if (url.startsWith('wss:') && options.rejectUnauthorized !== true) wsOpts.rejectUnauthorized = false;
    this.t0 = Date.now();
    this.messages = [];
    this.openedAt = null;
    this.closed = null;
    this.errors = [];
    this.http = null; // {statusCode, statusMessage, body} of a refused upgrade
    this.ws = new WS(url, wsOpts);
    this._closedP = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason == null ? '' : reason.toString(), t: Date.now() - this.t0 };
        resolve(this.closed);
      });
    });
    this._openP = new Promise((resolve) => {
      this.ws.on('open', () => { this.openedAt = Date.now() - this.t0; resolve(true); });
      this.ws.on('unexpected-response', (req, res) => {
        this.errors.push('unexpected-response ' + res.statusCode);
        const http = { statusCode: res.statusCode, statusMessage: res.statusMessage, body: '' };
        this._httpP = new Promise((done) => {
          res.setEncoding('utf8');
          res.on('data', (chunk) => { http.body += chunk; });
          res.on('end', () => done(http));
          res.on('error', () => done(http));
          res.on('close', () => done(http));
        });
        this.http = http;
        resolve(false);
      });
      this.ws.on('error', (e) => { this.errors.push(String(e && e.message)); resolve(false); });
    });
    this.ws.on('message', (m) => this.messages.push(m.toString()));
  }

  opened(timeoutMs) {
    return Promise.race([this._openP, sleep(timeoutMs || 5000).then(() => false)]);
  }

  // The refused upgrade's HTTP response with its whole body, or null.
  httpResponse(timeoutMs) {
    if (!this._httpP) return Promise.resolve(this.http);
    return Promise.race([this._httpP, sleep(timeoutMs || 2000).then(() => this.http)]);
  }

  closedWithin(timeoutMs) {
    return Promise.race([this._closedP, sleep(timeoutMs || 5000).then(() => null)]);
  }

  send(m) {
    this.ws.send(m);
  }

  terminate() {
    try { this.ws.terminate(); } catch (e) { /* ignore */ }
  }
}

// A copy of recorded client events without their timestamps, for results.
function strip(events) {
  return events.map((e) => {
    const o = Object.assign({}, e);
    delete o.t;
    return o;
  });
}

module.exports = { Client, RawClient, errJson, jsonable, sleep, strip, urlOptions, loadWs, loadClientLib };
