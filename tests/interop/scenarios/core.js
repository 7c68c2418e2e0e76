'use strict';
// Core scenarios: handshake, emit/ack, server invoke/emit, server disconnect,
// handshake timeout, heartbeat. Each is async (ctx) => JSON-able result; it
// reports what the client observed and leaves the judging to the Python test.
// The server side is tests/interop_app.py (handlers named below).

// Handshake: the status the client got in its 'connect' event.
async function handshake(ctx) {
  const c = await ctx.connectedClient();
  const result = { status: c.status, id: c.id, state: c.state };
  c.disconnect();
  return result;
}

// Client emits with and without acknowledgement.
// params: ackTimeout (ms, default 1000) — the client's ackTimeout, which is
// what turns the unanswered 'unhandledEvent' into a TimeoutError.
async function emitAck(ctx) {
  const ackTimeout = ctx.params.ackTimeout || 1000;
  const c = await ctx.connectedClient({ clientOptions: { ackTimeout } });
  const r = {};
  r.echo = await c.invoke('echo', { msg: 'hi', n: 1 });
  r.echoNoData = await c.invoke('echo');
  r.fail = await c.invoke('fail', 1);
  r.failString = await c.invoke('failString', {});
  c.transmit('noack', { fire: 'and forget', n: 1 });
  // Same connection, so the server saw 'noack' before this:
  r.noackReceived = await c.invoke('noackReceived');
  const t0 = Date.now();
  r.unhandled = await c.invoke('unhandledEvent', 'anyone?');
  r.unhandledMs = Date.now() - t0;
  r.events = c.eventNames();
  c.disconnect();
  return r;
}

// The server calls the client: socket.invoke (via 'pleaseInvoke') and
// socket.emit with/without callback (via 'pleaseEmit'). The client answers
// 'clientProc' with {got: data} and 'clientProcErr' with a
// ClientRefusalError (extra: 42).
async function serverCall(ctx) {
  const c = ctx.client();
  c.handle('clientProc', (data) => ({ got: data }));
  c.handle('clientProcErr', () => {
    const e = new Error('client refuses');
    e.name = 'ClientRefusalError';
    e.extra = 42;
    throw e;
  });
  c.handle('srvNoAck', () => undefined);
  c.status = await c.connected();
  const r = {};
  r.invoke = await c.invoke('pleaseInvoke', { event: 'clientProc', data: { b: 2 } });
  r.invokeError = await c.invoke('pleaseInvoke', { event: 'clientProcErr', data: { c: 3 } });
  r.emitCallback = await c.invoke('pleaseEmit', { event: 'clientProc', data: { d: 4 } });
  r.emitCallbackError = await c.invoke('pleaseEmit', { event: 'clientProcErr', data: { e: 5 } });
  r.emitNoAck = await c.invoke('pleaseEmit', { event: 'srvNoAck', data: { a: 1 }, noAck: true });
  await c.until(() => c.received.some((x) => x.event === 'srvNoAck'), 2000);
  r.received = c.received;
  r.events = c.eventNames();
  c.disconnect();
  return r;
}

// The server disconnects the socket: socket.disconnect(code, reason).
// params: code (default 4321), reason (default 'custom reason').
async function serverDisconnect(ctx) {
  const code = ctx.params.code == null ? 4321 : ctx.params.code;
  const reason = ctx.params.reason == null ? 'custom reason' : ctx.params.reason;
  const c = await ctx.connectedClient();
  const since = c.mark();
  c.transmit('pleaseDisconnect', { code, reason });
  const d = await c.waitEvent('disconnect', { since, timeout: 5000 });
  await ctx.sleep(100);
  return {
    disconnect: d ? { code: d.code, reason: d.reason } : null,
    events: c.events.slice(since).map((e) => {
      const o = Object.assign({}, e);
      delete o.t;
      return o;
    }),
    state: c.state
  };
}

// A raw WebSocket that never sends #handshake: record what the server sends
// and the close code/reason. params: wait (ms to wait for the close, default 5000).
async function handshakeTimeout(ctx) {
  const ws = ctx.raw();
  const opened = await ws.opened(5000);
  const closed = await ws.closedWithin(ctx.params.wait || 5000);
  return {
    opened,
    openedAt: ws.openedAt,
    closed, // {code, reason, t} or null
    closedAfterMs: closed && ws.openedAt != null ? closed.t - ws.openedAt : null,
    messages: ws.messages,
    errors: ws.errors
  };
}

// Stay connected for params.duration ms (default 1500) with default client
// options, count the heartbeat frames received, then ask the server for
// 'socketInfo' (its view of this socket, including protocolVersion).
async function staysConnected(ctx) {
  const duration = ctx.params.duration || 1500;
  const c = await ctx.connectedClient();
  const since = c.mark();
  await ctx.sleep(duration);
  const info = await c.invoke('socketInfo');
  const r = {
    status: c.status,
    state: c.state,
    badEvents: c.events.slice(since).filter((e) => ['disconnect', 'close', 'connectAbort', 'error', 'connect'].includes(e.event)),
    pings: {
      v1: c.frames.filter((f) => f === '#1').length,
      v2: c.frames.filter((f) => f === '').length
    },
    frames: c.frames.length,
    socketInfo: info
  };
  c.disconnect();
  return r;
}

module.exports = { handshake, emitAck, serverCall, serverDisconnect, handshakeTimeout, staysConnected };
