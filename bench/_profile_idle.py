"""
Private profiling script: the server's resident memory per idle connection.

A server of this tree (in-process broker, default options) runs in a child process on 127.0.0.1; this process
opens C{--connections} raw WebSocket connections to it, each upgraded and
past the SocketCluster handshake, then idle.  The child's RSS (from
/proc/self/statm, after a garbage collection) is read after one connection
and after all of them; the difference per connection is printed, and the
figure from tracemalloc (Python objects only) with C{--trace}.

Usage: .venv/bin/python bench/_profile_idle.py [--connections 2000] [--trace]
"""

import argparse
import json
import os
import socket
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER = r"""
import gc, os, sys, tracemalloc
sys.path.insert(0, sys.argv[1])
from twisted.internet import reactor, stdio
from twisted.protocols.basic import LineReceiver
from scserver import SCServer

server = SCServer(reactor=reactor, auth_key="idle-memory-bench")
server.startService()
port = reactor.listenTCP(0, server.factory, interface="127.0.0.1", backlog=1024)
page = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

class Control(LineReceiver):
    delimiter = b"\n"
    def connectionMade(self):
        self.sendLine(str(port.getHost().port).encode())
    def lineReceived(self, line):
        gc.collect()
        if line == b"trace":
            tracemalloc.start()
        traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
        self.sendLine("{} {} {}".format(rss(), traced, len(server.clients)).encode())

stdio.StandardIO(Control())
reactor.run()
"""

UPGRADE = (b"GET /socketcluster/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


def frame(text):
    payload = text.encode("utf-8")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def receive_until(sock, marker):
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    return data


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(UPGRADE)
    receive_until(sock, b"\r\n\r\n")
    sock.sendall(frame(json.dumps({"event": "#handshake", "data": {}, "cid": 1})))
    receive_until(sock, b'"rid":1')
    return sock


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--trace", action="store_true",
                        help="also trace the Python allocations (tracemalloc costs RSS itself)")
    args = parser.parse_args()
    child = subprocess.Popen([sys.executable, "-c", SERVER, ROOT], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)

    def ask(command=b"rss"):
        child.stdin.write(command + b"\n")
        child.stdin.flush()
        return [int(x) for x in child.stdout.readline().split()]

    try:
        port = int(child.stdout.readline())
        sockets = [connect(port)]
        ask()
        rss_before, _, _ = ask(b"trace" if args.trace else b"rss")
        for _ in range(args.connections):
            sockets.append(connect(port))
        rss_after, traced, clients = ask()
        assert clients == args.connections + 1, clients
        n = args.connections
        print("connections={} rss: {:.0f} bytes/connection ({:.2f} KiB)".format(
            n, (rss_after - rss_before) / n, (rss_after - rss_before) / n / 1024))
        if args.trace:
            print("tracemalloc: {:.0f} bytes/connection".format(traced / n))
    finally:
        child.kill()
        child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
