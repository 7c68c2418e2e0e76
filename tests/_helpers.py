"""
Helpers shared by the test modules.

Only what several modules use lives here:

  - L{names}, L{publications}, L{clock_now};
  - L{ClockServerCase}, the base of the test cases that drive a server
    through L{scserver.testing} connections on a L{Clock};
  - L{MemoryCase}, the base of the test cases that connect real clients to
    real servers in memory (L{scserver.testing.MemoryNetwork}), and drive
    them with L{MemoryCase.wait} and L{MemoryCase.run_until} instead of
    sleeping;
  - the hand-made tokens and key pairs of the auth tests (L{NOW},
    L{b64url}, L{hs256_token}, L{pem_pair}, L{ec_pair});
  - L{running}, a fake reactor that behaves as a running one on every
    Twisted release.
"""

import base64
import hashlib
import hmac
import json
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scserver.testing import connect, make_server

__all__ = [
    "NOW",
    "ClockServerCase",
    "MemoryCase",
    "b64url",
    "clock_now",
    "ec_pair",
    "hs256_token",
    "names",
    "pem_pair",
    "publications",
    "running",
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


def running(reactor):
    """
    Make a fresh C{MemoryReactor} (or C{MemoryReactorClock}) a running
    reactor, the same on every Twisted release: C{running}, not stopped yet,
    and C{callWhenRunning} calling at once, as a running reactor does.

    Twisted 25.5 (the last release for Python 3.9, so what PyPy 3.9 gets)
    makes its C{MemoryReactor} with C{hasStopped} already true and only
    records C{callWhenRunning} calls; with it a test of "the reactor was
    stopped" would pass without a stop.

    @param reactor: a C{MemoryReactor} that was neither run nor stopped.
    @return: C{reactor}; C{reactor.hasStopped} becomes true when (and only
        when) its C{stop} is called.
    """
    reactor.running = True
    reactor.hasRun = True
    reactor.hasStopped = False
    reactor.hasCrashed = False

    def callWhenRunning(f, *args, **kwargs):
        f(*args, **kwargs)

    reactor.callWhenRunning = callWhenRunning
    return reactor


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


class MemoryCase(SynchronousTestCase):
    """
    Tests of real clients and servers connected in memory: the test sets
    C{self.net} to a L{scserver.testing.MemoryNetwork} whose clock is
    C{self.clock}: a L{Clock} set to the current time (whole seconds, so
    that real JWTs verify).  L{wait} and L{run_until} drive it.

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
