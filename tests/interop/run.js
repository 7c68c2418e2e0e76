#!/usr/bin/env node
'use strict';
// Run one interop scenario with one official SocketCluster client.
//
//   node run.js <scenario> <14|20> <ws://host:port/path/> [json-params]
//
// Prints exactly ONE line of JSON on stdout and exits:
//   {"ok":true, "scenario":..., "version":..., ...the scenario's result}
//   {"ok":false, "scenario":..., "version":..., "error":"...", "stack":"..."}
// Exit status 0 when ok, 1 otherwise. Anything else (client warnings) goes to
// stderr. A hard overall timeout (params.timeout, seconds, default 20) ends
// the run with {"ok":false,"error":"timeout ..."} so it can never hang.
//
// Common params (all optional):
//   timeout            hard overall limit in seconds (default 20)
//   clientOptions      extra options merged into every client's create()
//                      options (e.g. {"ackTimeout": 500})
//   clientOptionsByVersion  {"14": {...}, "20": {...}}: extra options for the
//                      clients of one version only (e.g. {"20": {"protocolVersion": 1}};
//                      note the v14 client passes ALL its options on to `ws`,
//                      where `protocolVersion` means the WebSocket version)
//   rejectUnauthorized for wss:// URLs; default false (self-signed test certs)
// Scenario-specific params are documented in scenarios/*.js.
//
// `node run.js --list` prints the scenario names.

const { Client, RawClient, sleep } = require('./adapter');

const scenarios = Object.assign({},
  require('./scenarios/core'),
  require('./scenarios/pubsub'),
  require('./scenarios/auth'),
  require('./scenarios/middleware'),
  require('./scenarios/scale'),
  require('./scenarios/presence'),
  require('./scenarios/history'));

// Clients' console.log must never pollute our one-line stdout protocol.
console.log = (...args) => console.error(...args);
console.info = console.log;

let finished = false;
const clients = [];

function emit(result, code) {
  if (finished) return;
  finished = true;
  let line;
  try {
    line = JSON.stringify(result);
  } catch (e) {
    line = JSON.stringify({ ok: false, error: 'result not serialisable: ' + e.message });
    code = 1;
  }
  for (const c of clients) {
    try { c.destroy ? c.destroy() : c.terminate(); } catch (e) { /* ignore */ }
  }
  process.stdout.write(line + '\n', () => process.exit(code));
  // In case the write callback never fires.
  setTimeout(() => process.exit(code), 2000).unref();
}

function fail(err, base) {
  emit(Object.assign({}, base, {
    ok: false,
    error: (err && err.message) ? err.message : String(err),
    stack: err && err.stack ? String(err.stack) : undefined
  }), 1);
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === '--list') {
    process.stdout.write(JSON.stringify({ ok: true, scenarios: Object.keys(scenarios).sort() }) + '\n');
    return;
  }
  const [name, versionArg, url, paramsJson] = argv;
  const base = { scenario: name, version: Number(versionArg) };
  let params;
  try {
    if (!name || !versionArg || !url) {
      throw new Error('usage: node run.js <scenario> <14|20> <url> [json-params]');
    }
    params = paramsJson ? JSON.parse(paramsJson) : {};
    if (params === null || typeof params !== 'object') throw new Error('params must be a JSON object');
  } catch (e) {
    return fail(e, base);
  }
  const timeoutS = params.timeout == null ? 20 : Number(params.timeout);
  setTimeout(() => {
    fail(new Error('timeout: scenario ' + name + ' did not finish within ' + timeoutS + ' s'), base);
  }, timeoutS * 1000);

  process.on('uncaughtException', (e) => fail(e, base));
  process.on('unhandledRejection', (e) => fail(e, base));

  const fn = scenarios[name];
  if (!fn) return fail(new Error('unknown scenario ' + JSON.stringify(name) + '; known: ' + Object.keys(scenarios).sort().join(', ')), base);
  const version = Number(versionArg);
  if (version !== 14 && version !== 20) return fail(new Error('version must be 14 or 20'), base);

  const ctx = {
    version,
    url,
    params,
    sleep,
    // A client of `v` (default: the run's version), not yet necessarily connected.
    // opts: version, url, name, clientOptions, wsOptions (extra ws options,
    // e.g. {origin}), authToken (a signed token put in the client's token
    // storage before it connects).
    client(opts) {
      opts = opts || {};
      const v = opts.version || version;
      const c = new Client(v, opts.url || url, {
        name: opts.name,
        authToken: opts.authToken,
        wsOptions: opts.wsOptions,
        rejectUnauthorized: params.rejectUnauthorized,
        clientOptions: Object.assign({}, params.clientOptions || {},
          (params.clientOptionsByVersion || {})[String(v)] || {}, opts.clientOptions || {})
      });
      clients.push(c);
      return c;
    },
    // A client that has completed the handshake.
    async connectedClient(opts) {
      const c = ctx.client(opts);
      c.status = await c.connected((opts && opts.connectTimeout) || 5000);
      return c;
    },
    raw(opts) {
      opts = opts || {};
      const r = new RawClient(opts.version || version, opts.url || url, {
        rejectUnauthorized: params.rejectUnauthorized, wsOptions: opts.wsOptions
      });
      clients.push(r);
      return r;
    }
  };

  try {
    const result = await fn(ctx);
    emit(Object.assign({ ok: true }, base, result || {}), 0);
  } catch (e) {
    fail(e, base);
  }
}

main();
