'use strict';
// Middleware scenarios. The middleware itself is installed by the Python
// test on the server (server.add_middleware); these scenarios only act and
// report what the client observed, on its API and on the wire.

const { strip } = require('../adapter');

// Subscribe to each of params.channels (default ['allowed', 'forbidden',
// 'silent']) one after the other.
async function subscribeMiddleware(ctx) {
  const channels = ctx.params.channels || ['allowed', 'forbidden', 'silent'];
  const c = await ctx.connectedClient();
  const results = [];
  for (const ch of channels) results.push(await c.subscribeAndWait(ch));
  const info = await c.invoke('socketInfo');
  const r = {
    results,
    subscribeFail: strip(c.events.filter((e) => e.event === 'subscribeFail')),
    clientSubscribed: channels.filter((ch) => c.isSubscribed(ch, true)),
    serverSubscriptions: info.data ? info.data.subscriptions : info,
    state: c.state
  };
  c.disconnect();
  return r;
}

// Publish with an ack to params.channel ('pubChan', subscribed first) and to
// params.blocked ('blockedPub'). Reports the client API's result and the
// reply packets on the wire.
async function publishMiddleware(ctx) {
  const channel = ctx.params.channel || 'pubChan';
  const blocked = ctx.params.blocked || 'blockedPub';
  const c = await ctx.connectedClient();
  const subscribe = await c.subscribeAndWait(channel);
  const cidOk = c.nextCid();
  const allowed = await c.publish(channel, { x: 1 });
  const cidBlocked = c.nextCid();
  const blockedAck = await c.publish(blocked, { x: 2 });
  // (The v20 client logs frames asynchronously: wait for the replies.)
  await c.until(() => c.messagesOf(channel).length >= 1 &&
    c.packets().some((p) => p.rid === cidBlocked), 2000);
  await ctx.sleep(100);
  const packets = c.packets();
  const r = {
    subscribe,
    allowed,
    blocked: blockedAck,
    okReply: packets.find((p) => p.rid === cidOk) || null,
    blockedReply: packets.find((p) => p.rid === cidBlocked) || null,
    messages: c.messagesOf(channel),
    blockedFrames: c.publishFramesOf(blocked),
    state: c.state
  };
  c.disconnect();
  return r;
}

// Emit with an ack: 'echo' (allowed), params.blockedEvent ('forbiddenEvent')
// and params.silentEvent ('silentEvent'); then a transmit of 'noack' and a
// round trip.
async function emitMiddleware(ctx) {
  const blockedEvent = ctx.params.blockedEvent || 'forbiddenEvent';
  const silentEvent = ctx.params.silentEvent || 'silentEvent';
  const c = await ctx.connectedClient({ clientOptions: { ackTimeout: ctx.params.ackTimeout || 3000 } });
  const r = {};
  r.echo = await c.invoke('echo', { hello: 'middleware' });
  const cid = c.nextCid();
  r.blocked = await c.invoke(blockedEvent, 2);
  await c.until(() => c.packets().some((p) => p.rid === cid), 1000);
  r.blockedReply = c.packets().find((p) => p.rid === cid) || null;
  r.silent = await c.invoke(silentEvent, 3);
  c.transmit('noack', { through: 'middleware' });
  r.noackReceived = await c.invoke('noackReceived');
  r.state = c.state;
  r.events = c.eventNames();
  c.disconnect();
  return r;
}

// Try to connect and report what happened. params:
//   query   appended to the URL ('case=custom' -> ...?case=custom)
//   origin  Origin header for both the client and the raw WebSocket
//   raw     also try a raw WebSocket (default true), to see the HTTP status
//   wait    ms to keep collecting client events after the outcome (default 300)
async function connectOutcome(ctx) {
  let url = ctx.url;
  if (ctx.params.query) url += (url.includes('?') ? '&' : '?') + ctx.params.query;
  const wsOptions = ctx.params.origin ? { origin: ctx.params.origin } : undefined;
  const r = {};

  const c = ctx.client({ url, wsOptions });
  const first = await c.waitEvent(['connect', 'connectAbort', 'disconnect', 'close'], { timeout: 5000 });
  await ctx.sleep(ctx.params.wait == null ? 300 : ctx.params.wait);
  r.outcome = first ? first.event : null;
  r.code = first ? (first.event === 'connect' ? null : first.code) : null;
  r.reason = first && first.event !== 'connect' ? first.reason : null;
  r.status = first && first.event === 'connect' ? first.status : null;
  r.events = strip(c.events);
  r.packets = c.packets();
  r.state = c.state;
  c.destroy();

  if (ctx.params.raw !== false) {
    const ws = ctx.raw({ url, wsOptions });
    const opened = await ws.opened(5000);
    const http = await ws.httpResponse(2000);
    r.raw = { opened, http, errors: ws.errors };
    ws.terminate();
  }
  return r;
}

module.exports = { subscribeMiddleware, publishMiddleware, emitMiddleware, connectOutcome };
