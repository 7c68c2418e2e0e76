"""
Presence: who is subscribed to a channel, across every process.

The server makes one L{PresenceTracker} (C{server.exchange.presence_tracker});
the exchange tells it when a socket joins or leaves a channel whose name
matches the C{presence_channels} option, and it keeps the member in the
broker's presence store (L{scserver.interfaces.IPresenceStore}, made by a
broker that provides L{scserver.interfaces.IPresenceBroker}):

    - L{MemoryPresenceStore} for the in-process broker: a table;
    - L{RedisPresenceStore} for the Redis broker: a hash per channel on the
      channel's shard, and a heartbeat key per process with a time to live
      (see its documentation), so that the members of a process that died
      disappear after C{presence_expiry} seconds.

Join and leave notices travel as publications on an internal channel,
C{PRESENCE_CHANNEL_PREFIX + channel}, which clients can neither subscribe
nor publish to; a process subscribes to it while a server-side channel has
C{'join'} or C{'leave'} handlers.  Clients that do not ask for presence see
exactly the frames they saw before.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._logging import observer as log_observer
from ._events import failure_log_for
from .errors import BrokerError, InvalidActionError, InvalidArgumentsError, SCError
from .brokers.redis import execute_command
from .interfaces import IPresenceBroker, IPresenceStore
from .socket import INTERNAL_CHANNEL_PREFIX

if TYPE_CHECKING:
    from .exchange import Exchange, SCChannel
    from .socket import SCServerSocket

__all__ = [
    "PRESENCE_CHANNEL_PREFIX",
    "MAX_INFO_BYTES",
    "PresenceTracker",
    "MemoryPresenceStore",
    "RedisPresenceStore",
    "validate_presence_options",
    "token_presence_info",
]

PRESENCE_CHANNEL_PREFIX = INTERNAL_CHANNEL_PREFIX + "presence:"
"""The prefix of the internal channels that carry join and leave notices
(C{PRESENCE_CHANNEL_PREFIX + channel}); clients may not use channel names
that start with L{scserver.socket.INTERNAL_CHANNEL_PREFIX}."""

MAX_INFO_BYTES = 4096
"""The largest C{presence_info} of one member, in bytes of JSON; a larger
one is replaced by C{{}} (and reported once)."""

SWEEP_PER_TICK = 8
"""Channels whose dead members a Redis presence store looks for at each
heartbeat (round robin over the channels with local members)."""

Record = dict[str, Any]
"""A member's record: C{joined} (a Unix time), C{user} (the value of the
C{presence_user_claim} claim of its token, or C{None}) and C{info} (what
C{presence_info} returned)."""

_log = Logger(observer=log_observer)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def _patterns(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(p) for p in value if str(p)]
    return [part for part in str(value).replace(",", " ").split() if part]


def validate_presence_options(merged: dict[str, Any]) -> None:
    """
    Check and normalise the presence options of a merged option dict (called
    by L{scserver.options.validate_options}).

    @raise ValueError: for a bad value.
    @raise TypeError: for a value of a bad type.
    """
    from .options import load_object

    merged["presence_channels"] = _patterns(merged.get("presence_channels"))
    claim = merged.get("presence_user_claim")
    if claim is not None and not isinstance(claim, str):
        raise TypeError("presence_user_claim must be a string")
    merged["presence_expiry"] = float(merged["presence_expiry"])
    if merged["presence_expiry"] <= 0:
        raise ValueError("presence_expiry must be positive")
    merged["presence_max_members"] = int(merged["presence_max_members"])
    if merged["presence_max_members"] <= 0:
        raise ValueError("presence_max_members must be positive")
    rate = merged.get("presence_notices_per_second")
    if rate is not None:
        merged["presence_notices_per_second"] = float(rate)
        if merged["presence_notices_per_second"] <= 0:
            raise ValueError("presence_notices_per_second must be positive (or None)")
    info = merged.get("presence_info")
    if isinstance(info, str):
        info = merged["presence_info"] = load_object(info.strip(), "presence_info")
    if info is not None and not callable(info):
        raise TypeError("presence_info must be a callable (socket -> dict) or"
                        " pkg.module:name")


def token_presence_info(socket: "SCServerSocket") -> dict[str, Any]:
    """
    A C{presence_info} that exposes each member's auth token (as
    C{auth_token}; C{None} for a socket without one).  Use it only when
    every client allowed to see presence may see the others' tokens.
    """
    return {"auth_token": socket.auth_token}


def _view(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a member exposes: its C{presence_info}, and C{joined}."""
    view = dict(record.get("info") or {})
    view["joined"] = record.get("joined")
    return view


class _Bucket:
    """A token bucket: C{rate} per second, one second's burst."""

    def __init__(self, now: Callable[[], float], rate: Optional[float]) -> None:
        self.now = now
        self.rate = rate
        self.tokens = rate or 0.0
        self.last = now()

    def take(self) -> bool:
        if self.rate is None:
            return True
        now = self.now()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# --------------------------------------------------------------------------
# The tracker
# --------------------------------------------------------------------------


class PresenceTracker:
    """
    The presence of one server (C{server.exchange.presence_tracker}).

    @ivar patterns: the C{presence_channels} patterns (C{fnmatch} globs).
    @ivar store: the broker's L{scserver.interfaces.IPresenceStore}, or
        C{None} when the broker keeps no presence (or presence is off).
    @ivar dropped_notices: join and leave notices not published because of
        the C{presence_notices_per_second} limit.
    """

    def __init__(self, exchange: "Exchange", broker: Any, clock: Any,
                 options: Mapping[str, Any], middleware: Any = None) -> None:
        """
        @param exchange: the server's exchange.
        @param broker: the server's broker.
        @param clock: the reactor (C{IReactorTime}).
        @param options: the server's validated options.
        @param middleware: the server's
            L{scserver.middleware.MiddlewareChain} (for C{#presence}).
        """
        self.exchange = exchange
        self.broker = broker
        self.clock = clock
        self.middleware = middleware
        self.patterns: list[str] = list(options.get("presence_channels") or [])
        self.user_claim: Optional[str] = options.get("presence_user_claim", "sub")
        self.expiry: float = options.get("presence_expiry", 30.0)
        self.max_members: int = options.get("presence_max_members", 1000)
        self.allow_client: bool = bool(options.get("allow_client_presence", False))
        self.info: Optional[Callable[[Any], Any]] = options.get("presence_info")
        self.max_channel_name_length: int = options.get("max_channel_name_length", 256)
        self.dropped_notices = 0
        self._regex = (re.compile("|".join(fnmatch.translate(p) for p in self.patterns))
                       if self.patterns else None)
        # The reactor's time (a Clock in tests); the system time for a
        # reactor without one.
        self._now: Callable[[], float] = getattr(clock, "seconds", time.time)
        self._bucket = _Bucket(self._now, options.get("presence_notices_per_second", 1000.0))
        self._local: dict[str, dict[str, Record]] = {}
        self._listening: dict[str, tuple["SCChannel", "SCChannel", Callable[[Any], object]]] = {}
        self._reads: dict[str, list[Deferred[dict[str, Record]]]] = {}
        self._reported: set[str] = set()
        self.store: Optional[IPresenceStore] = None
        self._started = False
        if self.patterns and not IPresenceBroker.providedBy(broker):
            _log.warn("The presence_channels option is set but the broker {broker!r} keeps no"
                      " presence (it does not provide IPresenceBroker): presence() fails",
                      broker=broker)

    # -- configuration -----------------------------------------------------

    def tracks(self, channel: str) -> bool:
        """Whether the presence of C{channel} is kept (C{presence_channels})."""
        return (self._regex is not None and not channel.startswith(PRESENCE_CHANNEL_PREFIX)
                and self._regex.match(channel) is not None)

    def _store(self) -> IPresenceStore:
        if self.store is None:
            if not IPresenceBroker.providedBy(self.broker):
                raise InvalidActionError(
                    "The broker {!r} keeps no presence (it does not provide"
                    " IPresenceBroker)".format(self.broker))
            self.store = IPresenceStore(self.broker.presence_store(self.clock, self.expiry))
        if not self._started:
            self._started = True
            self.store.start(self._local_members, self._gone)
        return self.store

    def _local_members(self) -> Mapping[str, Mapping[str, Record]]:
        return self._local

    # -- joins and leaves (from the exchange) -------------------------------

    def subscribed(self, result: object, socket: "SCServerSocket", channel: str) -> object:
        """
        A callback of the exchange's subscription of C{socket} to
        C{channel}: C{socket} joins the channel's presence (when it is
        still subscribed).

        @return: a Deferred firing with C{result} once the store took the
            member (or failed to: the subscription goes on, and the store
            writes the member again later), so that a client whose
            subscription was acknowledged is seen by every process.
        """
        if socket.is_subscribed(channel):
            try:
                return self.join(socket, channel).addCallback(lambda _: result)
            except Exception:
                _log.failure("Presence: the join of {id} to {channel!r} failed",
                             id=socket.id, channel=channel)
        return result

    def join(self, socket: "SCServerSocket", channel: str) -> Deferred[None]:
        """
        Note that C{socket} joined C{channel} (a tracked channel).

        @return: a Deferred firing once the store took it (never failing).
        """
        members = self._local.setdefault(channel, {})
        if socket.id in members:
            return succeed(None)
        record = self._record(socket)
        members[socket.id] = record
        try:
            store = self._store()
        except InvalidActionError:
            return succeed(None)
        d: Deferred[Any] = maybeDeferred(store.add, channel, socket.id, record)
        d.addCallbacks(lambda _: None, self._store_failed, errbackArgs=("add", channel))
        self._notice(channel, "join", socket.id, record)
        return d

    def unsubscribed(self, socket: "SCServerSocket", channel: str) -> None:
        """Note that C{socket} left C{channel} (any channel: cheap when untracked)."""
        members = self._local.get(channel)
        if members is None:
            return
        record = members.pop(socket.id, None)
        if record is None:
            return
        if not members:
            del self._local[channel]
        if self.store is None:
            return
        maybeDeferred(self.store.remove, channel, socket.id).addErrback(
            self._store_failed, "remove", channel)
        self._notice(channel, "leave", socket.id, record)

    def _record(self, socket: "SCServerSocket") -> Record:
        user = None
        token = socket.auth_token
        if self.user_claim and type(token) is dict:
            user = token.get(self.user_claim)
            if user is not None and not isinstance(user, (str, int, float, bool)):
                user = json.dumps(user, sort_keys=True, default=str)
        info: Any = {}
        if self.info is not None:
            try:
                info = self.info(socket)
            except Exception:
                failure_log_for(self.clock).failure(_log, "Error in the presence_info hook")
                info = {}
            if info is None:
                info = {}
            if type(info) is not dict:
                self._report_once("info-type", "presence_info returned a {}, not a dict:"
                                  " ignored".format(type(info).__name__))
                info = {}
            else:
                try:
                    size = len(json.dumps(info, separators=(",", ":")).encode("utf-8"))
                except (TypeError, ValueError):
                    size = None
                if size is None or size > MAX_INFO_BYTES:
                    self._report_once("info-size", "presence_info returned more than {} bytes"
                                      " of JSON (or not JSON): ignored".format(MAX_INFO_BYTES))
                    info = {}
        joined = round(float(self._now()), 3)
        return {"joined": joined, "user": user, "info": info}

    def _report_once(self, key: str, text: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            _log.warn("Presence: {text}", text=text)

    def _store_failed(self, failure: Failure, what: str, channel: str) -> None:
        # The store repairs itself (a Redis store registers every local
        # member again once it is back): logged, not raised.
        _log.debug("Presence: {what} on {channel!r} failed: {reason}", what=what,
                   channel=channel, reason=failure.getErrorMessage())

    def _gone(self, channel: str, member: str, record: Record) -> None:
        """A store removed a dead process's member: tell the listeners."""
        self._notice(channel, "leave", member, record)

    # -- notices -------------------------------------------------------------

    def _notice(self, channel: str, event: str, member: str, record: Record) -> None:
        if not self._bucket.take():
            self.dropped_notices += 1
            self._report_once("notices", "more than {} join/leave notices per second: the"
                              " excess is dropped (presence_notices_per_second)".format(
                                  self._bucket.rate))
            return
        self.exchange.publish(PRESENCE_CHANNEL_PREFIX + channel,
                              {"event": event, "id": member, "member": _view(record)}
                              ).addErrback(self._store_failed, "notice", channel)

    def listen(self, channel: "SCChannel") -> None:
        """
        Deliver the join and leave notices of C{channel} to its C{'join'}
        and C{'leave'} handlers (called by L{scserver.exchange.SCChannel.on}).
        """
        name = channel.name
        if not self.tracks(name):
            return
        entry = self._listening.get(name)
        if entry is not None:
            if entry[0] is channel:
                return
            # A channel destroyed and made again: the new one listens.
            self.unlisten(entry[0])
        notices = self.exchange.channel(PRESENCE_CHANNEL_PREFIX + name)

        def watcher(data: Any) -> None:
            if type(data) is not dict or data.get("event") not in ("join", "leave"):
                return
            channel.emit(data["event"], data.get("id"), data.get("member"))

        notices.watch(watcher)
        self._listening[name] = (channel, notices, watcher)
        notices.subscribe().addErrback(
            lambda f: _log.warn("Presence: cannot subscribe to the notices of {channel!r}:"
                                " {reason}", channel=name, reason=f.getErrorMessage()))

    def unlisten(self, channel: "SCChannel") -> None:
        """Stop delivering C{channel}'s notices (it has no join/leave handler left)."""
        entry = self._listening.get(channel.name)
        if entry is None or entry[0] is not channel:
            return
        del self._listening[channel.name]
        _, notices, watcher = entry
        notices.unwatch(watcher)
        if not notices.watchers():
            self.exchange.destroy_channel(notices.name)

    # -- queries -------------------------------------------------------------

    def _members(self, channel: str) -> Deferred[dict[str, Record]]:
        """The records of every member of C{channel}; one store read at a time per channel."""
        if type(channel) is not str:
            return fail(InvalidArgumentsError("The channel name must be a string"))
        if not self.tracks(channel):
            return fail(InvalidActionError(
                "Presence is not kept for the channel {!r} (see the presence_channels"
                " option)".format(channel)))
        try:
            store = self._store()
        except InvalidActionError:
            return fail()
        waiters = self._reads.get(channel)
        waiter: Deferred[dict[str, Record]] = Deferred()
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        waiters = self._reads[channel] = [waiter]

        def done(result: Any) -> None:
            del self._reads[channel]
            for w in waiters:
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(result)

        def wrap(failure: Failure) -> Failure:
            if isinstance(failure.value, SCError):
                return failure
            raise BrokerError("Presence of {!r} unavailable: {}".format(
                channel, failure.getErrorMessage()))

        maybeDeferred(store.members, channel).addErrback(wrap).addBoth(done)
        return waiter

    def presence(self, channel: str, limit: Optional[int] = None) -> Deferred[dict[str, Any]]:
        """
        The members of C{channel} in every process: socket id →
        C{{"joined": unix time, ...presence_info}}, at most C{limit}
        (default and upper bound: C{presence_max_members}), the earliest
        joined first.
        """
        limit = self.max_members if limit is None else max(0, min(int(limit), self.max_members))
        return self._members(channel).addCallback(self._select, limit)

    @staticmethod
    def _select(records: dict[str, Record], limit: int) -> dict[str, Any]:
        ordered = sorted(records.items(), key=lambda item: (item[1].get("joined") or 0, item[0]))
        return {member: _view(record) for member, record in ordered[:limit]}

    def presence_stats(self, channel: str) -> Deferred[dict[str, int]]:
        """
        The counts of C{channel} in every process: C{connections} (members)
        and C{users} (distinct values of the C{presence_user_claim} claim
        among the members whose token has it).
        """
        return self._members(channel).addCallback(self._stats)

    @staticmethod
    def _stats(records: dict[str, Record]) -> dict[str, int]:
        users = {r.get("user") for r in records.values() if r.get("user") is not None}
        return {"connections": len(records), "users": len(users)}

    # -- the #presence procedure ---------------------------------------------

    def client_request(self, socket: "SCServerSocket", data: Any,
                       expired: Optional[Exception] = None) -> Deferred[tuple[Any, Any]]:
        """
        Answer a client's C{#presence} request for C{data} (C{{"channel":
        name}} or the name): allowed when the C{allow_client_presence}
        option is on, the socket is subscribed to the channel, the channel
        keeps presence and the C{presence} middleware allows it.

        @return: a Deferred firing with C{(error, reply)}: the error to
            send back (C{None} when allowed), and the reply, C{{"channel",
            "members", "connections", "users"}}.  It fails only on an
            unexpected error (which the client must not see).
        """
        from .middleware import MIDDLEWARE_PRESENCE, Request

        def refuse(text: str) -> Deferred[tuple[Any, Any]]:
            return succeed((InvalidActionError(text), None))

        if not self.allow_client:
            return refuse("Client presence requests are disabled")
        if type(data) is dict:
            data = data.get("channel")
        if type(data) is not str or len(data) > self.max_channel_name_length:
            return refuse("Presence channel name was malformatted")
        channel = data
        if not socket.is_subscribed(channel):
            return refuse("Socket {} is not subscribed to the {} channel".format(
                socket.id, channel))
        if not self.tracks(channel):
            return refuse("Presence is not kept for the {} channel".format(channel))
        blocked: Any = None
        if self.middleware is not None:
            blocked = self.middleware.run(MIDDLEWARE_PRESENCE, Request(
                MIDDLEWARE_PRESENCE, socket=socket, channel=channel,
                auth_token_expired_error=expired))
        if blocked is None:
            return self._answer(channel)
        d: Deferred[Any] = blocked

        def decided(b: Any) -> Any:
            if b is not None:
                return (b.error, None)
            return self._answer(channel)

        return d.addCallback(decided)

    def _answer(self, channel: str) -> Deferred[tuple[Any, Any]]:
        def answer(records: dict[str, Record]) -> tuple[Any, Any]:
            reply: dict[str, Any] = {"channel": channel,
                                     "members": self._select(records, self.max_members)}
            reply.update(self._stats(records))
            return (None, reply)

        def unavailable(failure: Failure) -> tuple[Any, Any]:
            # Nothing of the cause (a Redis address) reaches the client.
            _log.debug("Presence of {channel!r} unavailable: {reason}", channel=channel,
                       reason=failure.getErrorMessage())
            return (BrokerError("Presence is unavailable"), None)

        return self._members(channel).addCallbacks(answer, unavailable)

    # -- life ------------------------------------------------------------------

    def stop(self) -> Deferred[Any]:
        """Stop the store (its heartbeats); the next join starts it again."""
        store, started = self.store, self._started
        self._started = False
        if store is None or not started:
            return succeed(None)
        return maybeDeferred(store.stop)


# --------------------------------------------------------------------------
# The stores
# --------------------------------------------------------------------------


@implementer(IPresenceStore)
class MemoryPresenceStore:
    """The presence store of the in-process broker: a table."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Record]] = {}

    def start(self, local: Callable[[], Mapping[str, Mapping[str, Record]]],
              gone: Callable[[str, str, Record], object]) -> None:
        """Nothing to start."""

    def add(self, channel: str, member: str, record: Record) -> Deferred[None]:
        """Add C{member} to C{channel}."""
        self.channels.setdefault(channel, {})[member] = record
        return succeed(None)

    def remove(self, channel: str, member: str) -> Deferred[None]:
        """Remove C{member} from C{channel}."""
        members = self.channels.get(channel)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self.channels[channel]
        return succeed(None)

    def members(self, channel: str) -> Deferred[dict[str, Record]]:
        """The members of C{channel}."""
        return succeed(dict(self.channels.get(channel, {})))

    def stop(self) -> Deferred[None]:
        """Nothing to stop."""
        return succeed(None)


@implementer(IPresenceStore)
class RedisPresenceStore:
    """
    The presence store of the Redis broker
    (L{scserver.brokers.redis.RedisBroker}).

    Layout, with C{P} the broker's prefix (C{broker_prefix}) in UTF-8 and
    the byte C{0xFF} (never part of UTF-8, so no channel name can produce
    these names):

        - C{P 0xFF "presence:" channel}: a hash on the channel's shard;
          each field a member (socket id), its value an envelope
          (L{scserver.brokers.redis.encode_envelope}) of C{[process id,
          joined, user, info]}.  It expires C{2 * expiry} seconds after the
          last process with members there refreshed it.
        - C{P 0xFF "process:" process id}: the heartbeat of a process, on
          every shard, set with a time to live of C{expiry} seconds and
          refreshed every C{expiry / 3}.

    A reader drops the members of processes whose heartbeat is gone and
    removes them from the hash (C{HDEL}: the reader that removed a member
    reports it as gone, once); every heartbeat also looks at a few channels
    with local members (L{SWEEP_PER_TICK}).  A process that finds its own
    heartbeat gone (Redis restarted, or it was cut off longer than the
    expiry), or that failed to write a member, writes all its members again.

    @ivar process_id: this process's random id (16 hexadecimal digits).
    """

    def __init__(self, broker: Any, clock: Any, expiry: float) -> None:
        """
        @param broker: the L{scserver.brokers.redis.RedisBroker}.
        @param clock: the reactor.
        @param expiry: seconds after which a silent process's members are gone.
        """
        self.broker = broker
        self.clock = clock
        self.expiry = expiry
        self.process_id = os.urandom(8).hex()
        self._dirty: set[int] = set(range(len(broker.shards)))
        self._loop: Optional[LoopingCall] = None
        self._local: Callable[[], Mapping[str, Mapping[str, Record]]] = dict
        self._gone: Callable[[str, str, Record], object] = lambda c, m, r: None
        self._sweep_at = 0

    # -- names -------------------------------------------------------------

    def _base(self) -> bytes:
        prefix: str = self.broker.prefix
        return prefix.encode("utf-8", "surrogatepass") + b"\xff"

    def hash_key(self, channel: str) -> bytes:
        """The name of C{channel}'s hash."""
        return self._base() + b"presence:" + channel.encode("utf-8", "surrogatepass")

    def heartbeat_key(self, process_id: str) -> bytes:
        """The name of a process's heartbeat key."""
        return self._base() + b"process:" + process_id.encode("ascii")

    def _shard(self, channel: str) -> int:
        from .brokers.redis import shard_index

        return shard_index(channel, len(self.broker.shards))

    def _protocol(self, index: int) -> Any:
        return self.broker.shards[index].command.protocol

    def _ms(self, seconds: float) -> int:
        return max(1, int(seconds * 1000))

    # -- IPresenceStore ------------------------------------------------------

    def start(self, local: Callable[[], Mapping[str, Mapping[str, Record]]],
              gone: Callable[[str, str, Record], object]) -> None:
        """Start the heartbeats."""
        self._local = local
        self._gone = gone
        if self._loop is None:
            self._dirty = set(range(len(self.broker.shards)))
            loop = self._loop = LoopingCall(self._tick)
            loop.clock = self.clock
            loop.start(self.expiry / 3.0, now=True).addErrback(
                lambda f: _log.failure("Presence heartbeats stopped", f))

    def _unavailable(self, index: int) -> BrokerError:
        return BrokerError("Redis shard {} is unavailable".format(index))

    def add(self, channel: str, member: str, record: Record) -> Deferred[None]:
        """C{HSET} the member (and refresh the hash's time to live)."""
        from .brokers.redis import encode_envelope

        index = self._shard(channel)
        protocol = self._protocol(index)
        if protocol is None:
            self._dirty.add(index)
            return fail(self._unavailable(index))
        value = encode_envelope([self.process_id, record.get("joined"), record.get("user"),
                                 record.get("info") or {}])
        key = self.hash_key(channel)
        if index in self._dirty:
            # The heartbeat first (on the same connection): a reader never
            # sees this member without it, and never takes it for dead.
            execute_command(protocol, "SET", self.heartbeat_key(self.process_id), b"1", "PX",
                     self._ms(self.expiry)).addErrback(lambda f: None)
        d = execute_command(protocol, "HSET", key, member.encode("utf-8", "surrogatepass"), value)
        execute_command(protocol, "PEXPIRE", key, self._ms(2 * self.expiry)).addErrback(
            lambda f: None)

        def failed(failure: Failure) -> Failure:
            self._dirty.add(index)
            return failure

        return d.addCallbacks(lambda _: None, failed)

    def remove(self, channel: str, member: str) -> Deferred[None]:
        """C{HDEL} the member."""
        protocol = self._protocol(self._shard(channel))
        if protocol is None:
            # Written again without it when the shard is back.
            return succeed(None)
        return execute_command(protocol, "HDEL", self.hash_key(channel),
                        member.encode("utf-8", "surrogatepass")).addCallback(lambda _: None)

    def members(self, channel: str) -> Deferred[dict[str, Record]]:
        """
        C{HGETALL} the hash, drop (and remove) the members of processes
        whose heartbeat is gone.
        """
        from .brokers.redis import decode_envelope

        index = self._shard(channel)
        protocol = self._protocol(index)
        if protocol is None:
            return fail(self._unavailable(index))
        key = self.hash_key(channel)

        def parse(reply: Any) -> Deferred[dict[str, Record]]:
            records: dict[str, tuple[str, Record]] = {}
            items = list(reply or [])
            for i in range(0, len(items) - 1, 2):
                field, value = items[i], items[i + 1]
                try:
                    process, joined, user, info = decode_envelope(value)
                    member = field.decode("utf-8", "surrogatepass")
                except Exception:
                    continue
                if type(info) is not dict:
                    info = {}
                records[member] = (str(process), {"joined": joined, "user": user,
                                                  "info": info})
            others = sorted({p for p, _ in records.values() if p != self.process_id})
            if not others:
                return succeed({m: r for m, (_, r) in records.items()})
            d = execute_command(protocol, "MGET", *[self.heartbeat_key(p) for p in others])
            return d.addCallback(alive, records, others)

        def alive(reply: Any, records: dict[str, tuple[str, Record]],
                  others: list[str]) -> Deferred[dict[str, Record]]:
            beats = list(reply or [])
            dead = {p for p, beat in zip(others, beats) if beat is None}
            live = {m: r for m, (p, r) in records.items() if p not in dead}
            gone = [(m, r) for m, (p, r) in records.items() if p in dead]
            if not gone:
                return succeed(live)
            waits = []
            for member, record in gone:
                d = execute_command(protocol, "HDEL", key, member.encode("utf-8", "surrogatepass"))
                d.addCallback(removed, member, record)
                waits.append(d)
            return DeferredList(waits, consumeErrors=True).addCallback(lambda _: live)

        def removed(count: Any, member: str, record: Record) -> None:
            if count == 1:
                try:
                    self._gone(channel, member, record)
                except Exception:
                    _log.failure("Presence: reporting a gone member failed")

        return execute_command(protocol, "HGETALL", key).addCallback(parse)

    def stop(self) -> Deferred[None]:
        """Stop the heartbeats and remove this process's heartbeat keys."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        waits = []
        for index in range(len(self.broker.shards)):
            protocol = self._protocol(index)
            if protocol is not None:
                waits.append(execute_command(protocol, "DEL", self.heartbeat_key(self.process_id)))
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    # -- heartbeats ------------------------------------------------------------

    def _tick(self) -> Deferred[Any]:
        try:
            return self._beats()
        except Exception:
            # The heartbeats must go on: a stopped loop would make this
            # process's members expire.
            failure_log_for(self.clock).failure(_log, "Presence heartbeat failed")
            return succeed(None)

    def _beats(self) -> Deferred[Any]:
        local = self._local()
        by_shard: dict[int, list[str]] = {}
        for channel in local:
            by_shard.setdefault(self._shard(channel), []).append(channel)
        waits: list[Deferred[Any]] = []
        for index in range(len(self.broker.shards)):
            protocol = self._protocol(index)
            if protocol is None:
                self._dirty.add(index)
                continue
            waits.append(self._beat(index, protocol, local, by_shard.get(index, [])))
        channels = sorted(local)
        if channels:
            start = self._sweep_at % len(channels)
            chosen = (channels[start:] + channels[:start])[:SWEEP_PER_TICK]
            self._sweep_at = start + len(chosen)
            for channel in chosen:
                waits.append(self.members(channel))
        return DeferredList(waits, consumeErrors=True)

    def _beat(self, index: int, protocol: Any, local: Mapping[str, Mapping[str, Record]],
              channels: list[str]) -> Deferred[Any]:
        beat = self.heartbeat_key(self.process_id)
        ms = self._ms(self.expiry)

        def refreshed(count: Any) -> Any:
            if index in self._dirty or count != 1:
                return register()
            return touch()

        def touch() -> Deferred[Any]:
            hash_ms = self._ms(2 * self.expiry)
            return DeferredList([execute_command(protocol, "PEXPIRE", self.hash_key(c), hash_ms)
                                 for c in channels], consumeErrors=True)

        def register() -> Deferred[Any]:
            self._dirty.discard(index)
            waits = [execute_command(protocol, "SET", beat, b"1", "PX", ms)]
            for channel in channels:
                for member, record in list(local.get(channel, {}).items()):
                    waits.append(self.add(channel, member, record))
            return DeferredList(waits, fireOnOneErrback=True, consumeErrors=True)

        def failed(failure: Failure) -> None:
            self._dirty.add(index)

        return execute_command(protocol, "PEXPIRE", beat, ms).addCallback(refreshed).addErrback(
            failed)
