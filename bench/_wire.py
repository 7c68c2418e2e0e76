"""
What the benchmarks share: a real autobahn server protocol of an SCServer on
an in-memory transport, driven with masked client frames as a browser would
send them.
"""

import json
import os
import struct

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

UPGRADE = (
    b"GET /socketcluster/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(text):
    """A masked text frame, as a client sends it."""
    payload = text.encode("utf-8")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
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
