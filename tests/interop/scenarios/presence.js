'use strict';
// Presence scenarios (scserver's own #presence procedure, invoked by the
// unchanged official clients). Server side: tests/interop_app.py ('login')
// on a server with presence_channels and allow_client_presence (see
// tests/test_presence_interop.py).

// Client A (the run's version) logs in as params.user ('alice'); client B
// (the other version) stays anonymous. Both subscribe to params.channel
// ('room.1'). A asks '#presence' for it (as an object), B for it (as a bare
// string); A asks for a channel it is not subscribed to (params.other,
// 'room.2'); B unsubscribes and A asks again. Reports every reply, both
// socket ids, and every frame A received that is not a reply (none may be
// a presence notice).
async function presenceInvoke(ctx) {
  const channel = ctx.params.channel || 'room.1';
  const other = ctx.params.other || 'room.2';
  const user = ctx.params.user || 'alice';
  const otherVersion = ctx.version === 14 ? 20 : 14;
  const a = await ctx.connectedClient({ name: 'a' });
  const b = await ctx.connectedClient({ name: 'b', version: otherVersion });
  const login = await a.invoke('login', { sub: user });
  const subA = await a.subscribeAndWait(channel);
  const subB = await b.subscribeAndWait(channel);
  const both = await a.invoke('#presence', { channel });
  const fromB = await b.invoke('#presence', channel);
  const notSubscribed = await a.invoke('#presence', { channel: other });
  const reserved = await a.subscribeAndWait('#scserver/presence:' + channel, undefined, undefined, 2000)
    .catch((e) => ({ error: String(e && e.message) }));
  b.unsubscribe(channel);
  await ctx.sleep(200);
  const afterLeave = await a.invoke('#presence', { channel });
  const frames = a.packets().filter((p) => p.event && p.event !== '#setAuthToken')
    .map((p) => p.event + ':' + ((p.data && p.data.channel) || ''));
  const r = {
    login, subA, subB, both, fromB, notSubscribed, reserved, afterLeave,
    ids: { a: a.id, b: b.id }, frames
  };
  a.disconnect();
  b.disconnect();
  return r;
}

// One client asks '#presence' for a subscribed channel on a server whose
// presence middleware (or option) refuses it: reports the reply.
async function presenceRefused(ctx) {
  const channel = ctx.params.channel || 'room.1';
  const c = await ctx.connectedClient();
  const sub = await c.subscribeAndWait(channel);
  const reply = await c.invoke('#presence', { channel });
  c.disconnect();
  return { sub, reply };
}

module.exports = { presenceInvoke, presenceRefused };
