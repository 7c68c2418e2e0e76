"""
Helpers shared by the test modules.

Only what several modules use lives here:

  - L{names}, L{publications}, L{clock_now};
  - L{ClockServerCase}, the base of the test cases that drive a server
    through L{scserver.testing} connections on a L{Clock};
  - L{MemoryCase}, the base of the test cases that connect real clients to
    a real server in memory (L{scserver.testing.MemoryNetwork}, or
    L{MemoryTCP} for listening and back-pressure), and drive them with
    L{MemoryCase.wait} and L{MemoryCase.run_until} instead of sleeping;
  - the hand-made tokens and key pairs of the auth tests (L{NOW},
    L{b64url}, L{hs256_token}, L{pem_pair}, L{ec_pair}).
"""

import base64
import hashlib
import hmac
import json
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    CannotListenError,
    ConnectionAborted,
    ConnectionLost,
    ConnectionRefusedError,
    UserError,
)
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport
from twisted.trial.unittest import SynchronousTestCase
from txaio._common import _BatchedTimer
from zope.interface import implementer

from scserver.testing import connect, make_server

__all__ = [
    "NOW",
    "ClockServerCase",
    "MemoryCase",
    "MemoryTCP",
    "b64url",
    "bind_timers",
    "clock_now",
    "ec_pair",
    "hs256_token",
    "names",
    "pem_pair",
    "publications",
]

NOW = 1795639688
"""A fixed current time (epoch seconds) for the auth tests' clocks."""


def names(errors):
    """The SocketCluster names of C{errors} (their C{name}, else their class name)."""
    return [getattr(e, "name", type(e).__name__) for e in errors]


def publications(conn, channel=None):
    """
    The data of the publications a L{scserver.testing.FakeConnection} was
    sent, in order (only those on C{channel} when given).
    """
    return [p["data"]["data"] for p in conn.sent_events("#publish")
            if channel is None or p["data"]["channel"] == channel]


def b64url(data):
    """Base64url-encode C{data} (bytes or a JSON-able object) without padding."""
    if not isinstance(data, bytes):
        data = json.dumps(data, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hs256_token(header, payload, key):
    """Build an HS256-signed token by hand (PyJWT refuses some keys)."""
    signing_input = b64url(header) + "." + b64url(payload)
    if isinstance(key, str):
        key = key.encode("utf-8")
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


def pem_pair(private_key):
    """The PEM strings (private, public) of a cryptography private key."""
    private = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode("ascii")
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    return private, public


def ec_pair(curve=None):
    """A fresh EC key pair (P-256 by default), as PEM strings (private, public)."""
    return pem_pair(ec.generate_private_key(curve or ec.SECP256R1()))


def clock_now():
    """A L{Clock} set to the current time (whole seconds), for JWT iat/exp."""
    clock = Clock()
    clock.advance(int(time.time()))
    return clock


class ClockServerCase(SynchronousTestCase):
    """
    A server on a L{Clock} set to the current time, with its warnings
    recorded in C{self.warnings}.

    @cvar auth_key: the servers' C{auth_key} (subclasses set it).
    @cvar options: the options of the server C{setUp} makes.
    """

    auth_key = None
    options = {}

    def setUp(self):
        self.clock = clock_now()
        self.server = self.make_server(**self.options)

    def install(self, server):
        """Set up a server L{make_server} created (nothing by default)."""

    def make_server(self, **options):
        """A server on C{self.clock}; C{self.warnings} records its warnings."""
        if self.auth_key is not None:
            options.setdefault("auth_key", self.auth_key)
        server = make_server(clock=self.clock, **options)
        self.install(server)
        self.warnings = []
        server.on("warning", self.warnings.append)
        return server

    def open(self, token=None, server=None, **kwargs):
        """
        Connect to C{server} (C{self.server} by default) and handshake with
        C{token}; the status is kept in C{self.status}.

        @param kwargs: the other arguments of L{scserver.testing.connect}.
        @return: the L{scserver.testing.FakeConnection}.
        """
        conn = connect(server or self.server, **kwargs)
        self.status = conn.handshake(token)
        return conn


# -- real clients and servers in memory ------------------------------------------------------
#
# Most tests use scserver.testing.MemoryNetwork: real clients and one real server, connected
# in memory, on the server's clock.  MemoryTCP, below, is for the few things it does not
# model: servers listening through the reactor's listenTCP (any factory: a twisted.web Site,
# several ports, ports numbered when asked for port 0) and a transport that pauses its
# producer while its peer does not read (back-pressure).


def bind_timers(factory, clock):
    """
    Put the timers of the autobahn C{factory} (its opening and closing
    handshake timeouts) on C{clock}: autobahn makes them with txaio, on the
    global reactor.  They keep txaio's batching (0.2 s buckets, deadlines
    truncated to whole seconds), so they fire when they would for real.
    """
    if hasattr(factory, "_batched_timer") and getattr(factory, "_timers_clock", None) is not clock:
        factory._batched_timer = _BatchedTimer(
            200.0, 1000, seconds_provider=clock.seconds, delayed_call_creator=clock.callLater)
        factory._timers_clock = clock


class _Transport(FakeTransport):
    """
    One end of an in-memory TCP connection (an iosim L{FakeTransport}) that
    also does what the tests need of a socket:

      - C{pauseProducing()} stops reading: nothing is delivered to this end
        until C{resumeProducing()};
      - a producer registered on it is paused while more than
        L{bufferSize} bytes wait to be read by the other end (as Twisted's
        TCP transport does when the kernel buffer is full), and resumed
        once they are read;
      - C{abortConnection()} drops what was not delivered yet and reports
        a non-clean close (C{ConnectionAborted} here, C{ConnectionLost} at
        the other end).
    """

    bufferSize = 65536
    paused = False
    aborted = False
    _producer_paused = False

    def __init__(self, protocol, is_server, host, peer):
        FakeTransport.__init__(self, protocol, is_server, host, peer)
        self._buffered = 0

    def write(self, data):
        if self.disconnecting:
            return
        self.stream.append(data)
        self._buffered += len(data)
        if (self.producer is not None and self.streamingProducer
                and not self._producer_paused and self._buffered > self.bufferSize):
            self._producer_paused = True
            self.producer.pauseProducing()

    def unregisterProducer(self):
        self.producer = None
        self._producer_paused = False

    def getOutBuffer(self):
        data = FakeTransport.getOutBuffer(self)
        self._buffered = 0
        if self._producer_paused:
            self._producer_paused = False
            self.producer.resumeProducing()
        return data

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def abortConnection(self):
        if not self.disconnecting:
            self.aborted = True
            self.stream = []
            self.disconnecting = True


class _Link:
    """A connection between a client and a server L{_Transport}."""

    def __init__(self, client, server):
        self.client = client
        self.server = server

    def pump(self):
        """
        Deliver what each end wrote, then a close once its writer's data
        is delivered (at once for an abort).

        @return: whether anything happened.
        """
        moved = False
        for source, target in ((self.client, self.server), (self.server, self.client)):
            if source.stream and not target.paused and not target.disconnected:
                target.bufferReceived(source.getOutBuffer())
                moved = True
        for source, target in ((self.client, self.server), (self.server, self.client)):
            if source.disconnecting and not source.disconnected and (
                    source.aborted or not source.stream):
                source.disconnected = True
                target.disconnecting = target.disconnected = True
                target.stream = []
                if source.aborted:
                    source.disconnectReason = ConnectionAborted()
                    target.disconnectReason = ConnectionLost()
                source.reportDisconnect()
                target.reportDisconnect()
                moved = True
        return moved

    @property
    def closed(self):
        return self.client.disconnected and self.server.disconnected


class _Port:
    """A listening port of a L{MemoryTCP}."""

    def __init__(self, network, factory, address):
        self._network = network
        self.factory = factory
        self._address = address

    def getHost(self):
        return self._address

    def startListening(self):
        pass

    def stopListening(self):
        if self._network._ports.get(self._address.port) is self:
            del self._network._ports[self._address.port]
            self.factory.doStop()


class _Connector:
    """The connector of a connection attempt on a L{MemoryTCP}."""

    def __init__(self, host, port, factory):
        self.host = host
        self.port = port
        self.factory = factory
        self.link = None
        self.cancelled = False

    def getDestination(self):
        return IPv4Address("TCP", self.host, self.port)

    def stopConnecting(self):
        self.disconnect()

    def connect(self):
        pass

    def disconnect(self):
        if self.link is not None:
            self.link.client.loseConnection()
        else:
            self.cancelled = True


@implementer(IReactorTCP)
class _TCPReactor(MemoryReactorClock):
    """A L{MemoryReactorClock} whose C{listenTCP} and C{connectTCP} are a L{MemoryTCP}'s."""

    def __init__(self, network):
        MemoryReactorClock.__init__(self)
        self._network = network

    def listenTCP(self, port, factory, backlog=50, interface=""):
        return self._network._listen(port, factory, interface)

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        return self._network._connect(host, port, factory)


class MemoryTCP:
    """
    TCP in memory on a reactor of its own (C{reactor}, a
    L{MemoryReactorClock}, which is also the clock, C{clock}): servers
    listen with C{reactor.listenTCP} (any factory; port 0 gets a number
    from 40001 up), clients dial with C{reactor.connectTCP} (a dial to a
    port nobody listens on is refused); the connections are iosim
    transports (L{_Transport}), every address 127.0.0.1.

    Nothing moves by itself: L{flush} makes the connections dialled so far
    and delivers what was written until nothing moves, L{advance} moves the
    clock forward, flushing after every timer that fires.  autobahn's timers
    are moved onto the clock (L{bind_timers}) when a connection is made.
    """

    def __init__(self, now=0):
        """
        @param now: the clock's start (epoch seconds).
        """
        self.reactor = self.clock = _TCPReactor(self)
        self.reactor.advance(now)
        self.links = []
        self._ports = {}
        self._pending = []
        self._next_port = 40000
        self._next_client_port = 50000

    def _listen(self, port, factory, interface):
        if port == 0:
            self._next_port += 1
            port = self._next_port
        if port in self._ports:
            raise CannotListenError(interface, port, "address already in use")
        address = IPv4Address("TCP", interface or "0.0.0.0", port)
        listening = self._ports[port] = _Port(self, factory, address)
        factory.doStart()
        return listening

    def _connect(self, host, port, factory):
        connector = _Connector(host, port, factory)
        factory.doStart()
        factory.startedConnecting(connector)
        self._pending.append(connector)
        return connector

    def _complete(self):
        """Make (or refuse) the connections dialled so far."""
        pending, self._pending = self._pending, []
        for connector in pending:
            factory = connector.factory
            listening = self._ports.get(connector.port)
            if connector.cancelled or listening is None:
                reason = UserError() if connector.cancelled else ConnectionRefusedError()
                factory.clientConnectionFailed(connector, Failure(reason))
                factory.doStop()
                continue
            self._next_client_port += 1
            server_address = IPv4Address("TCP", "127.0.0.1", connector.port)
            client_address = IPv4Address("TCP", "127.0.0.1", self._next_client_port)
            bind_timers(listening.factory, self.reactor)
            bind_timers(factory, self.reactor)
            if hasattr(factory, "serverConnectionDropTimeout"):
                # autobahn runs this timer on txaio's global loop.
                factory.serverConnectionDropTimeout = 0
            server_protocol = listening.factory.buildProtocol(client_address)
            client_protocol = factory.buildProtocol(server_address)
            server = _Transport(server_protocol, True, server_address, client_address)
            client = _Transport(client_protocol, False, client_address, server_address)
            connector.link = link = _Link(client, server)
            self.links.append(link)
            server_protocol.makeConnection(server)
            client_protocol.makeConnection(client)
            client_protocol.connectionLost = _then(
                client_protocol.connectionLost,
                lambda reason: factory.clientConnectionLost(connector, reason))
        return bool(pending)

    def peer(self, transport):
        """The other end of the connection whose one end is C{transport}."""
        for link in self.links:
            if transport is link.client:
                return link.server
            if transport is link.server:
                return link.client
        raise KeyError(transport)

    def flush(self):
        """
        Run what is due on the clock and deliver everything written, until
        nothing moves.
        """
        for _ in range(100000):
            self.reactor.advance(0)
            moved = self._complete()
            for link in list(self.links):
                moved = link.pump() or moved
                if link.closed:
                    self.links.remove(link)
            if not moved:
                return
        raise AssertionError("the memory network does not settle")

    def advance(self, seconds):
        """
        Move the clock forward by C{seconds}, firing the timers due on the
        way in order, and flushing after each.
        """
        target = self.reactor.seconds() + seconds
        self.flush()
        while True:
            due = [call.getTime() for call in self.reactor.getDelayedCalls()
                   if call.getTime() <= target]
            if not due:
                break
            self.reactor.advance(max(0.0, min(due) - self.reactor.seconds()))
            self.flush()
        self.reactor.advance(max(0.0, target - self.reactor.seconds()))
        self.flush()


def _then(first, second):
    def both(*args):
        first(*args)
        second(*args)
    return both


class MemoryCase(SynchronousTestCase):
    """
    Tests of real clients and servers connected in memory: the test sets
    C{self.net} to a L{scserver.testing.MemoryNetwork} (or a L{MemoryTCP}),
    whose clock is C{self.clock}: a L{Clock} set to the current time (whole
    seconds, so that real JWTs verify).  L{wait} and L{run_until} drive it.

    At the end, the global reactor must not have been given anything to do.
    """

    def setUp(self):
        from twisted.internet import reactor

        self.clock = clock_now()
        before = set(reactor.getDelayedCalls())

        def no_global_timers():
            added = [call for call in reactor.getDelayedCalls() if call not in before]
            self.assertEqual(added, [], "timers left on the global reactor")

        self.addCleanup(no_global_timers)

    def run_until(self, predicate, limit=60):
        """
        Flush the network, then move its clock from one timer to the next
        (flushing after each) until C{predicate()} is true.

        @param limit: how many seconds of clock time it may take.
        @raise AssertionError: C{predicate()} is still false after C{limit}
            seconds, or nothing is left to happen.
        """
        clock = self.net.clock
        deadline = clock.seconds() + limit
        self.net.flush()
        while not predicate():
            calls = [call.getTime() for call in clock.getDelayedCalls()]
            if not calls or min(calls) > deadline:
                raise AssertionError(
                    "condition not met within {} s of clock time".format(limit))
            self.net.advance(max(0.0, min(calls) - clock.seconds()))

    def _run_until_fired(self, d, limit):
        fired = []

        def record(result):
            fired.append(True)
            return result

        d.addBoth(record)
        self.run_until(lambda: fired, limit)

    def wait(self, d, limit=60):
        """
        Run the network (L{run_until}) until the Deferred C{d} has a
        result, and return it; fail the test if it failed.
        """
        self._run_until_fired(d, limit)
        return self.successResultOf(d)

    def wait_failure(self, d, *errors, limit=60):
        """
        Run the network until C{d} has failed with one of C{errors}, and
        return the failure's value.
        """
        self._run_until_fired(d, limit)
        return self.failureResultOf(d, *errors).value
