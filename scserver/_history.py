"""
Channel history and recovery: a bounded history of the publications of the
channels that opt in, each with an offset, and the recovery of missed
publications on a subscribe.

What is kept
============

A channel whose name matches a pattern given to
L{scserver.exchange.Exchange.configure_channel} (or the server's
C{history_channels} option) keeps its last C{size} publications, each with
an B{offset} (1, 2, 3, ... with no gap) and the B{epoch} of the history (a
random string).  When the history is lost (no publication for C{ttl}
seconds, a Redis key evicted or flushed, a restart of the only process of
an in-process history) the next publication starts a new history: a new
epoch, offsets from 1 again.  An offset means something only with its
epoch.

Where it is kept
================

  - With the in-process broker (L{scserver.brokers.memory.MemoryBroker}):
    a ring buffer per channel in this process (L{MemoryHistoryStore}).
  - With the Redis broker (L{scserver.brokers.redis.RedisBroker}): on the
    channel's shard, a Redis Stream C{PREFIX + "history:" + CHANNEL} and a
    hash C{PREFIX + "history-meta:" + CHANNEL} (C{epoch}, C{top}: the last
    offset) (L{RedisHistoryStore}).  One Lua script assigns the offset,
    appends to the stream (C{XADD ... MAXLEN ~ size}), renews the expiry of
    both keys and C{PUBLISH}es the publication with its offset and epoch,
    in one step: every process sees the same offsets, and every live
    message carries its own.

Other brokers do not support history (L{HistoryUnsupportedError}).

Recovery
========

A socket opts in per subscription with the subscribe data
C{{"recover": true}} (a first subscribe) or C{{"recover": {"offset": N,
"epoch": E}}} (after a reconnect).  The socket is then subscribed to the
live channel first, with its live publications held back, while the
history after C{N} is read; it gets the history, then the held-back live
publications whose offset is past what it already got, then live ones: no
gap, no duplicate.  The subscribe reply's data says
C{{"recovered": true, "offset": top, "epoch": E}} when every publication
after C{N} was there, and C{{"recovered": false, ...}} (nothing replayed)
when the epoch changed or the history no longer reaches back to C{N}: the
client must then resynchronise from elsewhere.  C{offset} is the last
offset of the history when the subscription took effect.

Only the subscriptions that opted in get publications with their position:
C{{"channel": ..., "data": ..., "offset": N, "epoch": E}} in the
C{#publish} event (the official clients read C{channel} and C{data} only).
The other subscribers get exactly the frames they got without history.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._logging import observer as log_observer
from .errors import BrokerError, InvalidArgumentsError, SCError
from .exchange import Publication
from .interfaces import ICodecEngine
from .socket import INTERNAL_CHANNEL_PREFIX

if TYPE_CHECKING:
    from .exchange import Exchange, Prepare
    from .socket import SCServerSocket

__all__ = [
    "HistorySpec",
    "HistoryPage",
    "History",
    "HistoryUnsupportedError",
    "MemoryHistoryStore",
    "RedisHistoryStore",
    "PositionedPublication",
    "parse_history_channels",
    "new_epoch",
    "MAX_HISTORY_SIZE",
    "MAX_HELD_BACK",
    "POSITIONED_MESSAGE",
]

MAX_HISTORY_SIZE = 100000
"""The largest history size a channel may be given."""

MAX_HELD_BACK = 10000
"""The most live publications held back for one socket while its history is
read; beyond, the recovery gives up (C{recovered: false})."""

DEFAULT_LIMIT = 100
"""The default C{limit} of L{History.read}."""

POSITIONED_MESSAGE = 2
"""The first byte of a Redis pub/sub message carrying a publication with
its offset and epoch: C{b"\\x02" + offset + b":" + epoch + b":"} and then
the Redis broker's envelope of the data."""

_log = Logger(observer=log_observer)

# The largest offset a client may ask to recover from (Redis scripts read
# numbers as doubles).
_MAX_OFFSET = 2 ** 53


class HistoryUnsupportedError(SCError):
    """The broker in use keeps no history."""

    name = "HistoryUnsupportedError"


def new_epoch() -> str:
    """A new random epoch: 16 hexadecimal digits."""
    return os.urandom(8).hex()


class HistorySpec:
    """
    How much history a channel keeps.

    @ivar pattern: the channel name or glob pattern (C{fnmatch}: C{*},
        C{?}, C{[...]}) it applies to.
    @ivar size: the most publications kept.
    @ivar ttl: seconds without a publication after which the history is
        lost (a new epoch), or C{None}: kept as long as the store keeps it.
    """

    __slots__ = ("pattern", "size", "ttl", "_match")

    def __init__(self, pattern: str, size: int, ttl: Optional[float] = None) -> None:
        if type(pattern) is not str or not pattern:
            raise InvalidArgumentsError("A history pattern must be a non-empty string")
        if type(size) is not int or not 0 < size <= MAX_HISTORY_SIZE:
            raise InvalidArgumentsError(
                "history_size must be an integer from 1 to {}".format(MAX_HISTORY_SIZE))
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
                raise InvalidArgumentsError("history_ttl must be a positive number of seconds")
            ttl = float(ttl)
        self.pattern = pattern
        self.size = size
        self.ttl = ttl
        self._match = re.compile(fnmatch.translate(pattern), re.DOTALL).match

    def matches(self, channel: str) -> bool:
        """Whether C{channel} is one of this spec's channels."""
        return self._match(channel) is not None

    def __repr__(self) -> str:
        return "<HistorySpec {!r} size={} ttl={}>".format(self.pattern, self.size, self.ttl)


def parse_history_channels(value: Any) -> list[HistorySpec]:
    """
    Parse the C{history_channels} server option.

    @param value: C{None}; a list of L{HistorySpec}; a mapping of channel name or glob pattern to a
        size (C{int}), a C{(size, ttl)} pair or a C{{"size": ..., "ttl":
        ...}} dict; or the command-line form, patterns separated by spaces,
        C{PATTERN=SIZE} or C{PATTERN=SIZE/TTL}: C{"chat.*=100/300
        news=20"}.
    @return: the specs, in the order given (the first match wins).
    @raise ValueError: for a malformed value.
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(v, HistorySpec) for v in value):
        return list(value)
    if isinstance(value, str):
        items: list[tuple[Any, Any]] = []
        for part in value.split():
            pattern, equals, spec = part.rpartition("=")
            if not equals or not pattern:
                raise ValueError("history_channels: expected PATTERN=SIZE[/TTL], got {!r}"
                                 .format(part))
            size, slash, ttl = spec.partition("/")
            try:
                items.append((pattern, (int(size), float(ttl) if slash else None)))
            except ValueError:
                raise ValueError("history_channels: expected PATTERN=SIZE[/TTL], got {!r}"
                                 .format(part)) from None
    elif isinstance(value, dict):
        items = list(value.items())
    else:
        raise ValueError("history_channels must be a dict or a string, not {}".format(
            type(value).__name__))
    specs = []
    for pattern, spec in items:
        if isinstance(spec, dict):
            unknown = set(spec) - {"size", "ttl"}
            if unknown:
                raise ValueError("history_channels[{!r}]: unknown key(s) {}".format(
                    pattern, ", ".join(sorted(map(str, unknown)))))
            pair: tuple[Any, Any] = (spec.get("size"), spec.get("ttl"))
        elif isinstance(spec, (tuple, list)) and len(spec) == 2:
            pair = (spec[0], spec[1])
        else:
            pair = (spec, None)
        try:
            specs.append(HistorySpec(pattern, pair[0], pair[1]))
        except InvalidArgumentsError as e:
            raise ValueError("history_channels[{!r}]: {}".format(pattern, e)) from None
    return specs


class HistoryPage:
    """
    Publications read from a channel's history (L{History.read}).

    @ivar epoch: the epoch of the history, or C{None} when the channel has
        no history (nothing published yet, or lost).
    @ivar top: the offset of the last publication (0 when none).
    @ivar first: the oldest offset the history still holds (C{top + 1}
        when it is empty).
    @ivar publications: C{(offset, data)} pairs, oldest first.
    """

    __slots__ = ("epoch", "top", "first", "publications")

    def __init__(self, epoch: Optional[str], top: int, first: int,
                 publications: list[tuple[int, Any]]) -> None:
        self.epoch = epoch
        self.top = top
        self.first = first
        self.publications = publications

    def __repr__(self) -> str:
        return "<HistoryPage epoch={} top={} first={} {} publication(s)>".format(
            self.epoch, self.top, self.first, len(self.publications))


class PositionedPublication(Publication):
    """
    A L{Publication} for the subscriptions that opted in to recovery: its
    C{#publish} event also carries the C{offset} and C{epoch}.
    """

    __slots__ = ("offset", "epoch")

    def __init__(self, channel: str, data: Any, offset: int, epoch: str, prepare: "Prepare",
                 warn: Callable[[Any], object], shared: bool = True) -> None:
        Publication.__init__(self, channel, data, prepare, warn, shared)
        self.offset = offset
        self.epoch = epoch

    def frame(self, codec: ICodecEngine) -> Any:
        """The C{#publish} event with C{offset} and C{epoch}, framed once per codec."""
        if codec is self._last_codec:
            return self._last_frame
        key = id(codec)
        try:
            prepared = self._frames[key]
        except KeyError:
            packet = {"event": "#publish", "data": {
                "channel": self.channel, "data": self.data,
                "offset": self.offset, "epoch": self.epoch}}
            try:
                prepared = self._prepare(codec.encode(packet))
            except Exception as e:
                prepared = None
                self._warn(e)
            self._frames[key] = prepared
        self._last_codec = codec
        self._last_frame = prepared
        return prepared


# --------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------


class _Ring:
    __slots__ = ("epoch", "top", "entries", "last")

    def __init__(self, size: int, now: float) -> None:
        self.epoch = new_epoch()
        self.top = 0
        self.entries: deque[tuple[int, Any]] = deque(maxlen=size)
        self.last = now


def _page(epoch: Optional[str], top: int, first: int, entries: Iterable[tuple[int, Any]],
          since: Optional[int], limit: int) -> HistoryPage:
    if since is None:
        start = max(first, top - limit + 1)
    else:
        start = max(first, since + 1)
    publications = [(offset, data) for offset, data in entries if offset >= start][:limit]
    return HistoryPage(epoch, top, first, publications)


class MemoryHistoryStore:
    """
    The history of the channels of one process: a ring buffer
    (C{collections.deque(maxlen=size)}) per channel.

    A channel's history is dropped (a new epoch next time) once C{ttl}
    seconds passed without a publication; expired histories are swept as
    new ones are made, so their number stays bounded by the channels
    published to within a C{ttl}.
    """

    def __init__(self, spec_of: Callable[[str], Optional[HistorySpec]],
                 seconds: Callable[[], float]) -> None:
        """
        @param spec_of: gives the L{HistorySpec} of a channel, or C{None}.
        @param seconds: the clock.
        """
        self._spec_of = spec_of
        self._seconds = seconds
        self._rings: dict[str, _Ring] = {}
        self._made = 0

    def _ring(self, channel: str, spec: HistorySpec, create: bool) -> Optional[_Ring]:
        now = self._seconds()
        ring = self._rings.get(channel)
        if ring is not None and spec.ttl is not None and now - ring.last >= spec.ttl:
            del self._rings[channel]
            ring = None
        if ring is None and create:
            self._made += 1
            if self._made % 1024 == 0:
                self._sweep(now)
            ring = self._rings[channel] = _Ring(spec.size, now)
        if ring is not None and ring.entries.maxlen != spec.size:
            ring.entries = deque(ring.entries, maxlen=spec.size)
        return ring

    def _sweep(self, now: float) -> None:
        for channel, ring in list(self._rings.items()):
            spec = self._spec_of(channel)
            if spec is None or (spec.ttl is not None and now - ring.last >= spec.ttl):
                del self._rings[channel]

    def publish(self, channel: str, data: Any, spec: HistorySpec,
                deliver: Callable[[str, Any, int, str], object],
                subscribed: Callable[[str], bool]) -> Deferred[tuple[int, str]]:
        """
        Append C{data} and deliver it (with its position) when this process
        is subscribed to C{channel}.

        @return: a Deferred firing with C{(offset, epoch)}.
        """
        ring = self._ring(channel, spec, True)
        assert ring is not None
        ring.top += 1
        ring.last = self._seconds()
        ring.entries.append((ring.top, data))
        if subscribed(channel):
            deliver(channel, data, ring.top, ring.epoch)
        return succeed((ring.top, ring.epoch))

    def read(self, channel: str, spec: HistorySpec, since: Optional[int],
             limit: int, create: bool = False) -> Deferred[HistoryPage]:
        """
        Read the history of C{channel} (see L{History.read}); with
        C{create}, start an empty one (an epoch, offset 0) when there is
        none.
        """
        ring = self._ring(channel, spec, create)
        if ring is None:
            return succeed(HistoryPage(None, 0, 1, []))
        first = ring.entries[0][0] if ring.entries else ring.top + 1
        return succeed(_page(ring.epoch, ring.top, first, ring.entries, since, limit))


_PUBLISH_SCRIPT = b"""
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[2], 'top', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], top .. '-0', 'd', ARGV[2])
if tonumber(ARGV[4]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', ARGV[1], '\\2' .. top .. ':' .. epoch .. ':' .. ARGV[2])
return {top, epoch}
"""

_READ_SCRIPT = b"""
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  if ARGV[4] == '' then return {'', 0, 1, {}} end
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
  if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
end
local top = tonumber(redis.call('HGET', KEYS[2], 'top'))
local first = top - tonumber(ARGV[3]) + 1
if first < 1 then first = 1 end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #oldest == 0 then
  first = top + 1
else
  local id = tonumber(string.match(oldest[1][1], '^(%d+)'))
  if id > first then first = id end
end
local start
local limit = tonumber(ARGV[2])
if ARGV[1] == '' then
  start = top - limit + 1
else
  start = tonumber(ARGV[1]) + 1
end
if start < first then start = first end
local entries = {}
if start <= top and limit > 0 then
  entries = redis.call('XRANGE', KEYS[1], start .. '-0', '+', 'COUNT', limit)
end
return {epoch, top, first, entries}
"""


class RedisHistoryStore:
    """
    The history of channels on Redis (see the module's documentation), on
    the shard of each channel, through the broker's command connections.
    """

    def __init__(self, broker: Any, deliver: Callable[[str, Any, int, str], object]) -> None:
        """
        @param broker: the L{scserver.brokers.redis.RedisBroker}.
        @param deliver: called as C{deliver(channel, data, offset, epoch)}
            for every positioned publication Redis delivers.
        """
        from .brokers import redis

        self._redis = redis
        self._broker = broker
        self._deliver = deliver
        self._shas: dict[bytes, str] = {}
        broker.extensions[POSITIONED_MESSAGE] = self.received

    def _keys(self, channel: str) -> tuple[bytes, bytes]:
        name = channel.encode("utf-8", "surrogatepass")
        prefix = self._broker.prefix.encode("utf-8", "surrogatepass")
        return prefix + b"history:" + name, prefix + b"history-meta:" + name

    def _eval(self, channel: str, script: bytes, keys: tuple[bytes, bytes],
              *args: Any) -> Deferred[Any]:
        sha = self._shas.get(script)
        if sha is None:
            import hashlib

            sha = self._shas[script] = hashlib.sha1(script).hexdigest()
        d: Deferred[Any] = self._broker.execute(channel, "EVALSHA", sha, 2, *(keys + args))

        def missing(failure: Failure) -> Any:
            if "NOSCRIPT" not in str(failure.value):
                return failure
            return self._broker.execute(channel, "EVAL", script, 2, *(keys + args))

        return d.addErrback(missing)

    def publish(self, channel: str, data: Any, spec: HistorySpec,
                deliver: Callable[[str, Any, int, str], object],
                subscribed: Callable[[str], bool]) -> Deferred[tuple[int, str]]:
        """Run the publish script (see the module's documentation)."""
        try:
            envelope = self._redis.encode_envelope(data)
        except (TypeError, ValueError) as e:
            return fail(BrokerError("Cannot publish on {!r}: {}".format(channel, e)))
        ttl = 0 if spec.ttl is None else max(1, int(spec.ttl * 1000))
        d = self._eval(channel, _PUBLISH_SCRIPT, self._keys(channel), self._broker.key(channel),
                       envelope, spec.size, ttl, new_epoch())

        def done(result: Any) -> tuple[int, str]:
            return int(result[0]), _text(result[1])

        def failed(failure: Failure) -> tuple[int, str]:
            raise BrokerError("Publishing on {!r} failed: {}".format(
                channel, failure.getErrorMessage()))

        return d.addCallbacks(done, failed)

    def read(self, channel: str, spec: HistorySpec, since: Optional[int],
             limit: int, create: bool = False) -> Deferred[HistoryPage]:
        """
        Run the read script (see L{History.read}); with C{create}, start an
        empty history (an epoch, offset 0) when there is none.
        """
        ttl = 0 if spec.ttl is None else max(1, int(spec.ttl * 1000))
        d = self._eval(channel, _READ_SCRIPT, self._keys(channel),
                       "" if since is None else since, limit, spec.size,
                       new_epoch() if create else "", ttl)

        def done(result: Any) -> HistoryPage:
            epoch = _text(result[0]) or None
            publications = []
            for entry_id, fields in result[3]:
                offset = int(bytes(entry_id).split(b"-", 1)[0])
                payload = dict(zip(fields[::2], fields[1::2])).get(b"d")
                publications.append((offset, self._redis.decode_envelope(payload)))
            return HistoryPage(epoch, int(result[1]), int(result[2]), publications)

        def failed(failure: Failure) -> HistoryPage:
            raise BrokerError("Reading the history of {!r} failed: {}".format(
                channel, failure.getErrorMessage()))

        return d.addCallbacks(done, failed)

    def received(self, channel: str, message: bytes) -> None:
        """A positioned message from Redis: hand it to C{deliver}."""
        try:
            offset, epoch, envelope = bytes(message[1:]).split(b":", 2)
            data = self._redis.decode_envelope(envelope)
            position = int(offset)
        except Exception as e:
            _log.warn("Dropped a malformed history message on {channel!r}: {error}",
                      channel=channel, error=str(e))
            return
        self._deliver(channel, data, position, epoch.decode("ascii", "replace"))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --------------------------------------------------------------------------
# Recovery of one subscription
# --------------------------------------------------------------------------


class _Subscription:
    """The state of one socket's subscription that opted in."""

    __slots__ = ("socket", "since", "epoch", "held", "overflow")

    overflow: Optional[PositionedPublication]

    def __init__(self, socket: "SCServerSocket", since: Optional[int],
                 epoch: Optional[str]) -> None:
        self.socket = socket
        self.since = since
        self.epoch = epoch
        # Live publications held back while the history is read; None once
        # live.
        self.held: Optional[list[PositionedPublication]] = []
        # The last publication that did not fit in held, if any.
        self.overflow = None


def _requested(data: Any) -> Union[None, bool, tuple[int, str]]:
    """
    What the subscribe data asks for: C{None} (no recovery), C{True} (a
    first subscribe: positions from now on) or C{(offset, epoch)}.
    """
    if type(data) is not dict:
        return None
    recover = data.get("recover")
    if recover is True:
        return True
    if type(recover) is dict:
        offset, epoch = recover.get("offset"), recover.get("epoch")
        if type(offset) is int and 0 <= offset <= _MAX_OFFSET and type(epoch) is str \
                and len(epoch) <= 64:
            return (offset, epoch)
        return True
    return None


class Recovery:
    """
    The recovery of one subscription (made by L{History.recovery}): the
    socket's live publications are held back from the moment it is made
    until L{finish}.
    """

    def __init__(self, history: "History", socket: "SCServerSocket", channel: str,
                 spec: HistorySpec, requested: Union[bool, tuple[int, str]]) -> None:
        self._history = history
        self._socket = socket
        self._channel = channel
        self._spec = spec
        self._requested = requested
        self._state = _Subscription(socket, None, None)
        self._page: Optional[HistoryPage] = None
        history.opt_in(socket, channel, self._state)

    def read(self) -> Deferred[dict[str, Any]]:
        """
        Read the history; fires with the subscribe reply's data (never
        fails: a store that cannot be read gives C{recovered: false}).
        """
        requested = self._requested
        if requested is True:
            d = self._history.read(self._channel, since=None, limit=0, create=True)
        else:
            assert isinstance(requested, tuple)
            d = self._history.read(self._channel, since=requested[0], limit=self._spec.size,
                                   create=True)

        def done(page: HistoryPage) -> dict[str, Any]:
            self._page = page
            recovered = False
            overflow = self._state.overflow
            if overflow is not None:
                # Too many live publications: none is sent until the next
                # live one, and the client starts again from the last.
                self._state.held = []
                page.publications = []
                page.top, page.epoch = overflow.offset, overflow.epoch
            elif isinstance(requested, tuple):
                since, epoch = requested
                offsets = [offset for offset, _ in page.publications]
                recovered = (epoch == page.epoch and page.first - 1 <= since <= page.top
                             and offsets == list(range(since + 1, page.top + 1)))
            if not recovered:
                page.publications = []
            return {"recovered": recovered, "offset": page.top, "epoch": page.epoch}

        def failed(failure: Failure) -> dict[str, Any]:
            _log.failure("Reading the history of {channel!r} for a recovery failed", failure,
                         channel=self._channel)
            self._page = HistoryPage(None, 0, 1, [])
            return {"recovered": False, "offset": None, "epoch": None}

        return d.addCallbacks(done, failed)

    def finish(self) -> None:
        """
        Send the replayed history, then the publications held back that
        came after it, and go live.
        """
        state = self._state
        held, state.held = state.held or [], None
        page = self._page
        if page is None or not self._socket.is_subscribed(self._channel):
            return
        state.epoch = page.epoch
        state.since = page.top
        history = self._history
        for offset, data in page.publications:
            self._socket.deliver(history.positioned(self._channel, data, offset, str(page.epoch)))
        for publication in held:
            history.send(state, publication)


# --------------------------------------------------------------------------
# The exchange's history
# --------------------------------------------------------------------------


class History:
    """
    The history side of an exchange: which channels keep history, the
    store, and the subscriptions that opted in to positions.
    """

    def __init__(self, exchange: "Exchange", broker: Any, prepare: "Prepare",
                 warn: Callable[[Any], object], per_recipient: Callable[[], bool],
                 clock: Any = None) -> None:
        """
        @param exchange: the L{scserver.exchange.Exchange}.
        @param broker: its broker.
        @param prepare: see L{scserver.exchange.Publication}.
        @param warn: see L{scserver.exchange.Publication}.
        @param per_recipient: see L{scserver.exchange.Exchange}: with
            C{publishOut} middleware every recipient gets its own copy,
            through the middleware, without the position.
        @param clock: an C{IReactorTime} (for the TTL of in-process
            histories); the system time by default.
        """
        self._exchange = exchange
        self._broker = broker
        self._prepare = prepare
        self._warn = warn
        self._per_recipient = per_recipient
        self._seconds: Callable[[], float] = getattr(clock, "seconds", time.time)
        self.specs: list[HistorySpec] = []
        self.opted: dict[str, dict["SCServerSocket", _Subscription]] = {}
        self.store: Any = None
        from .brokers.memory import MemoryBroker
        from .brokers.redis import RedisBroker

        if isinstance(broker, RedisBroker):
            self.store = RedisHistoryStore(broker, exchange.deliver_positioned)
        elif isinstance(broker, MemoryBroker):
            self.store = MemoryHistoryStore(self.spec, self._seconds)

    def configure(self, spec: HistorySpec) -> None:
        """Add (or replace, for the same pattern) C{spec}."""
        if self.store is None:
            raise HistoryUnsupportedError(
                "The broker {!r} keeps no history (use the memory or the Redis broker)"
                .format(self._broker))
        self.specs = [s for s in self.specs if s.pattern != spec.pattern] + [spec]

    def spec(self, channel: str) -> Optional[HistorySpec]:
        """
        The spec of C{channel} (the first that matches), or C{None}; never
        one for scserver's internal channels (presence notices, inspection
        snapshots), whatever the patterns.
        """
        if channel.startswith(INTERNAL_CHANNEL_PREFIX):
            return None
        for spec in self.specs:
            if spec.matches(channel):
                return spec
        return None

    def publish(self, channel: str, data: Any, spec: HistorySpec) -> Deferred[tuple[int, str]]:
        """Publish C{data} on C{channel} into its history."""
        broker = self._broker
        return maybeDeferred(self.store.publish, channel, data, spec,
                             self._exchange.deliver_positioned,
                             lambda name: name in broker.subscriptions)

    def read(self, channel: str, since: Optional[int] = None,
             limit: int = DEFAULT_LIMIT, create: bool = False) -> Deferred[HistoryPage]:
        """
        Read the history of C{channel}: the publications after offset
        C{since}, or the last C{limit} ones when C{since} is C{None}; at
        most C{limit}, oldest first.  With C{create}, an empty history is
        started (an epoch, offset 0) when there is none: a subscription
        that opted in gets a position to recover from, even before the
        first publication.
        """
        spec = self.spec(channel)
        if spec is None:
            return fail(InvalidArgumentsError("The channel {!r} keeps no history".format(channel)))
        if type(limit) is not int or limit < 0:
            return fail(InvalidArgumentsError("limit must be an integer from 0"))
        if since is not None and (type(since) is not int or since < 0):
            return fail(InvalidArgumentsError("since must be an offset (an integer from 0)"))
        return maybeDeferred(self.store.read, channel, spec, since, min(limit, spec.size),
                             create)

    def recovery(self, socket: "SCServerSocket", channel: str, data: Any) -> Optional[Recovery]:
        """
        The recovery of C{socket}'s subscription to C{channel} with the
        subscribe data C{data}, or C{None} when it did not opt in (or the
        channel keeps no history).
        """
        if not self.specs:
            return None
        requested = _requested(data)
        if requested is None:
            return None
        spec = self.spec(channel)
        if spec is None:
            return None
        return Recovery(self, socket, channel, spec, requested)

    def opt_in(self, socket: "SCServerSocket", channel: str, state: _Subscription) -> None:
        """Note that C{socket}'s subscription to C{channel} gets positions."""
        self.opted.setdefault(channel, {})[socket] = state

    def forget(self, socket: "SCServerSocket", channel: str) -> None:
        """C{socket} left C{channel}."""
        subscriptions = self.opted.get(channel)
        if subscriptions is not None and subscriptions.pop(socket, None) is not None:
            if not subscriptions:
                del self.opted[channel]

    def positioned(self, channel: str, data: Any, offset: int,
                   epoch: str) -> PositionedPublication:
        """A L{PositionedPublication} (through C{publishOut} middleware when there is some)."""
        return PositionedPublication(channel, data, offset, epoch, self._prepare, self._warn,
                                     not self._per_recipient())

    def send(self, state: _Subscription, publication: PositionedPublication) -> None:
        """Send C{publication} to a live subscription, unless it already had it."""
        if state.epoch == publication.epoch and state.since is not None \
                and publication.offset <= state.since:
            return
        state.epoch = publication.epoch
        state.since = publication.offset
        state.socket.deliver(publication)

    def fan_out(self, channel: str, sockets: Iterable["SCServerSocket"],
                publication: Publication, offset: int, epoch: str) -> None:
        """
        Hand a positioned publication to the sockets subscribed to
        C{channel}: the ones that opted in get it with its position (or
        hold it back while they recover), the others as any publication.
        """
        opted = self.opted.get(channel)
        if not opted:
            for socket in sockets:
                socket.deliver(publication)
            return
        positioned = PositionedPublication(channel, publication.data, offset, epoch,
                                           self._prepare, self._warn, publication.shared)
        for socket in sockets:
            state = opted.get(socket)
            if state is None:
                socket.deliver(publication)
            elif state.held is not None:
                if len(state.held) < MAX_HELD_BACK:
                    state.held.append(positioned)
                else:
                    state.overflow = positioned
            else:
                self.send(state, positioned)
