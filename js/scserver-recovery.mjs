// scserver-recovery.mjs: recovery of missed publications for the official
// SocketCluster JavaScript clients (socketcluster-client 14 to 20) talking
// to scserver, without changing the clients.
//
// Plain ES module, no dependencies, no build step. See docs/history.rst.
//
//   import formatter from 'sc-formatter';        // the clients' JSON codec
//   import { createRecovery } from './scserver-recovery.mjs';
//
//   const recovery = createRecovery({ codec: formatter,
//     onResync: (channel, position) => { /* reload the state of channel */ } });
//   const socket = socketClusterClient.create({ ..., codecEngine: recovery.codecEngine });
//   recovery.track('chat.lobby');          // before subscribing
//   socket.subscribe('chat.lobby');        // v14: .watch(...), v20: for await (...)
//
// How it works. The helper wraps the client's codec (the `codecEngine`
// option), so it sees every packet:
//  - every outgoing #subscribe of a tracked channel (the first one, and the
//    ones the client sends on its own after a reconnect) gets
//    `recover: {offset, epoch}` (or `recover: true` before the first
//    position is known) added to its `data` (an object; the subscription's
//    own data, when it has some, must be an object too);
//  - every incoming #publish of a tracked channel carries its `offset` and
//    `epoch`: the helper keeps the last one;
//  - the reply to a #subscribe says whether the missed publications are
//    being replayed (`recovered: true`, they arrive next as ordinary
//    publications) or could not be (`recovered: false`: the history was lost
//    or trimmed; `onResync(channel, {offset, epoch})` is called and the
//    position starts again from there).
// The client itself only reads `channel` and `data` of a #publish, and
// ignores the data of a subscribe reply, so nothing else changes.

export function createRecovery(options = {}) {
  const base = options.codec;
  if (!base || typeof base.encode !== 'function' || typeof base.decode !== 'function') {
    throw new TypeError('createRecovery needs options.codec, the codec the client would use ' +
      "(the default one is the package 'sc-formatter')");
  }
  const onResync = options.onResync || (() => {});
  const tracked = new Map();   // channel -> {offset, epoch} or null
  const asked = new Map();     // cid of a #subscribe -> {channel, position asked}

  function positionOf(channel) {
    const p = tracked.get(channel);
    return p ? { offset: p.offset, epoch: p.epoch } : null;
  }

  function rewrite(packet) {
    if (!packet || typeof packet !== 'object' || packet.event !== '#subscribe') return packet;
    const sub = packet.data;
    if (!sub || typeof sub !== 'object' || !tracked.has(sub.channel)) return packet;
    const own = sub.data;
    if (own != null && (typeof own !== 'object' || Array.isArray(own))) return packet;
    const position = positionOf(sub.channel);
    if (packet.cid != null) {
      asked.set(packet.cid, { channel: sub.channel, position });
      // Replies lost with a connection never come: keep the latest few.
      if (asked.size > 1000) asked.delete(asked.keys().next().value);
    }
    const data = Object.assign({}, own || {}, { recover: position || true });
    return Object.assign({}, packet, { data: Object.assign({}, sub, { data }) });
  }

  function seen(packet) {
    if (!packet || typeof packet !== 'object') return;
    if (packet.event === '#publish') {
      const d = packet.data;
      if (d && tracked.has(d.channel) && Number.isInteger(d.offset) && typeof d.epoch === 'string') {
        tracked.set(d.channel, { offset: d.offset, epoch: d.epoch });
      }
      return;
    }
    if (packet.rid == null || !asked.has(packet.rid)) return;
    const request = asked.get(packet.rid);
    asked.delete(packet.rid);
    const reply = packet.data;
    if (packet.error || !reply || typeof reply !== 'object' || !tracked.has(request.channel)) return;
    if (reply.recovered === true) return;  // the replay follows, with its positions
    if (!Number.isInteger(reply.offset) || typeof reply.epoch !== 'string') return;
    const current = tracked.get(request.channel);
    // A new starting point, unless later publications came first.
    if (!current || current.epoch !== reply.epoch || current.offset < reply.offset) {
      tracked.set(request.channel, { offset: reply.offset, epoch: reply.epoch });
    }
    if (request.position) onResync(request.channel, positionOf(request.channel));
  }

  const codecEngine = {
    encode(object) {
      return base.encode(Array.isArray(object) ? object.map(rewrite) : rewrite(object));
    },
    decode(message) {
      const object = base.decode(message);
      if (Array.isArray(object)) object.forEach(seen);
      else seen(object);
      return object;
    }
  };

  return {
    codecEngine,
    // Recover the publications of `channel` (its name as sent on the wire)
    // from now on; call it before subscribing.
    track(channel) {
      if (!tracked.has(channel)) tracked.set(channel, null);
    },
    // Stop adding `recover` to the subscriptions of `channel`.
    untrack(channel) {
      tracked.delete(channel);
    },
    // The last position known for `channel`: {offset, epoch}, or null.
    position: positionOf
  };
}
