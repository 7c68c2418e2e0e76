"""
Echo benchmark: the server-side cost of one request/reply round on one
connection.

One real autobahn server protocol of an SCServer (HTTP upgrade and
SocketCluster handshake fed as masked client frames, as in fanout.py)
writes to an in-memory transport.  Its socket has an "echo" handler that
responds with the data it got.  The benchmark feeds it N masked client text
frames C{{"event":"echo","data":{...},"cid":k}} and measures the time per
message: WebSocket unmasking, JSON decoding, the engine, the handler, the
reply's encoding and framing; no kernel or client work.

It measures, in one run:

 - single: one event per frame;
 - batch: C{--batch} events per frame (a JSON array, as a client sends a
   batch), reported per event.

The frames are built before the clock starts.  The replies of the warm-up
are parsed and checked (one C{{"rid": k, "data": ...}} per request, in
order); the bytes written in the measured loops are reported so that two
trees can be compared for identical output.

The script only uses API that exists before and after the engine refactor
(SCServer(reactor=...), server.on("connection", ...), socket.on(event,
handler), server.factory.buildProtocol(...)); it prints which generation of
the socket it ran against.

Usage: python bench/echo.py [--messages 50000] [--batch 10] [--repeat 3]
Figures are reported as a ratio: the machines are shared and noisy.
"""

import argparse
import json
import os
import statistics
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import Clock  # noqa: E402

import scserver  # noqa: E402
from scserver import SCServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _wire import bench_options, client_frame, handshaken, measure  # noqa: E402

DATA = {"user": "bench", "text": "hello world", "n": 0}



def server_messages(raw):
    """Split the unmasked server frames in C{raw} into their text payloads."""
    messages = []
    offset = 0
    while offset < len(raw):
        first, second = raw[offset], raw[offset + 1]
        assert first == 0x81, "expected a final text frame, got 0x{:02x}".format(first)
        assert not second & 0x80, "server frames are not masked"
        length = second & 0x7F
        offset += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", raw, offset)
            offset += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", raw, offset)
            offset += 8
        messages.append(raw[offset:offset + length].decode("utf-8"))
        offset += length
    return messages


def generation():
    """Which side of the engine refactor this scserver is on."""
    from scserver.socket import SCServerSocket
    if hasattr(SCServerSocket, "receive") and hasattr(SCServerSocket, "deliver"):
        return "new (SCServerSocket.receive/deliver seams)"
    return "old (transport drives socket._engine directly)"


def build_frames(messages, batch):
    """
    C{messages} events with cids from 2, in frames of C{batch} events
    (a lone event when C{batch} is 1, else a JSON array).
    """
    frames = []
    cid = 2
    for start in range(0, messages, batch):
        packets = []
        for n in range(start, min(start + batch, messages)):
            data = dict(DATA, n=n)
            packets.append({"event": "echo", "data": data, "cid": cid})
            cid += 1
        text = json.dumps(packets[0] if batch == 1 else packets, separators=(",", ":"))
        frames.append(client_frame(text))
    return frames


def check(transport, messages):
    """The replies to C{messages} requests with cids from 2, in order."""
    replies = [json.loads(m) for m in server_messages(transport.value())]
    assert len(replies) == messages, "{} replies to {} requests".format(len(replies), messages)
    for n, reply in enumerate(replies):
        assert reply == {"rid": n + 2, "data": dict(DATA, n=n)}, reply
    transport.clear()


def run_path(protocol, transport, messages, batch, repeat):
    warmup = build_frames(min(messages, 2000), batch)
    for frame in warmup:
        protocol.dataReceived(frame)
    check(transport, min(messages, 2000))
    frames = build_frames(messages, batch)
    results = [measure(protocol, transport, frames) for _ in range(repeat)]
    times = [t for t, _ in results]
    sizes = {b for _, b in results}
    assert len(sizes) == 1, "the repeats wrote different byte counts"
    return statistics.median(times), min(times), sizes.pop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50000,
                        help="echo requests per measured loop")
    parser.add_argument("--batch", type=int, default=10,
                        help="events per frame in the batch path (0 or 1: skip it)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measured loops per path; the median is reported")
    args = parser.parse_args()
    if args.messages < 1 or args.repeat < 1:
        parser.error("--messages and --repeat must be positive")

    print("scserver: {} [{}]".format(scserver.__file__, generation()))

    server = SCServer(reactor=Clock(), **bench_options(auth_key="bench", ping_timeout_disabled=True))
    server.startService()

    def on_connection(socket, status):
        socket.on("echo", lambda data, respond: respond(None, data))

    server.on("connection", on_connection)

    protocol, transport = handshaken(server)
    paths = [("single", 1)]
    if args.batch > 1:
        paths.append(("batch", args.batch))

    print("messages={} repeat={} batch={}".format(args.messages, args.repeat, args.batch))
    for name, batch in paths:
        median, best, written = run_path(protocol, transport, args.messages, batch, args.repeat)
        print("{:<8} {:.3f} s, {:.2f} us/message (best {:.2f}), {} bytes".format(
            name + ":", median, median / args.messages * 1e6,
            best / args.messages * 1e6, written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
