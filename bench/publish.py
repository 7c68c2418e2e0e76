"""
Publish benchmark: the server-side cost of one client publication on a
channel with one subscriber (the pubsub-many scenario of C{compare.py}).

C{--channels} subscribers, each a real autobahn server protocol of an
SCServer (HTTP upgrade, SocketCluster handshake and C{#subscribe} fed as
masked client frames) subscribed to a channel of its own, and one publisher
connection that sends C{#publish} events with cids, round-robin over the
channels.  Every protocol writes to an in-memory transport, so the figures
include the inbound frame's unmasking and decoding, the C{#publish}
validation, the exchange and the in-process broker, the delivery's encoding
and framing and the publisher's ack; no kernel or client work.

The frames are built before the clock starts.  The warm-up's output is
checked: one ack per publication, and one C{#publish} event on the right
subscriber; the bytes written in the measured loops are reported so that
two trees can be compared for identical output.

Usage: python bench/publish.py [--channels 1000] [--publications 20000]
[--repeat 3]
Figures are reported as a ratio: the machines are shared and noisy.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import Clock  # noqa: E402

import scserver  # noqa: E402
from scserver import SCServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _wire import bench_options, client_frame, handshaken, measure  # noqa: E402
from echo import server_messages  # noqa: E402

DATA = {"user": "bench", "text": "x" * 100, "n": 0}



def channel_name(n):
    """The channel of subscriber C{n}."""
    return "ch{}".format(n)


def subscriber(server, n):
    """A connection subscribed to L{channel_name}(C{n}); its transport."""
    protocol, transport = handshaken(server, n + 1)
    protocol.dataReceived(client_frame(json.dumps(
        {"event": "#subscribe", "data": {"channel": channel_name(n)}, "cid": 2})))
    assert b'"rid":2' in transport.value(), "no subscribe reply"
    transport.clear()
    return transport


def build_frames(channels, publications, first_cid):
    """C{publications} C{#publish} frames, cids from C{first_cid}."""
    frames = []
    for n in range(publications):
        packet = {"event": "#publish",
                  "data": {"channel": channel_name(n % channels), "data": dict(DATA, n=n)},
                  "cid": first_cid + n}
        frames.append(client_frame(json.dumps(packet, separators=(",", ":"))))
    return frames


def check(publisher, subscribers, publications, first_cid):
    """The acks and deliveries of C{publications} frames from L{build_frames}."""
    acks = [json.loads(m) for m in server_messages(publisher.value())]
    assert acks == [{"rid": first_cid + n} for n in range(publications)], acks[:3]
    channels = len(subscribers)
    for index, transport in enumerate(subscribers):
        got = [json.loads(m) for m in server_messages(transport.value())]
        want = [{"event": "#publish",
                 "data": {"channel": channel_name(index), "data": dict(DATA, n=n)}}
                for n in range(index, publications, channels)]
        assert got == want, (index, got[:2], want[:2])
        transport.clear()
    publisher.clear()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--publications", type=int, default=20000,
                        help="publications per measured loop")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measured loops; the median is reported")
    args = parser.parse_args()
    if args.channels < 1 or args.publications < 1 or args.repeat < 1:
        parser.error("--channels, --publications and --repeat must be positive")

    print("scserver: {}".format(scserver.__file__))
    server = SCServer(reactor=Clock(), **bench_options(auth_key="bench",
                                                      ping_timeout_disabled=True))
    server.startService()
    subscribers = [subscriber(server, n) for n in range(args.channels)]
    protocol, publisher = handshaken(server, 0)

    warmup = min(args.publications, 2 * args.channels)
    for frame in build_frames(args.channels, warmup, 2):
        protocol.dataReceived(frame)
    check(publisher, subscribers, warmup, 2)

    frames = build_frames(args.channels, args.publications, 2 + warmup)
    results = [measure(protocol, publisher, frames, subscribers) for _ in range(args.repeat)]
    times = [t for t, _ in results]
    sizes = {b for _, b in results}
    assert len(sizes) == 1, "the repeats wrote different byte counts"
    median = statistics.median(times)
    print("channels={} publications={} repeat={}".format(
        args.channels, args.publications, args.repeat))
    print("publish: {:.3f} s, {:.2f} us/publication (best {:.2f}), {} bytes".format(
        median, median / args.publications * 1e6, min(times) / args.publications * 1e6,
        sizes.pop()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
