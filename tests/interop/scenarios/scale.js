'use strict';
// Scenarios for scserver's scale-out: several server processes (or workers)
// sharing a broker. The server side runs tests/scale_app.py.

// One subscriber of each client version on every URL (params.urls), one
// publisher on the first URL sending params.count publications (seq 0..n-1)
// with an ack each, then one server-side publish from the LAST URL's process
// (pleasePublish). Reports what every subscriber received, in order, the
// pid of the process each was connected to, and what each process's
// exchange watcher saw.
async function scaleFanout(ctx) {
  const urls = ctx.params.urls;
  const channel = ctx.params.channel || 'scale';
  const count = ctx.params.count || 20;
  const subs = [];
  for (const url of urls) {
    for (const version of [14, 20]) {
      const c = await ctx.connectedClient({ url, version, name: 'sub' + version + '@' + url });
      const s = await c.subscribeAndWait(channel);
      if (!s.subscribed) throw new Error('subscription failed: ' + JSON.stringify(s));
      const pid = await c.invoke('pid');
      subs.push({ c, url, version, pid: pid.data });
    }
  }
  const pub = await ctx.connectedClient({ url: urls[0], name: 'publisher' });
  const acks = [];
  for (let i = 0; i < count; i++) acks.push(pub.publish(channel, { seq: i, from: 'client' }));
  const ackResults = await Promise.all(acks);
  const last = subs[subs.length - 1].c;
  const serverPublish = await last.invoke('pleasePublish', { channel, data: { seq: count, from: 'server' } });
  const total = count + 1;
  for (const s of subs) await s.c.until(() => s.c.messagesOf(channel).length >= total, 5000);
  await ctx.sleep(100);
  const watched = [];
  for (const url of urls) {
    const s = subs.find((x) => x.url === url);
    watched.push((await s.c.invoke('watched', channel)).data);
  }
  for (const s of subs) s.c.disconnect();
  pub.disconnect();
  return {
    acks: ackResults,
    serverPublish,
    received: subs.map((s) => ({ url: s.url, version: s.version, pid: s.pid, messages: s.c.messagesOf(channel) })),
    watched
  };
}

// Clients of the run's version connect to params.url (a --workers server)
// until two different worker pids answered (at most params.maxClients).
// Every client subscribes; then one client asks its worker to kill itself
// with SIGKILL. The clients of that worker reconnect on their own (short
// backoff), subscribe again, and a publication from another client reaches
// every client.
async function workerFailover(ctx) {
  const url = ctx.url;
  const channel = ctx.params.channel || 'failover';
  const maxClients = ctx.params.maxClients || 24;
  const reconnect = { clientOptions: { autoReconnect: true,
    autoReconnectOptions: { initialDelay: 100, randomness: 100, multiplier: 1, maxDelay: 500 } } };
  const clients = [];
  const pids = new Set();
  while (pids.size < 2 && clients.length < maxClients) {
    const c = await ctx.connectedClient(Object.assign({ name: 'c' + clients.length }, reconnect));
    const pid = (await c.invoke('pid')).data;
    pids.add(pid);
    const s = await c.subscribeAndWait(channel);
    if (!s.subscribed) throw new Error('subscription failed: ' + JSON.stringify(s));
    clients.push({ c, pid });
  }
  if (pids.size < 2) throw new Error('only one worker answered ' + clients.length + ' clients');
  const victimPid = clients[0].pid;
  const victims = clients.filter((x) => x.pid === victimPid);
  const marks = victims.map((x) => x.c.mark());
  clients[0].c.transmit('killme');
  // Every client of the killed worker reconnects and subscribes again.
  for (let i = 0; i < victims.length; i++) {
    const v = victims[i];
    const e = await v.c.waitEvent('subscribe', { since: marks[i], timeout: 8000 });
    if (!e) throw new Error(v.c.name + ' did not subscribe again after the worker died');
  }
  const after = [];
  for (const x of clients) after.push((await x.c.invoke('pid')).data);
  const survivor = clients.find((x) => x.pid !== victimPid);
  const ack = await survivor.c.publish(channel, 'after-failover');
  for (const x of clients) await x.c.until(() => x.c.messagesOf(channel).includes('after-failover'), 5000);
  const got = clients.map((x) => x.c.messagesOf(channel).includes('after-failover'));
  for (const x of clients) x.c.disconnect();
  return { pidsBefore: clients.map((x) => x.pid), pidsAfter: after, victimPid, victims: victims.length, ack, got };
}

// Clients of the run's version connect to params.url until two different
// worker pids answered; then one asks the parent process to stop (SIGTERM).
// Reports the close code every client saw.
async function parentShutdown(ctx) {
  const maxClients = ctx.params.maxClients || 24;
  const clients = [];
  const pids = new Set();
  while (pids.size < 2 && clients.length < maxClients) {
    const c = await ctx.connectedClient({ name: 'c' + clients.length });
    pids.add((await c.invoke('pid')).data);
    clients.push(c);
  }
  const marks = clients.map((c) => c.mark());
  clients[0].transmit('terminateParent');
  const closes = [];
  for (let i = 0; i < clients.length; i++) {
    const e = await clients[i].waitEvent(['disconnect', 'close'], { since: marks[i], timeout: 10000 });
    closes.push(e ? e.code : null);
  }
  return { workers: pids.size, clients: clients.length, closes };
}

module.exports = { scaleFanout, workerFailover, parentShutdown };
