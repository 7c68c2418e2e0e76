#!/usr/bin/env node
'use strict';
// Drive scserver's live inspection page in Debian's headless chromium
// (/usr/bin/chromium, or $SCSERVER_CHROMIUM; never a downloaded browser)
// with playwright-core, while official SocketCluster clients (from
// ../interop) connect, subscribe and unsubscribe.
//
//   node inspect.js '<json params>'
//
// params: {base: "http://127.0.0.1:PORT/inspect", token: "...",
//          ws: "ws://127.0.0.1:PORT/socketcluster/", versions: [14, 20]
//          (the client versions, taken in turn),
//          subscribers: N, channel: "...", screenshot: "/path.png",
//          timeout: seconds (the hard limit of the whole run)}
//
// Prints ONE line of JSON on stdout: {"ok": true, "steps": [...]} or
// {"ok": false, "error": "...", "steps": [...]}; every other output goes to
// stderr.  Each wait on the page is bounded (WAIT_MS).

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');
const { Client } = require('../interop/adapter');

console.log = (...args) => console.error(...args);

const WAIT_MS = 10000;
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const params = JSON.parse(process.argv[2] || '{}');
const steps = [];
const t0 = Date.now();
let finished = false;

function step(name, fields) {
  steps.push(Object.assign({ step: name, ms: Date.now() - t0 }, fields || {}));
}

function finish(result, code) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(Object.assign(result, { steps })) + '\n');
  process.exitCode = code;
}

// The count of subscribers shown for a channel ('' when the row is gone).
async function channelCount(page, channel) {
  return page.evaluate((name) => {
    for (const tr of document.querySelectorAll('#channels tbody tr[data-channel]')) {
      if (tr.getAttribute('data-channel') === name) return tr.querySelector('.subscribers').textContent;
    }
    return '';
  }, channel);
}

async function waitChannelCount(page, channel, expected) {
  await page.waitForFunction(([name, want]) => {
    for (const tr of document.querySelectorAll('#channels tbody tr[data-channel]')) {
      if (tr.getAttribute('data-channel') === name) return tr.querySelector('.subscribers').textContent === want;
    }
    return want === '';
  }, [channel, expected], { timeout: WAIT_MS, polling: 100 });
  step('channel count', { channel, count: expected });
}

async function main() {
  const executablePath = process.env.SCSERVER_CHROMIUM || '/usr/bin/chromium';
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'scserver-chromium-'));
  const clients = [];
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath, headless: true, args: ARGS, viewport: { width: 1200, height: 900 }
    });
    step('browser started');
    const page = context.pages()[0] || await context.newPage();

    // Without the token: refused, and nothing of the state in the answer.
    for (const target of ['/', '/state.json', '/app.js']) {
      const response = await page.goto(params.base + target);
      const body = await response.text();
      if (response.status() !== 401) throw new Error('GET ' + target + ' without the token: ' + response.status());
      if (body.includes('processes') || body.includes('connections')) {
        throw new Error('GET ' + target + ' without the token leaked: ' + body.slice(0, 200));
      }
    }
    const wrong = await page.goto(params.base + '/?token=' + encodeURIComponent(params.token + 'x'));
    if (wrong.status() !== 401) throw new Error('a wrong token: ' + wrong.status());
    step('refused without the token', { status: 401 });

    // With the token: the page loads and polls.
    const response = await page.goto(params.base + '/?token=' + encodeURIComponent(params.token));
    if (response.status() !== 200) throw new Error('GET with the token: ' + response.status());
    await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('updated'),
      null, { timeout: WAIT_MS, polling: 100 });
    if (page.url().includes('token=')) throw new Error('the token stayed in the address bar');
    step('page loaded', { url: page.url() });

    // A client connects: its socket id shows.
    const first = new Client(params.versions[0], params.ws, { name: 'first' });
    clients.push(first);
    await first.connected(WAIT_MS);
    const id = first.socket.id;
    await page.waitForSelector('tr[data-socket="' + id + '"]', { timeout: WAIT_MS });
    step('client shown', { id });

    // N clients subscribe: the count rises; they unsubscribe: it falls.
    const channel = params.channel;
    const n = params.subscribers;
    const others = [];
    for (let i = 0; i < n - 1; i++) {
      const c = new Client(params.versions[(i + 1) % params.versions.length], params.ws, { name: 'sub' + i });
      clients.push(c);
      others.push(c);
    }
    await Promise.all(others.map((c) => c.connected(WAIT_MS)));
    const subscribers = [first].concat(others);
    for (let i = 0; i < subscribers.length; i++) {
      const outcome = await subscribers[i].subscribeAndWait(channel, undefined, undefined, WAIT_MS);
      if (!outcome.subscribed) throw new Error('subscribe failed: ' + JSON.stringify(outcome));
      if (i === 0) await waitChannelCount(page, channel, '1');
    }
    await waitChannelCount(page, channel, String(n));
    if (params.screenshot) {
      await page.screenshot({ path: params.screenshot, fullPage: true });
      step('screenshot', { path: params.screenshot });
    }
    for (let i = 0; i < subscribers.length - 1; i++) subscribers[i].unsubscribe(channel);
    await waitChannelCount(page, channel, '1');
    subscribers[subscribers.length - 1].unsubscribe(channel);
    await waitChannelCount(page, channel, '');
    const shownCount = await channelCount(page, channel);
    finish({ ok: true, socket: id, last: shownCount }, 0);
  } finally {
    for (const c of clients) c.destroy();
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

setTimeout(() => {
  finish({ ok: false, error: 'timeout after ' + (params.timeout || 30) + ' s' }, 1);
  process.exit(1);
}, (params.timeout || 30) * 1000).unref();

main().then(() => process.exit(process.exitCode || 0), (error) => {
  finish({ ok: false, error: String(error && error.message || error), stack: String(error && error.stack || '') }, 1);
  process.exit(1);
});
