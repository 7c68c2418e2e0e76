#!/usr/bin/env node
'use strict';
// The Node original for bench/compare.py: socketcluster-server 14.7.2 (protocol 1,
// pinned in package.json, installed by `npm ci --prefix bench/sc14`, which
// bench/run.sh does), one process, its in-process broker (sc-simple-broker),
// serving what bench/bench_app.py serves on scserver: an "echo" event acked with
// its data, and client publishing allowed (the default).
//
//   node bench/sc14/server.js PORT

const http = require('http');
const path = require('path');
const socketClusterServer = require(path.join(__dirname, 'node_modules', 'socketcluster-server'));

const port = Number(process.argv[2]);
const httpServer = http.createServer();
const scServer = socketClusterServer.attach(httpServer, { allowClientPublish: true });

scServer.on('connection', (socket) => {
  socket.on('echo', (data, respond) => respond(null, data));
});

httpServer.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
