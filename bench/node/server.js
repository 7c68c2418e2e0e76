#!/usr/bin/env node
'use strict';
// The Node reference for bench/node_compare.py: socketcluster-server (the
// original, installed beside this file with
// `npm install --prefix bench/node socketcluster-server@19`) serving the
// same application as tests.interop_app does for the benchmarks: an "echo"
// procedure, and client publishing allowed.
//
//   node bench/node/server.js PORT

const http = require('http');
const path = require('path');
const socketClusterServer = require(path.join(__dirname, 'node_modules', 'socketcluster-server'));

const port = Number(process.argv[2]);
const httpServer = http.createServer();
const agServer = socketClusterServer.attach(httpServer);

(async () => {
  for await (const { socket } of agServer.listener('connection')) {
    (async () => {
      for await (const request of socket.procedure('echo')) request.end(request.data);
    })();
  }
})();

httpServer.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
