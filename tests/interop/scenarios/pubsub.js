'use strict';
// Pub/sub scenarios. Server side: tests/interop_app.py ('pleasePublish',
// 'pleaseKickOut', 'socketInfo').

const { strip } = require('../adapter');

// Subscribe to params.channel ('news'), publish with ack and without ack.
// wireOrder is the order of the delivery and the ack ON THE WIRE:
// ['publish', <data>] / ['ack', <reply packet>]. (What the client's API
// reports first is not reliable: the v20 client hands channel data and
// invoke results to different async streams.)
async function publishOwn(ctx) {
  const channel = ctx.params.channel || 'news';
  const c = await ctx.connectedClient();
  const subscribe = await c.subscribeAndWait(channel);
  const cid = c.nextCid();
  const ack = await c.publish(channel, { hello: 'world' });
  c.transmitPublish(channel, 'no-callback');
  await c.until(() => c.messagesOf(channel).length >= 2 && c.publishFramesOf(channel).length >= 2, 2000);
  const wireOrder = [];
  for (const p of c.packets()) {
    if (p.event === '#publish' && p.data && p.data.channel === channel) wireOrder.push(['publish', p.data.data]);
    else if (p.rid === cid) wireOrder.push(['ack', p]);
  }
  const r = {
    subscribe, publishAck: ack, publishCid: cid, wireOrder, messages: c.messagesOf(channel), events: strip(c.events)
  };
  c.disconnect();
  return r;
}

// The server publishes (server.exchange.publish via 'pleasePublish') to a
// channel the client subscribed to.
async function serverPublish(ctx) {
  const channel = ctx.params.channel || 'news';
  const data = ctx.params.data === undefined ? { from: 'server' } : ctx.params.data;
  const c = await ctx.connectedClient();
  const subscribe = await c.subscribeAndWait(channel);
  const pleasePublish = await c.invoke('pleasePublish', { channel, data });
  await c.until(() => c.messagesOf(channel).length >= 1, 2000);
  await ctx.sleep(100); // catch duplicates
  const r = { subscribe, pleasePublish, messages: c.messagesOf(channel) };
  c.disconnect();
  return r;
}

// Client A (params.publisherVersion, default the run's version) publishes to
// a channel that client B (the run's version) subscribed to. A is not
// subscribed and must not receive it.
async function crossPublish(ctx) {
  const channel = ctx.params.channel || 'room';
  const pubVersion = ctx.params.publisherVersion || ctx.version;
  const sub = await ctx.connectedClient({ name: 'subscriber' });
  const pub = await ctx.connectedClient({ name: 'publisher', version: pubVersion });
  const subscribe = await sub.subscribeAndWait(channel);
  const publishAck = await pub.publish(channel, { from: 'publisher', v: pubVersion });
  pub.transmitPublish(channel, 'second');
  await sub.until(() => sub.messagesOf(channel).length >= 2, 2000);
  await ctx.sleep(100);
  const r = {
    publisherVersion: pubVersion,
    subscribe,
    publishAck,
    subscriberMessages: sub.messagesOf(channel),
    publisherFrames: pub.publishFramesOf(channel),
    distinctIds: sub.id !== pub.id
  };
  sub.disconnect();
  pub.disconnect();
  return r;
}

// Subscribe, receive one server publish, unsubscribe, server publishes again:
// nothing may arrive ON THE WIRE (publishFrames) after the unsubscribe.
async function unsubscribe(ctx) {
  const channel = ctx.params.channel || 'news';
  const c = await ctx.connectedClient();
  const subscribe = await c.subscribeAndWait(channel);
  const first = await c.invoke('pleasePublish', { channel, data: 'before' });
  await c.until(() => c.messagesOf(channel).length >= 1, 2000);
  const infoBefore = await c.invoke('socketInfo');
  const since = c.mark();
  c.unsubscribe(channel);
  // #unsubscribe carries no cid; the next RPC on the same socket is
  // processed after it.
  const infoAfter = await c.invoke('socketInfo');
  const second = await c.invoke('pleasePublish', { channel, data: 'after' });
  await ctx.sleep(300);
  const r = {
    subscribe,
    publishBefore: first,
    publishAfter: second,
    messages: c.messagesOf(channel),
    publishFrames: c.publishFramesOf(channel),
    serverSubscriptionsBefore: infoBefore.data ? infoBefore.data.subscriptions : infoBefore,
    serverSubscriptionsAfter: infoAfter.data ? infoAfter.data.subscriptions : infoAfter,
    clientIsSubscribed: c.isSubscribed(channel, true),
    eventsAfter: strip(c.events.slice(since))
  };
  c.disconnect();
  return r;
}

// Subscribe to 'news' and 'sports'; the server kicks the socket out of 'news'
// (socket.kick_out('news', 'You are kicked')); a later server publish to
// 'news' must not reach the wire, 'sports' keeps working.
async function kickOut(ctx) {
  const channel = ctx.params.channel || 'news';
  const message = ctx.params.message === undefined ? 'You are kicked' : ctx.params.message;
  const c = await ctx.connectedClient();
  const subNews = await c.subscribeAndWait(channel);
  const subSports = await c.subscribeAndWait('sports');
  const since = c.mark();
  const please = await c.invoke('pleaseKickOut', { channel, message });
  const kick = await c.waitEvent('kickOut', { since, timeout: 3000 });
  await ctx.sleep(50);
  const info = await c.invoke('socketInfo');
  await c.invoke('pleasePublish', { channel, data: 'after-kick' });
  await c.invoke('pleasePublish', { channel: 'sports', data: 'still-here' });
  await c.until(() => c.messagesOf('sports').length >= 1, 2000);
  await ctx.sleep(100);
  const r = {
    subscribe: [subNews, subSports],
    pleaseKickOut: please,
    kickOut: kick ? { message: kick.message, channel: kick.channel } : null,
    eventsAfter: strip(c.events.slice(since)),
    clientIsSubscribed: c.isSubscribed(channel, true),
    serverSubscriptions: info.data ? info.data.subscriptions : info,
    kickedChannelFramesAfter: c.publishFramesOf(channel),
    otherChannelMessages: c.messagesOf('sports'),
    state: c.state
  };
  c.disconnect();
  return r;
}

// Subscribe to params.count channels (default 3) one after the other; with a
// server socket_channel_limit below that, the extra ones must fail.
async function channelLimit(ctx) {
  const count = ctx.params.count || 3;
  const c = await ctx.connectedClient();
  const results = [];
  for (let i = 0; i < count; i++) {
    results.push(await c.subscribeAndWait('limit' + i));
  }
  const info = await c.invoke('socketInfo');
  const r = {
    results,
    subscribeFail: strip(c.events.filter((e) => e.event === 'subscribeFail')),
    serverSubscriptions: info.data ? info.data.subscriptions : info,
    state: c.state
  };
  c.disconnect();
  return r;
}

// Publish when the server has allow_client_publish=False: the ack is an
// InvalidActionError and nothing is delivered (the client is subscribed).
async function publishDisabled(ctx) {
  const channel = ctx.params.channel || 'news';
  const c = await ctx.connectedClient();
  const subscribe = await c.subscribeAndWait(channel);
  const publishAck = await c.publish(channel, 'should not be delivered');
  c.transmitPublish(channel, 'nor this');
  await c.invoke('socketInfo'); // round trip
  await ctx.sleep(200);
  const r = {
    subscribe,
    publishAck,
    messages: c.messagesOf(channel),
    publishFrames: c.publishFramesOf(channel),
    state: c.state
  };
  c.disconnect();
  return r;
}

module.exports = { publishOwn, serverPublish, crossPublish, unsubscribe, kickOut, channelLimit, publishDisabled };
