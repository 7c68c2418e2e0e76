"""
What the benchmarks share: a real autobahn server protocol of an SCServer on
an in-memory transport, driven with masked client frames as a browser would
send them.
"""

import gc
import json
import os
import struct
import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

UPGRADE = (
    b"GET /socketcluster/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


CLEAR_EVERY = 1000
"""Transports are read and cleared every this many frames, so that the
in-memory buffers stay small."""


def client_frame(text):
    """
    A masked text frame, as a client sends it (masked with integer
    arithmetic: building the frames stays small next to the server's work
    in an instruction count).
    """
    payload = text.encode("utf-8")
    length = len(payload)
    mask = os.urandom(4)
    key = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    if length < 126:
        header = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    return header + mask + masked


def handshaken(server, number=0):
    """
    A connection to C{server}, upgraded and past the SocketCluster
    handshake, with nothing recorded yet.

    @return: its protocol and its C{StringTransport}.
    """
    protocol = server.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000 + number))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(UPGRADE)
    protocol.dataReceived(client_frame(json.dumps(
        {"event": "#handshake", "data": {"authToken": None}, "cid": 1})))
    assert b'"rid":1' in transport.value(), "no handshake reply"
    transport.clear()
    return protocol, transport


UNLIMITED = ("max_messages_per_second", "max_bytes_per_second", "max_inflight_requests",
             "max_batch_size", "max_messages_per_turn")
"""The admission limits a benchmark turns off: its clock does not move, so a
per-second budget would be spent at once."""


def bench_options(**options):
    """
    C{options} for the benchmark's server, with the admission limits off
    where this scserver has them (the benchmarks also run against trees from
    before they existed).
    """
    from scserver.options import DEFAULTS

    for name in UNLIMITED:
        if name in DEFAULTS:
            options[name] = None
    return options


def measure(protocol, transport, frames, others=()):
    """
    Feed C{frames} to C{protocol}, clearing C{transport} (its own output)
    every L{CLEAR_EVERY} frames.

    @param others: the transports of other connections written to meanwhile
        (subscribers), read once at the end.
    @return: (seconds, bytes written).
    """
    receive = protocol.dataReceived
    written = 0
    gc.collect()
    start = time.perf_counter()
    for index in range(0, len(frames), CLEAR_EVERY):
        for frame in frames[index:index + CLEAR_EVERY]:
            receive(frame)
        written += len(transport.value())
        transport.clear()
    elapsed = time.perf_counter() - start
    for other in others:
        written += len(other.value())
        other.clear()
    return elapsed, written
