'use strict';
// Authentication scenarios. Server side: tests/interop_app.py ('login',
// 'authInfo', 'pleaseDeauthenticate'). Tokens made by the Python test are
// passed in params; a token given to ctx.client({authToken}) is put in the
// client's own token storage before it connects, so its #handshake carries it.

const { strip } = require('../adapter');

// Auth-related client events only (no 'connect'/'disconnect' noise).
const AUTH_EVENTS = ['authenticate', 'deauthenticate', 'authStateChange', 'removeAuthToken', 'error'];

function authEvents(c, since) {
  return strip(c.events.slice(since || 0).filter((e) => AUTH_EVENTS.includes(e.event)));
}

function replyData(r) {
  return r && r.data !== undefined ? r.data : r;
}

// The order ON THE WIRE of the #setAuthToken / #removeAuthToken events and
// the reply to the call with cid `cid`: a list of 'setAuthToken',
// 'removeAuthToken' and 'reply'.
function wireOrder(c, cid, since) {
  const out = [];
  for (const p of c.packets().slice(since || 0)) {
    if (p.event === '#setAuthToken') out.push('setAuthToken');
    else if (p.event === '#removeAuthToken') out.push('removeAuthToken');
    else if (p.rid === cid) out.push('reply');
  }
  return out;
}

// Log in through the server's 'login' handler (socket.set_auth_token(payload)),
// then disconnect and reconnect the SAME client, whose #handshake now sends
// the stored token; finally a NEW client is given that token.
// params: payload (default {username: 'alice'}).
async function loginReconnect(ctx) {
  const payload = ctx.params.payload || { username: 'alice' };
  const c = await ctx.connectedClient();
  const r = { status: c.status };
  const since = c.mark();
  const packetsBefore = c.packets().length;
  const cid = c.nextCid();
  r.login = await c.invoke('login', payload);
  const auth = await c.waitEvent('authenticate', { since, timeout: 3000 });
  r.authenticateEvent = auth ? auth.signedAuthToken : null;
  r.loginWireOrder = wireOrder(c, cid, packetsBefore);
  r.afterLogin = c.authInfo();
  r.storedAfterLogin = await c.storedToken();
  r.serverAfterLogin = replyData(await c.invoke('authInfo'));
  r.loginEvents = authEvents(c, since);

  const sinceDisconnect = c.mark();
  c.disconnect();
  await c.waitEvent(['disconnect', 'close'], { since: sinceDisconnect, timeout: 3000 });
  r.reconnectStatus = await c.reconnect();
  r.afterReconnect = c.authInfo();
  r.serverAfterReconnect = replyData(await c.invoke('authInfo'));
  r.reconnectId = c.id;
  c.disconnect();

  // A second client given the token at start-up.
  const c2 = ctx.client({ name: 'second', authToken: r.storedAfterLogin });
  r.secondStatus = await c2.connected();
  r.secondAuth = c2.authInfo();
  r.serverSecond = replyData(await c2.invoke('authInfo'));
  r.secondId = c2.id;
  c2.disconnect();
  return r;
}

// Connect with params.token in the client's token storage; report the
// handshake status, the auth events and what the client still stores.
async function handshakeWithToken(ctx) {
  const c = ctx.client({ authToken: ctx.params.token });
  const status = await c.connected();
  await c.until(() => c.events.some((e) => e.event === 'removeAuthToken'), ctx.params.settle || 300);
  const r = {
    status,
    id: c.id,
    auth: c.authInfo(),
    stored: await c.storedToken(),
    events: authEvents(c),
    server: replyData(await c.invoke('authInfo'))
  };
  // Was #removeAuthToken sent before the handshake reply (rid 1)?
  const order = [];
  for (const p of c.packets()) {
    if (p.event === '#removeAuthToken') order.push('removeAuthToken');
    else if (p.rid === 1) order.push('handshake');
  }
  r.handshakeWireOrder = order;
  c.disconnect();
  return r;
}

// client.authenticate(params.token) on an unauthenticated connection, then
// client.deauthenticate(), authenticate again, then authenticate with
// params.badToken (default 'garbage-token').
async function clientAuthenticate(ctx) {
  const token = ctx.params.token;
  const badToken = ctx.params.badToken == null ? 'garbage-token' : ctx.params.badToken;
  const c = await ctx.connectedClient();
  const r = { status: c.status };

  let since = c.mark();
  r.valid = await c.authenticate(token);
  await c.waitEvent('authenticate', { since, timeout: 2000 });
  r.afterValid = c.authInfo();
  r.storedAfterValid = await c.storedToken();
  r.serverAfterValid = replyData(await c.invoke('authInfo'));
  r.validEvents = authEvents(c, since);

  since = c.mark();
  await c.deauthenticate();
  r.afterClientDeauth = c.authInfo();
  r.storedAfterClientDeauth = await c.storedToken();
  // #removeAuthToken has no cid; this round trip comes after it.
  r.serverAfterClientDeauth = replyData(await c.invoke('authInfo'));
  r.clientDeauthEvents = authEvents(c, since);

  r.again = await c.authenticate(token);
  r.serverAfterAgain = replyData(await c.invoke('authInfo'));

  since = c.mark();
  const packetsBefore = c.packets().length;
  const cid = c.nextCid();
  r.invalid = await c.authenticate(badToken);
  await c.until(() => c.events.slice(since).some((e) => e.event === 'deauthenticate'), 1000);
  r.invalidWireOrder = wireOrder(c, cid, packetsBefore);
  r.afterInvalid = c.authInfo();
  r.storedAfterInvalid = await c.storedToken();
  r.serverAfterInvalid = replyData(await c.invoke('authInfo'));
  r.invalidEvents = authEvents(c, since);
  r.state = c.state;
  c.disconnect();
  return r;
}

// Log in ('login'), then the server calls socket.deauthenticate()
// ('pleaseDeauthenticate'): the client must drop its token.
async function serverDeauthenticate(ctx) {
  const payload = ctx.params.payload || { username: 'bob' };
  const c = await ctx.connectedClient();
  const r = {};
  r.login = await c.invoke('login', payload);
  await c.waitEvent('authenticate', { timeout: 3000 });
  r.afterLogin = c.authInfo();
  const since = c.mark();
  const packetsBefore = c.packets().length;
  const cid = c.nextCid();
  r.please = await c.invoke('pleaseDeauthenticate');
  const deauth = await c.waitEvent('deauthenticate', { since, timeout: 3000 });
  await c.until(() => c.events.slice(since).some((e) => e.event === 'removeAuthToken'), 1000);
  r.deauthenticateEvent = deauth ? { oldSignedAuthToken: deauth.oldSignedAuthToken } : null;
  r.wireOrder = wireOrder(c, cid, packetsBefore);
  r.afterDeauth = c.authInfo();
  r.stored = await c.storedToken();
  r.server = replyData(await c.invoke('authInfo'));
  r.events = authEvents(c, since);
  r.state = c.state;
  c.disconnect();
  return r;
}

module.exports = { loginReconnect, handshakeWithToken, clientAuthenticate, serverDeauthenticate };
