"""
The server under test of C{scripts/conformance.sh}: scserver's WebSocket
layer as a raw echo server, for the Autobahn TestSuite fuzzingclient cases
(run by kosoku).

The Autobahn cases expect every text and binary message to be echoed as it
came.  scserver speaks SocketCluster over WebSocket, so its own sockets
would answer a raw message with nothing (and close 4009 before a
C{#handshake}).  What the conformance run is meant to check is the
WebSocket layer scserver puts in front of the SocketCluster protocol:
autobahn's framing, UTF-8 validation, fragmentation, ping/pong, the close
handshake, permessage-deflate, with the options and the code of
L{scserver._transport.SCServerProtocol} (its head parsing before the
upgrade, its fast lane of plain data frames in and out, its close
handling).  So this runs a real L{scserver.SCServer} and listens with its
own factory and protocol, unchanged; only the SocketCluster socket the
server makes for each connection is replaced by an L{Echo}, which writes
every message it receives back through the protocol (as a socket's
engine writes its replies), and any request path is accepted.

Usage::

    python tests/conformance/echo_server.py [PORT] [--max-payload N]

It prints C{listening on PORT} once it listens (PORT 0: a free port).
C{permessage-deflate} is on (the 12.* and 13.* cases need it) and the
message limit is raised to 16 MiB + 1 KiB by default (the 9.* cases send
messages of up to 16 MiB; scserver's default C{max_payload} of 1 MiB would
close those with 1009, which Autobahn reports as a failure to echo).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ServerEndpoint  # noqa: E402

from scserver import SCServer  # noqa: E402


class Echo:
    """
    What the server makes instead of a SocketCluster socket: every message
    received is written back as it came (text as text, binary as binary).
    """

    def __init__(self, output):
        self.output = output

    def receive(self, payload):
        self.output.write(payload)

    def connection_lost(self, code, reason):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", nargs="?", type=int, default=9001)
    parser.add_argument("--max-payload", type=int, default=16 * 1024 * 1024 + 1024)
    parser.add_argument("--no-deflate", action="store_true")
    args = parser.parse_args()
    server = SCServer(reactor=reactor, max_payload=args.max_payload,
                      per_message_deflate=not args.no_deflate)
    server.accept = lambda output, request=None, clock=None: Echo(output)
    factory = server.factory
    factory.any_path = True
    server.startService()

    def listening(port):
        print("listening on %d" % (port.getHost().port,), flush=True)

    d = TCP4ServerEndpoint(reactor, args.port, interface="127.0.0.1").listen(factory)
    d.addCallback(listening)
    d.addErrback(lambda f: (print(f.getErrorMessage(), file=sys.stderr), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main()
