"""
The Redis broker: publications travel between processes (and hosts)
through Redis pub/sub, optionally sharded over several Redis servers.

Give it as the C{broker} option::

    SCServer(reactor=reactor, broker="redis://127.0.0.1:6379/0",
             broker_prefix="chat:")
    twistd -n scserver --broker redis://127.0.0.1:6379/0 --broker-prefix chat:

The URLs (L{parse_url})
=======================

    - C{redis://[[user]:password@]host[:port][/db]}: TCP, port 6379 by
      default, database 0 by default;
    - C{rediss://...}: the same over TLS (the server's certificate is
      checked against the system trust store and the host name, or as
      the C{tls_options} of L{RedisBroker} says);
    - C{unix:///path/to/redis.sock[?db=N]} (a password as in
      C{unix://:password@/path/redis.sock}): a UNIX socket;
    - several of them separated by commas,
      C{redis://a:6379,redis://b:6379}: the channels are sharded over those
      independent Redis servers (L{shard_index}).

The password and user name may be percent-encoded.  A bad URL is an
C{InvalidOptionsError} of the C{broker} option (a usage error of C{twistd}).
Redis pub/sub ignores the database number (every database sees every
channel): the C{broker_prefix} option, not C{/db}, separates applications
that share a Redis.

What travels through Redis
==========================

A publication on channel C{CH} is a Redis C{PUBLISH} on the Redis channel
C{prefix + CH} (the C{broker_prefix} option, C{"scserver:"} by default,
then the channel name; both UTF-8), whose message is an B{envelope}
(L{encode_envelope}, L{decode_envelope}):

    - one byte, the envelope version: C{0x01} (L{ENVELOPE_VERSION});
    - then one MessagePack object, the publication's data:
        - C{dict} → map (keys of any type below), C{list} and C{tuple} →
          array (read back as C{list}), C{str} → str (UTF-8; lone
          surrogates, which the JSON codec can produce, are kept), C{bytes},
          C{bytearray} and C{memoryview} → bin (read back as C{bytes}),
          C{bool}, C{None}, C{float} → float 64 (NaN, the infinities and
          C{-0.0} included);
        - C{int} → int when it fits in 64 bits (C{-2**63} to C{2**64 - 1}),
          otherwise ext type 1 (L{BIGINT_EXT_TYPE}) holding the number as
          a signed big-endian two's complement of the fewest bytes (the
          JSON codec carries integers of any size).

So every value the JSON and min-bin codecs decode arrives unchanged.  Data
of any other type cannot be carried: L{RedisBroker.publish} fails with
C{BrokerError}.  A message whose version byte is not one this version reads
is dropped and reported once (a later version may change the format; the
version byte says which is in use, so the processes of one application
must run versions that share an envelope version).

Sharding
========

With several Redis servers, channel C{CH} lives on shard
C{jump_hash(key, N)} (L{jump_hash}, Lamping and Veach's jump consistent
hash) where C{key} is the first 8 bytes, big-endian, of the BLAKE2b digest
(8 bytes) of the UTF-8 channel name (L{channel_key}).  Every process
connects to every shard, publishes a channel's publications to its shard
and subscribes there.  Give every process the same list in the same order:
adding a shard at the end moves about C{1/N} of the channels (and only to
the new shard); removing or reordering shards moves many more.  Redis
Cluster is not used: each shard is an independent Redis server.

Connections and faults
======================

Per Redis server each process has one subscriber connection (C{SUBSCRIBE}
only to the channels that have local subscribers) and one command
connection (C{PUBLISH}).  Publications from one process on one channel
travel over that one command connection, so they reach every subscriber in
the order they were published.

When a Redis server goes away the publications routed to it fail with
C{BrokerError} (a publication is never reported as accepted when it was
not; one that failed may still have been delivered if the connection broke
after Redis took it) and so do new subscriptions to its channels.  The
broker reconnects with capped exponential backoff and jitter, subscribes
again to every channel that still has local subscribers, logs the outage
once (and its end), and reports it through the server's C{'warning'}
event.  The publications made while a process was cut off are lost for its
subscribers.  At start-up, L{RedisBroker.start} fires only once every shard
is connected, and the log says which shards it is waiting for every few
seconds.

The client library, C{txredisapi}, is imported when the broker first
connects (it imports Twisted's global reactor, which must not happen
before an application installs its own).
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
from typing import Any, Callable, Mapping, Optional, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import msgpack
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._logging import observer as log_observer
from ..errors import BrokerError
from ..interfaces import IAttachableBroker, IPresenceBroker, IPresenceStore

__all__ = [
    "RedisBroker",
    "execute_command",
    "RedisAddress",
    "parse_url",
    "client_available",
    "DEFAULT_PORT",
    "DEFAULT_PREFIX",
    "ENVELOPE_VERSION",
    "BIGINT_EXT_TYPE",
    "EnvelopeError",
    "encode_envelope",
    "decode_envelope",
    "channel_key",
    "jump_hash",
    "shard_index",
]

DEFAULT_PORT = 6379
"""The Redis port of a URL that names none."""

DEFAULT_PREFIX = "scserver:"
"""The default of the C{broker_prefix} option."""

ENVELOPE_VERSION = 1
"""The envelope version this module writes (and the only one it reads)."""

BIGINT_EXT_TYPE = 1
"""The MessagePack ext type of an integer that does not fit in 64 bits."""

_VERSION_BYTE = bytes([ENVELOPE_VERSION])

_SCHEMES = ("redis", "rediss", "unix")

_log = Logger(observer=log_observer)


# --------------------------------------------------------------------------
# The envelope
# --------------------------------------------------------------------------


class EnvelopeError(ValueError):
    """A message read from Redis is not an envelope this version reads."""


def _pack_default(value: object) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        # msgpack asks for the integers that do not fit in 64 bits.
        length = (value.bit_length() + 8) // 8
        return msgpack.ExtType(BIGINT_EXT_TYPE, value.to_bytes(length, "big", signed=True))
    if isinstance(value, memoryview):
        return value.tobytes()
    raise TypeError("a {} cannot travel through the Redis broker".format(type(value).__name__))


def _ext_hook(code: int, data: bytes) -> Any:
    if code == BIGINT_EXT_TYPE:
        return int.from_bytes(data, "big", signed=True)
    raise EnvelopeError("unknown MessagePack ext type {}".format(code))


def encode_envelope(data: Any) -> bytes:
    """
    Encode the data of a publication as the message of a Redis C{PUBLISH}
    (see the module's documentation for the format).

    @param data: the publication's data.
    @return: the envelope.
    @raise TypeError: C{data} holds a value of a type the envelope cannot
        carry.
    @raise ValueError: MessagePack cannot encode C{data} otherwise (a
        container too large, for instance).
    """
    try:
        body: bytes = msgpack.packb(data, use_bin_type=True, default=_pack_default,
                                    unicode_errors="surrogatepass")
    except (TypeError, ValueError):
        raise
    except Exception as e:  # msgpack's own errors (nesting, sizes)
        raise ValueError(str(e)) from e
    return _VERSION_BYTE + body


def decode_envelope(message: bytes) -> Any:
    """
    Decode a message read from Redis (the reverse of L{encode_envelope}).

    @param message: the message, C{bytes}.
    @return: the publication's data.
    @raise EnvelopeError: the message is not an envelope of
        L{ENVELOPE_VERSION}.
    """
    if not message:
        raise EnvelopeError("an empty message")
    if message[0] != ENVELOPE_VERSION:
        raise EnvelopeError("envelope version {} (this version reads {})".format(
            message[0], ENVELOPE_VERSION))
    try:
        return msgpack.unpackb(memoryview(message)[1:], raw=False, strict_map_key=False,
                               ext_hook=_ext_hook, unicode_errors="surrogatepass")
    except EnvelopeError:
        raise
    except Exception as e:
        raise EnvelopeError("not MessagePack: {}".format(e)) from e


# --------------------------------------------------------------------------
# Sharding
# --------------------------------------------------------------------------


def channel_key(channel: str) -> int:
    """
    The 64-bit key of a channel name for L{jump_hash}: the BLAKE2b digest
    (8 bytes) of its UTF-8 encoding, read as a big-endian number.
    """
    digest = hashlib.blake2b(channel.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def jump_hash(key: int, buckets: int) -> int:
    """
    Jump consistent hash (Lamping and Veach, 2014): the bucket of C{key}
    among C{buckets}.  Going from I{n} to I{n + 1} buckets moves about
    C{1/(n + 1)} of the keys, each to the new bucket.

    @param key: an integer from 0 to C{2**64 - 1}.
    @param buckets: the number of buckets, at least 1.
    @return: an integer from 0 to C{buckets - 1}.
    """
    if buckets < 1:
        raise ValueError("jump_hash needs at least one bucket")
    b, j = -1, 0
    key &= 0xFFFFFFFFFFFFFFFF
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_index(channel: str, shards: int) -> int:
    """The shard of C{channel} among C{shards}: C{jump_hash(channel_key(channel), shards)}."""
    if shards == 1:
        return 0
    return jump_hash(channel_key(channel), shards)


# --------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------


class RedisAddress:
    """
    One Redis server, as named by a URL (see L{parse_url}).

    @ivar scheme: C{"redis"}, C{"rediss"} (TLS) or C{"unix"}.
    @ivar host: the host name or address (C{None} for C{unix}).
    @ivar port: the port (C{None} for C{unix}).
    @ivar path: the socket's path (C{unix} only).
    @ivar db: the database number.
    @ivar username: the user name to authenticate with, or C{None}.
    @ivar password: the password to authenticate with, or C{None}.
    """

    def __init__(self, scheme: str, host: Optional[str] = None, port: Optional[int] = None,
                 path: Optional[str] = None, db: int = 0, username: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
        self.db = db
        self.username = username
        self.password = password

    @property
    def tls(self) -> bool:
        """Whether the connection is made over TLS (C{rediss://})."""
        return self.scheme == "rediss"

    def same_server(self, other: "RedisAddress") -> bool:
        """Whether C{other} names the same Redis server (the db aside)."""
        return (self.scheme == "unix") == (other.scheme == "unix") and (
            self.host, self.port, self.path) == (other.host, other.port, other.path)

    def __str__(self) -> str:
        """The URL without the password (for logs and messages)."""
        auth = ""
        if self.password is not None:
            auth = "{}:***@".format(self.username or "")
        if self.scheme == "unix":
            return "unix://{}{}{}".format(auth, self.path, "?db={}".format(self.db) if self.db
                                          else "")
        host = "[{}]".format(self.host) if self.host and ":" in self.host else self.host
        return "{}://{}{}:{}/{}".format(self.scheme, auth, host, self.port, self.db)

    def __repr__(self) -> str:
        return "<RedisAddress {}>".format(self)

    def endpoint(self, reactor: Any, timeout: float,
                 tls_options: Optional[Callable[[str], Any]] = None) -> Any:
        """
        The Twisted client endpoint of this server.

        @param reactor: the reactor to connect with.
        @param timeout: seconds to wait for the connection.
        @param tls_options: for C{rediss://}, makes the client TLS options
            from the host name (see L{RedisBroker.__init__}).
        @return: an C{IStreamClientEndpoint}.
        """
        from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS

        if self.scheme == "unix":
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        endpoint: Any = HostnameEndpoint(reactor, str(self.host), int(self.port or DEFAULT_PORT),
                                         timeout=timeout)
        if self.tls:
            if tls_options is None:
                from twisted.internet.ssl import optionsForClientTLS

                tls_options = optionsForClientTLS
            endpoint = wrapClientTLS(tls_options(str(self.host)), endpoint)
        return endpoint


def _number(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise ValueError("{} must be a number from 0, got {!r}".format(what, text))
    return int(text)


def _parse_one(text: str) -> RedisAddress:
    try:
        parts = urlsplit(text)
    except ValueError as e:
        raise ValueError("{!r}: {}".format(text, e)) from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or not text[len(scheme):].startswith("://"):
        raise ValueError("{!r}: expected redis://host:port/db, rediss://host:port/db or"
                         " unix:///path/redis.sock".format(text))
    if parts.fragment:
        raise ValueError("{!r}: a fragment (#...) means nothing here".format(text))
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and password is None:
        raise ValueError("{!r}: a user name needs a password (user:password@)".format(text))
    db: Optional[int] = None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "db" and db is None:
            db = _number(value, "{!r}: db".format(text))
        else:
            raise ValueError("{!r}: unknown or repeated parameter {!r} (only db=N is"
                             " known)".format(text, name))
    if scheme == "unix":
        if parts.hostname or parts.port is not None:
            raise ValueError("{!r}: a unix:// URL names a path, not a host:"
                             " unix:///path/redis.sock".format(text))
        if not parts.path or parts.path == "/":
            raise ValueError("{!r}: no socket path (unix:///path/redis.sock)".format(text))
        return RedisAddress(scheme, path=unquote(parts.path), db=db or 0, username=username,
                            password=password)
    host = parts.hostname
    if not host:
        raise ValueError("{!r}: no host".format(text))
    try:
        port = parts.port
    except ValueError:
        raise ValueError("{!r}: bad port {!r} (expected 1 to 65535)".format(
            text, parts.netloc.rpartition(":")[2])) from None
    if port is None:
        if parts.netloc.endswith(":"):
            raise ValueError("{!r}: empty port".format(text))
        port = DEFAULT_PORT
    if not 0 < port < 65536:
        raise ValueError("{!r}: bad port {} (expected 1 to 65535)".format(text, port))
    path = parts.path
    if path not in ("", "/"):
        if db is not None:
            raise ValueError("{!r}: the db is given twice (/db and ?db=)".format(text))
        db = _number(path[1:], "{!r}: the db (/db)".format(text))
    return RedisAddress(scheme, host=host, port=port, db=db or 0, username=username,
                        password=password)


def parse_url(url: str) -> list[RedisAddress]:
    """
    Parse the Redis URL of the C{broker} option: one URL, or several
    separated by commas (one per shard, in shard order).

    @param url: e.g. C{"redis://:secret@10.0.0.5:6379/0"} or
        C{"redis://a:6379,redis://b:6379"}.
    @return: the addresses, one per shard.
    @raise ValueError: with a one-line explanation, for a bad scheme, host,
        port or db, an unknown parameter, an empty element of the list or
        a server listed twice.
    """
    if not isinstance(url, str):
        raise ValueError("a Redis URL is a string, not a {}".format(type(url).__name__))
    elements = url.strip().split(",")
    addresses: list[RedisAddress] = []
    for number, element in enumerate(elements, 1):
        element = element.strip()
        if not element:
            raise ValueError("shard {} of {} is empty (the URLs are separated by single"
                             " commas)".format(number, len(elements)))
        address = _parse_one(element)
        for other in addresses:
            if address.same_server(other):
                raise ValueError("{} is listed twice".format(address))
        addresses.append(address)
    return addresses


def client_available() -> bool:
    """Whether C{txredisapi}, the Redis client library, is installed."""
    return importlib.util.find_spec("txredisapi") is not None


# --------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------

_PROTOCOLS: dict[bool, Any] = {}


def _protocol_class(subscriber: bool) -> Any:
    """
    The protocol class of a command (C{subscriber=False}) or subscriber
    connection, on C{txredisapi}'s protocols (which use C{hiredis} when it
    is installed).  Made on first use: C{txredisapi} imports the global
    reactor.
    """
    cls = _PROTOCOLS.get(subscriber)
    if cls is not None:
        return cls
    import txredisapi

    base = txredisapi.SubscriberProtocol if subscriber else txredisapi.RedisProtocol

    class RedisConnection(base):  # type: ignore[misc,valid-type]
        """One connection of a L{_Link}: bytes in, bytes out, no numbers guessed."""

        def __init__(self, link: "_Link") -> None:
            base.__init__(self, charset=None, replyTimeout=link.broker.reply_timeout,
                          convertNumbers=False)
            # txredisapi schedules through the global reactor otherwise.
            self.callLater = link.broker.reactor.callLater
            self.link = link

        def connectionMade(self) -> Any:
            setKeepAlive = getattr(self.transport, "setTcpKeepAlive", None)
            if setKeepAlive is not None:
                try:
                    setKeepAlive(1)
                except Exception:
                    pass
            return base.connectionMade(self)

        def connectionLost(self, why: Any) -> None:
            # The link first, so that the shard is down before the pending
            # commands fail.
            self.link.lost(self, why)
            try:
                base.connectionLost(self, why)
            finally:
                self.link.gone(self)

        def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
            self.link.shard.received(channel, message)

    _PROTOCOLS[subscriber] = RedisConnection
    return RedisConnection


def execute_command(protocol: Any, *args: Any) -> Deferred[Any]:
    """
    Send one command on a txredisapi C{protocol}; a connection that is not
    usable fails the Deferred rather than raising.
    """
    try:
        d: Deferred[Any] = protocol.execute_command(*args)
    except Exception as e:
        return fail(e)
    return d


def _reason(failure: Any) -> str:
    """A short text for a connection failure (a C{Failure} or an exception)."""
    value = failure.value if isinstance(failure, Failure) else failure
    text = str(value) or type(value).__name__
    return text.rstrip(".")


class _LinkFactory(Factory):
    noisy = False

    def __init__(self, link: "_Link") -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> Any:
        protocol = _protocol_class(self.link.subscriber)(self.link)
        protocol.factory = self
        return protocol


class _Link:
    """
    One connection to one shard, re-made after it is lost (capped
    exponential backoff with jitter) until L{stop}.

    @ivar protocol: the connection once ready (authenticated, database
        selected, channels subscribed), else C{None}.
    """

    def __init__(self, shard: "_Shard", subscriber: bool) -> None:
        self.shard = shard
        self.broker = shard.broker
        self.subscriber = subscriber
        self.role = "subscriber" if subscriber else "command"
        self.protocol: Any = None
        self.attempts = 0
        self.stopped = True
        self.connecting: Optional[Deferred[Any]] = None
        self.preparing: Any = None
        self.retry: Any = None
        self.closed: dict[Any, Deferred[None]] = {}
        self.lost_reason: Any = None

    def start(self) -> None:
        self.stopped = False
        self.attempts = 0
        self.connect()

    def connect(self) -> None:
        self.retry = None
        if self.stopped:
            return
        endpoint = self.shard.address.endpoint(self.broker.reactor, self.broker.connect_timeout,
                                               self.broker.tls_options)
        d = self.connecting = endpoint.connect(_LinkFactory(self))
        d.addCallback(self.prepare)
        d.addCallbacks(self.ready, self.failed)

    def prepare(self, protocol: Any) -> Deferred[Any]:
        self.preparing = protocol
        self.lost_reason = None
        self.closed[protocol] = Deferred()
        address = self.shard.address
        commands: list[tuple[Any, ...]] = []
        if address.password is not None:
            if address.username:
                commands.append(("AUTH", address.username, address.password))
            else:
                commands.append(("AUTH", address.password))
        # One round trip at least: the connection is ready once Redis
        # answered (past the TLS handshake, for rediss://).
        commands.append(("PING",))
        channels: list[str] = []
        if self.subscriber:
            channels = sorted(self.shard.channels)
            commands.extend(("SUBSCRIBE", self.broker.key(channel)) for channel in channels)
        elif address.db:
            commands.append(("SELECT", address.db))
        # Pipelined: every command is written at once, and the replies come
        # in order.
        waits = [execute_command(protocol, *command) for command in commands]
        d = DeferredList(waits, fireOnOneErrback=True, consumeErrors=True)

        def done(_: object) -> tuple[Any, list[str]]:
            return (protocol, channels)

        def first_error(failure: Failure) -> Failure:
            first = getattr(failure.value, "subFailure", None)
            return first if isinstance(first, Failure) else failure

        return d.addCallbacks(done, first_error)

    def ready(self, result: tuple[Any, list[str]]) -> None:
        protocol, channels = result
        self.connecting = None
        self.preparing = None
        if self.stopped or not protocol.connected:
            protocol.transport.loseConnection()
            if not self.stopped:
                self.failed(BrokerError("the connection closed while it was being set up"))
            return
        self.protocol = protocol
        self.attempts = 0
        if self.subscriber:
            # Channels left, or asked for, while the subscriptions were
            # being restored.
            for channel in set(channels) - self.shard.channels:
                execute_command(protocol, "UNSUBSCRIBE", self.broker.key(channel)).addErrback(
                    lambda f: None)
            for channel in self.shard.channels - set(channels):
                execute_command(protocol, "SUBSCRIBE", self.broker.key(channel)).addErrback(
                    lambda f: None)
        self.shard.link_up(self, len(channels))

    def failed(self, failure: Any) -> None:
        self.connecting = None
        if self.lost_reason is not None:
            # The connection closed while being set up: why says more than
            # the failed command ("Lost connection").
            failure, self.lost_reason = self.lost_reason, None
        protocol, self.preparing = self.preparing, None
        if protocol is not None and protocol.connected and protocol.transport is not None:
            protocol.transport.abortConnection()
        if self.stopped:
            return
        self.shard.link_failed(self, failure)
        self.schedule()

    def schedule(self) -> None:
        delay = self.broker.retry_delay(self.attempts)
        self.attempts += 1
        self.retry = self.broker.reactor.callLater(delay, self.connect)

    def lost(self, protocol: Any, why: Failure) -> None:
        if protocol is not self.protocol:
            if protocol is self.preparing:
                self.lost_reason = why  # failed() follows
            return
        self.protocol = None
        if self.stopped:
            return
        self.shard.link_down(self, why)
        self.schedule()

    def gone(self, protocol: Any) -> None:
        closed = self.closed.pop(protocol, None)
        if closed is not None:
            closed.callback(None)

    def stop(self) -> Deferred[Any]:
        self.stopped = True
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None
        if self.connecting is not None:
            connecting, self.connecting = self.connecting, None
            connecting.cancel()
        waits = list(self.closed.values())
        for protocol in list(self.closed):
            if protocol.connected and protocol.transport is not None:
                transport = protocol.transport
                transport.loseConnection()
                # A Redis that stopped reading must not hold up the stop.
                abort = self.broker.reactor.callLater(
                    self.broker.connect_timeout, transport.abortConnection)

                def closed(result: object, abort: Any = abort) -> None:
                    if abort.active():
                        abort.cancel()

                self.closed[protocol].addCallback(closed)
        self.protocol = None
        return DeferredList(waits, consumeErrors=True)


class _Shard:
    """
    One Redis server: its two links and the channels this process wants
    there.

    @ivar channels: the channels with local subscribers (subscribed, or to
        be subscribed again after a reconnection).
    @ivar up: whether both links are ready.
    """

    def __init__(self, broker: "RedisBroker", index: int, address: RedisAddress) -> None:
        self.broker = broker
        self.index = index
        self.address = address
        self.channels: set[str] = set()
        self.command = _Link(self, subscriber=False)
        self.subscriber = _Link(self, subscriber=True)
        self.up = False
        self.was_up = False
        self.down_since: Optional[float] = None
        self.last_wait_log: Optional[float] = None
        self.resubscribed = 0

    def __str__(self) -> str:
        if len(self.broker.shards) == 1:
            return "Redis {}".format(self.address)
        return "Redis shard {} ({})".format(self.index, self.address)

    def start(self) -> None:
        self.up = False
        self.was_up = False
        self.down_since = None
        self.last_wait_log = None
        self.command.start()
        self.subscriber.start()

    def stop(self) -> Deferred[Any]:
        self.up = False
        return DeferredList([self.command.stop(), self.subscriber.stop()], consumeErrors=True)

    def link_up(self, link: _Link, resubscribed: int) -> None:
        if link.subscriber:
            self.resubscribed = resubscribed
        if self.command.protocol is None or self.subscriber.protocol is None:
            return
        self.up = True
        if self.down_since is not None:
            _log.info("{shard} is back after {seconds:.1f} s; subscribed again to {count}"
                      " channel(s)", shard=str(self), seconds=self.broker.reactor.seconds()
                      - self.down_since, count=self.resubscribed)
            self.down_since = None
        self.was_up = True
        self.broker.shard_up(self)

    def link_down(self, link: _Link, why: Failure) -> None:
        if not self.up:
            return
        self.up = False
        self.broker.shard_down(self)
        self.down_since = self.broker.reactor.seconds()
        message = ("Lost the {role} connection to {shard}: {reason}; publications on its"
                   " channels fail and its {count} subscribed channel(s) miss publications"
                   " until it is back (reconnecting)")
        fields = dict(role=link.role, shard=str(self), reason=_reason(why),
                      count=len(self.channels))
        _log.warn(message, **fields)
        self.broker.report(BrokerError(message.format(**fields)))
        # The other link may be fine, or about to find out it is not: if it
        # is fine it stays, and the shard is up again with this one.

    def link_failed(self, link: _Link, failure: Any) -> None:
        if self.was_up:
            _log.debug("{shard}: {role} connection attempt failed: {reason}",
                       shard=str(self), role=link.role, reason=_reason(failure))
            return
        now = self.broker.reactor.seconds()
        if self.last_wait_log is None or now - self.last_wait_log >= self.broker.wait_log_interval:
            self.last_wait_log = now
            _log.warn("Waiting for {shard}: {reason}; the server is not ready until every"
                      " Redis shard is connected (retrying)",
                      shard=str(self), reason=_reason(failure))

    def unavailable(self) -> BrokerError:
        return BrokerError("{} is unavailable".format(self))

    def received(self, channel: bytes, message: bytes) -> None:
        self.broker.received(channel, message)


# --------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------


@implementer(IAttachableBroker, IPresenceBroker)
class RedisBroker:
    """
    An L{scserver.interfaces.IBroker} on Redis pub/sub, sharded over one or
    more Redis servers (see the module's documentation).

    @ivar reactor: the reactor it connects with.
    @ivar addresses: the L{RedisAddress} of every shard, in shard order.
    @ivar prefix: the prefix of the Redis channel names (see
        L{scserver.interfaces.IAttachableBroker.attach}).
    @ivar subscriptions: the channels this process is subscribed to.
    @ivar extensions: first byte → C{handler(channel, message)}: the
        messages from Redis whose first byte is a key are given to its
        handler instead of being read as an envelope (the channel history
        of L{scserver._history} publishes its own messages).
    """

    def __init__(self, addresses: Sequence[RedisAddress], reactor: Any,
                 prefix: Optional[str] = None, warn: Optional[Callable[[Any], object]] = None,
                 connect_timeout: float = 10.0, reply_timeout: Optional[float] = 30.0,
                 reconnect_initial_delay: float = 0.2, reconnect_max_delay: float = 10.0,
                 wait_log_interval: float = 5.0,
                 tls_options: Optional[Callable[[str], Any]] = None) -> None:
        """
        @param addresses: the shards (see L{parse_url}); at least one.
        @param reactor: the reactor to connect with.
        @param prefix: the prefix of the Redis channel names; C{None} takes
            the server's C{broker_prefix} option (L{DEFAULT_PREFIX} until a
            server attaches the broker).
        @param warn: called with a C{BrokerError} when a Redis server is
            lost (the server attaching the broker passes its C{'warning'}
            event).
        @param connect_timeout: seconds for a connection attempt.
        @param reply_timeout: seconds to wait for a reply from Redis before
            the connection is deemed dead and made again (C{None}: forever).
        @param reconnect_initial_delay: seconds before the first attempt to
            reconnect; the delay doubles after each failed attempt, up to
            C{reconnect_max_delay}, and is drawn between half of it and all
            of it (jitter).
        @param reconnect_max_delay: see C{reconnect_initial_delay}.
        @param wait_log_interval: while the broker starts, seconds between
            two log lines about a shard it is still waiting for.
        @param tls_options: for the C{rediss://} shards: called with the
            host name, returns the client TLS options (an
            C{IOpenSSLClientConnectionCreator}), e.g. C{lambda host:
            optionsForClientTLS(host, trustRoot=Certificate.loadPEM(ca))}
            for a private certificate authority.  By default the
            certificate is checked against the system trust store
            (C{optionsForClientTLS(host)}).
        """
        if not addresses:
            raise ValueError("RedisBroker needs at least one address")
        self.reactor: Any = reactor
        self.addresses = list(addresses)
        self.prefix: str = DEFAULT_PREFIX if prefix is None else prefix
        self._prefix_bytes = self.prefix.encode("utf-8", "surrogatepass")
        self._explicit_prefix = prefix is not None
        self._warn = warn
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.reconnect_initial_delay = reconnect_initial_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.wait_log_interval = wait_log_interval
        self.tls_options = tls_options
        self.subscriptions: set[str] = set()
        self.shards = [_Shard(self, index, address) for index, address in enumerate(addresses)]
        self._deliver: Optional[Callable[[str, Any], object]] = None
        self._started = False
        self._ready = False
        self._announced = False
        self._waiting: list[Deferred[None]] = []
        self._starting: list[Deferred[None]] = []
        self._reported: set[str] = set()
        self._random = random.Random()
        self.extensions: dict[int, Callable[[str, bytes], object]] = {}

    @classmethod
    def from_url(cls, url: str, reactor: Any, **kwargs: Any) -> "RedisBroker":
        """
        Make a broker for the C{broker} option's URL (see L{parse_url}).

        @param kwargs: passed on to L{RedisBroker.__init__}.
        @raise ValueError: for a bad URL.
        """
        return cls(parse_url(url), reactor, **kwargs)

    def __repr__(self) -> str:
        return "<RedisBroker {}>".format(",".join(str(a) for a in self.addresses))

    # -- IAttachableBroker ------------------------------------------------

    def attach(self, options: Mapping[str, Any], warn: Callable[[Any], object]) -> None:
        """
        Take the server's C{broker_prefix} (unless a prefix was given to
        the constructor) and its C{warn}.
        """
        if not self._explicit_prefix:
            self.prefix = options.get("broker_prefix", DEFAULT_PREFIX)
            self._prefix_bytes = self.prefix.encode("utf-8", "surrogatepass")
        self._warn = warn

    # -- IBroker ---------------------------------------------------------

    def start(self, deliver: Callable[[str, Any], object]) -> Deferred[None]:
        """
        Connect to every shard (and subscribe again to the channels that
        still have local subscribers).

        @param deliver: called as C{deliver(channel, data)} for every
            publication on a subscribed channel.
        @return: a Deferred that fires once every shard is connected; until
            then the log says which shards are awaited every few seconds.
        """
        self._deliver = deliver
        if not self._started:
            self._started = True
            self._ready = False
            self._announced = False
            for shard in self.shards:
                shard.start()
        if self._ready:
            return succeed(None)
        # Apart from when_connected()'s: a stop drops them (a server that
        # closed before the broker connected must not become ready).
        waiter: Deferred[None] = Deferred()
        self._starting.append(waiter)
        return waiter

    @property
    def connected(self) -> bool:
        """Whether both connections to every shard are ready."""
        return self._ready

    def when_connected(self) -> Deferred[None]:
        """
        A Deferred that fires once both connections to every shard are
        ready: at once when they are, or when the broker has (re)connected
        (after L{start}, or after an outage: the channels with local
        subscribers are subscribed again by then).  It never fires while
        the broker is stopped.
        """
        if self._ready:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def subscribe(self, channel: str) -> Deferred[None]:
        """
        C{SUBSCRIBE} to C{channel} on its shard.

        Before the broker first connected (an application subscribing at
        start-up), the subscription is made as the connection is, and the
        Deferred fires once every shard is connected.

        @return: a Deferred that fires once Redis confirmed; fails with
            C{BrokerError} when the shard is unavailable (lost after it was
            connected).
        """
        shard = self.shards[shard_index(channel, len(self.shards))]
        if channel in shard.channels:
            return succeed(None)
        protocol = shard.subscriber.protocol
        if protocol is None:
            if shard.was_up:
                return fail(shard.unavailable())
            # Not connected yet (an application subscribes at start-up):
            # subscribed as the connection is made.
            shard.channels.add(channel)
            self.subscriptions.add(channel)
            return self.when_connected()
        shard.channels.add(channel)
        self.subscriptions.add(channel)

        def failed(failure: Failure) -> None:
            shard.channels.discard(channel)
            self.subscriptions.discard(channel)
            raise BrokerError("Subscribing to {!r} on {} failed: {}".format(
                channel, shard, _reason(failure)))

        return execute_command(protocol, "SUBSCRIBE", self.key(channel)).addCallbacks(
            lambda _: None, failed)

    def unsubscribe(self, channel: str) -> Deferred[None]:
        """C{UNSUBSCRIBE} from C{channel} (nothing to do while its shard is down)."""
        shard = self.shards[shard_index(channel, len(self.shards))]
        shard.channels.discard(channel)
        self.subscriptions.discard(channel)
        protocol = shard.subscriber.protocol
        if protocol is None:
            return succeed(None)
        # A lost connection takes its subscriptions with it: nothing fails.
        return execute_command(protocol, "UNSUBSCRIBE", self.key(channel)).addBoth(lambda _: None)

    def publish(self, channel: str, data: Any) -> Deferred[None]:
        """
        C{PUBLISH} C{data} (as an envelope) on C{channel}'s shard.

        @return: a Deferred that fires once Redis accepted the publication,
            or fails with C{BrokerError} when the shard is unavailable, the
            connection breaks before Redis answered, or C{data} cannot be
            carried.
        """
        if self._deliver is None:
            return fail(BrokerError("The broker is not started"))
        try:
            message = encode_envelope(data)
        except (TypeError, ValueError) as e:
            return fail(BrokerError("Cannot publish on {!r}: {}".format(channel, e)))
        shard = self.shards[shard_index(channel, len(self.shards))]
        protocol = shard.command.protocol
        if protocol is None:
            return fail(shard.unavailable())

        def failed(failure: Failure) -> None:
            raise BrokerError("Publishing on {!r} through {} failed: {}".format(
                channel, shard, _reason(failure)))

        return execute_command(protocol, "PUBLISH", self.key(channel), message).addCallbacks(
            lambda _: None, failed)

    def execute(self, channel: str, *command: Any) -> Deferred[Any]:
        """
        Run one Redis command on the command connection of C{channel}'s
        shard (for the keys of that channel).

        @return: a Deferred firing with the reply; fails with
            C{BrokerError} when the shard is unavailable.
        """
        shard = self.shards[shard_index(channel, len(self.shards))]
        protocol = shard.command.protocol
        if protocol is None:
            return fail(shard.unavailable())
        return execute_command(protocol, *command)

    def presence_store(self, clock: Any, expiry: float) -> IPresenceStore:
        """
        A hash per channel and a heartbeat per process
        (L{scserver._presence.RedisPresenceStore}).
        """
        from .._presence import RedisPresenceStore

        return RedisPresenceStore(self, clock, expiry)

    def stop(self) -> Deferred[None]:
        """Close every connection; the Deferred fires once they are closed."""
        self._deliver = None
        if not self._started:
            return succeed(None)
        self._started = False
        self._ready = False
        self._starting = []
        d = DeferredList([shard.stop() for shard in self.shards], consumeErrors=True)
        return d.addCallback(lambda _: None)

    # -- internals used by the shards -------------------------------------

    def key(self, channel: str) -> bytes:
        """The Redis channel name of C{channel}: the prefix and the name, UTF-8."""
        return self._prefix_bytes + channel.encode("utf-8", "surrogatepass")

    def retry_delay(self, attempt: int) -> float:
        """Seconds before reconnection attempt C{attempt} (0 for the first)."""
        base = min(self.reconnect_max_delay,
                   self.reconnect_initial_delay * 2.0 ** min(attempt, 32))
        return base * (0.5 + 0.5 * self._random.random())

    def shard_up(self, shard: _Shard) -> None:
        """Called by a shard when both its connections are ready."""
        if self._ready or not all(s.up for s in self.shards):
            return
        self._ready = True
        if not self._announced:
            self._announced = True
            _log.info("Connected to {count} Redis server(s): {servers}",
                      count=len(self.shards),
                      servers=", ".join(str(a) for a in self.addresses))
        # Subscriptions made before the connection first: the server is
        # ready with them in place.
        waiting, self._waiting = self._waiting + self._starting, []
        self._starting = []
        for waiter in waiting:
            waiter.callback(None)

    def shard_down(self, shard: _Shard) -> None:
        """Called by a shard when it lost a connection."""
        self._ready = False

    def report(self, error: BrokerError) -> None:
        """Report C{error} through the server's C{'warning'} event."""
        if self._warn is not None:
            try:
                self._warn(error)
            except Exception:
                _log.failure("Error in the warning handler of the Redis broker")

    def received(self, channel: bytes, message: bytes) -> None:
        """Hand a message from Redis to C{deliver}."""
        deliver = self._deliver
        if deliver is None:
            return
        prefix = self._prefix_bytes
        if not channel.startswith(prefix):
            return
        name = channel[len(prefix):].decode("utf-8", "surrogatepass")
        if name not in self.subscriptions:
            return
        extension = self.extensions.get(message[0]) if message else None
        if extension is not None:
            try:
                extension(name, message)
            except Exception:
                _log.failure("Error delivering a message on {channel!r}", channel=name)
            return
        try:
            data = decode_envelope(message)
        except EnvelopeError as e:
            reason = str(e)
            if reason not in self._reported:
                self._reported.add(reason)
                text = ("Dropped a publication on {!r} (and will drop the next ones of this kind"
                        " silently): {}; another program, or an scserver of another envelope"
                        " version, publishes under the prefix {!r}").format(
                    name, reason, self.prefix)
                _log.warn("{text}", text=text)
                self.report(BrokerError(text))
            return
        try:
            deliver(name, data)
        except Exception:
            _log.failure("Error delivering a publication on {channel!r}", channel=name)
