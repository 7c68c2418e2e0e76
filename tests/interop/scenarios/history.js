'use strict';
// Scenarios for scserver's channel history and recovery, with the helper
// js/scserver-recovery.mjs: two server processes on one Redis, both run
// tests/history_app.py with --history-channels (see
// tests/test_history_interop.py).

const path = require('path');
const { pathToFileURL } = require('url');

const HELPER = path.join(__dirname, '..', '..', '..', 'js', 'scserver-recovery.mjs');

// The JSON codec the client of `version` uses by default (sc-formatter).
function formatterOf(version) {
  const pkgDir = path.dirname(require.resolve((version === 14 ? 'sc14' : 'sc20') + '/package.json'));
  return require(require.resolve('sc-formatter', { paths: [pkgDir] }));
}

// A client of the run's version on params.urls[0] with the helper tracking
// params.channel subscribes; a plain client on params.urls[1] publishes
// params.before publications; the first server drops the first client
// (dropMe, code 4300); while it is away (its reconnection delay is
// params.delay ms) the plain client publishes params.missed publications
// through the second server; the client reconnects and subscribes again on
// its own; then params.after more are published. Reports what the
// recovering client received (data and position), the positions, the
// subscribe replies it saw, the resyncs, and whether every missed
// publication was acknowledged before the client was back.
async function recoverAfterDrop(ctx) {
  const [urlA, urlB] = ctx.params.urls;
  const channel = ctx.params.channel || 'h.recover';
  const delay = ctx.params.delay || 1500;
  const { createRecovery } = await import(pathToFileURL(HELPER).href);
  const resyncs = [];
  const recovery = createRecovery({
    codec: formatterOf(ctx.version),
    onResync: (name, position) => resyncs.push({ channel: name, position })
  });
  const c = await ctx.connectedClient({ url: urlA, name: 'recovering', clientOptions: {
    codecEngine: recovery.codecEngine, autoReconnect: true,
    autoReconnectOptions: { initialDelay: delay, randomness: 0, multiplier: 1, maxDelay: delay } } });
  recovery.track(channel);
  const s = await c.subscribeAndWait(channel);
  if (!s.subscribed) throw new Error('subscription failed: ' + JSON.stringify(s));
  const firstPosition = recovery.position(channel);
  // A client that does not opt in, on the same channel and process.
  const plain = await ctx.connectedClient({ url: urlA, name: 'plain' });
  const p = await plain.subscribeAndWait(channel);
  if (!p.subscribed) throw new Error('plain subscription failed: ' + JSON.stringify(p));
  const pub = await ctx.connectedClient({ url: urlB, name: 'publisher' });
  let seq = 0;
  const publishN = async (n) => {
    for (let i = 0; i < n; i++) {
      const ack = await pub.publish(channel, { seq: seq++ });
      if (ack.error) throw new Error('publish failed: ' + JSON.stringify(ack));
    }
  };
  await publishN(ctx.params.before || 2);
  await c.until(() => c.messagesOf(channel).length >= seq, 5000);
  const mark = c.mark();
  c.transmit('dropMe');
  const gone = await c.waitEvent(['disconnect', 'close'], { since: mark, timeout: 5000 });
  if (!gone) throw new Error('the server did not drop the client');
  await publishN(ctx.params.missed || 5);
  const missedDone = c.socket.state !== 'open';
  const back = await c.waitEvent('subscribe', { since: mark, timeout: delay + 5000 });
  if (!back) throw new Error('the client did not subscribe again');
  await publishN(ctx.params.after || 2);
  await c.until(() => c.messagesOf(channel).length >= seq, 3000);
  await plain.until(() => plain.messagesOf(channel).length >= seq, 3000);
  await ctx.sleep(200);
  return {
    disconnectCode: gone.code,
    missedWhileAway: missedDone,
    firstPosition,
    position: recovery.position(channel),
    published: seq,
    received: c.messagesOf(channel),
    resyncs,
    // Every #publish frame the plain client got, as received.
    plainFrames: plain.frames.filter((f) => f.indexOf('"#publish"') >= 0)
  };
}

module.exports = { recoverAfterDrop };
