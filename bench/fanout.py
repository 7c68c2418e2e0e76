"""
Fan-out benchmark: the server-side cost of one publication to N subscribers.

Every subscriber is a real autobahn server protocol of an SCServer (HTTP
upgrade, SocketCluster handshake and #subscribe fed as masked client frames)
writing to an in-memory transport, so the numbers include encoding and
WebSocket framing but no kernel or client work.

It compares, in one run:

 - frame-once: the default path, one encode and one frame for all recipients;
 - per-recipient: the path taken when a publishOut middleware is registered
   (here one that allows everything), one copy, encode and frame per
   recipient.

Usage: python bench/fanout.py [--subscribers 1000] [--publications 200]
Figures are reported as a ratio: the machines are shared and noisy.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import Clock  # noqa: E402

from scserver import SCServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _wire import bench_options, client_frame, handshaken  # noqa: E402

def subscriber(server, channel, number):
    protocol, transport = handshaken(server, number)
    protocol.dataReceived(client_frame(json.dumps(
        {"event": "#subscribe", "data": {"channel": channel}, "cid": 2})))
    transport.clear()
    return transport


def measure(server, transports, publications):
    data = {"user": "bench", "text": "x" * 100, "n": 0}
    start = time.perf_counter()
    for n in range(publications):
        data["n"] = n
        server.exchange.publish("bench", data)
    elapsed = time.perf_counter() - start
    written = sum(len(t.value()) for t in transports)
    for transport in transports:
        transport.clear()
    return elapsed, written


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--publications", type=int, default=200)
    args = parser.parse_args()

    server = SCServer(reactor=Clock(), **bench_options(auth_key="bench", ping_timeout_disabled=True))
    server.startService()
    transports = [subscriber(server, "bench", n) for n in range(args.subscribers)]
    assert len(server.exchange._sockets["bench"]) == args.subscribers

    measure(server, transports, 10)
    once, once_bytes = measure(server, transports, args.publications)
    server.add_middleware(server.MIDDLEWARE_PUBLISH_OUT, lambda req, next: next())
    measure(server, transports, 10)
    each, each_bytes = measure(server, transports, args.publications)

    deliveries = args.subscribers * args.publications
    print("subscribers={} publications={} deliveries={}".format(
        args.subscribers, args.publications, deliveries))
    print("frame-once:    {:.3f} s, {:.2f} us/delivery, {} bytes".format(
        once, once / deliveries * 1e6, once_bytes))
    print("per-recipient: {:.3f} s, {:.2f} us/delivery, {} bytes".format(
        each, each / deliveries * 1e6, each_bytes))
    print("ratio per-recipient / frame-once: {:.1f}x".format(each / once))
    if once_bytes != each_bytes:
        print("WARNING: the two paths wrote different byte counts")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
