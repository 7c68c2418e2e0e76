"""
The exchange: server-side pub/sub, and the fan-out of publications to the
sockets of this process.

The exchange subscribes the broker (L{scserver.interfaces.IBroker}) to a
channel once per process, when the channel gets its first local subscriber
(a socket, or a subscribed L{SCChannel}), and unsubscribes it when the last
one leaves.  The broker hands every publication on a subscribed channel to
L{Exchange.deliver}, which wraps it in a L{Publication} and hands that to
every socket subscribed to the channel (L{scserver.SCServerSocket.deliver}),
then calls the watchers of the server-side channel.  A publication is
encoded and framed at most once per codec in use, however many sockets
receive it.
"""

from __future__ import annotations

from types import CoroutineType
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._logging import observer as log_observer
from ._events import EventEmitter
from .errors import InvalidActionError, InvalidArgumentsError
from .interfaces import IBroker, ICodecEngine

if TYPE_CHECKING:
    from ._presence import PresenceTracker
    from .socket import SCServerSocket

__all__ = ["Exchange", "SCChannel", "Publication"]

Prepare = Callable[[Union[str, bytes]], Any]
"""
The type of the C{prepare} callable of L{Publication} and L{Exchange}:
frames an encoded payload once for many connections.
"""

Watcher = Callable[[Any], object]
"""The type of a channel watcher, called with the data of every publication."""

_WatcherT = TypeVar("_WatcherT", bound=Watcher)

_HandlerT = TypeVar("_HandlerT", bound=Callable[..., Any])

_PRESENCE_EVENTS = ("join", "leave")


def _identity(value: Any) -> Any:
    return value


class Publication:
    """
    One publication on its way to the sockets of this process.

    @ivar channel: the channel name.
    @ivar data: the published data (shared by every recipient: do not
        change it).
    @ivar shared: whether every recipient gets the same message (see
        L{frame}); C{False} when C{publishOut} middleware must see each
        recipient's own copy.
    """

    __slots__ = ("channel", "data", "shared", "_prepare", "_warn", "_frames",
                 "_last_codec", "_last_frame")

    def __init__(self, channel: str, data: Any, prepare: Prepare,
                 warn: Callable[[Any], object], shared: bool = True) -> None:
        """
        @param prepare: frames an encoded payload once for many connections
            (C{str}: a text message, C{bytes}: binary).
        @param warn: called with an error the first time a codec cannot
            encode this publication.
        @param shared: see L{shared}.
        """
        self.channel = channel
        self.data = data
        self.shared = shared
        self._prepare = prepare
        self._warn = warn
        self._frames: dict[int, Any] = {}
        self._last_codec: Optional[ICodecEngine] = None
        self._last_frame: Any = None

    def frame(self, codec: ICodecEngine) -> Any:
        """
        Return this publication as a C{#publish} event encoded with C{codec}
        and framed, the same object for every socket that uses C{codec}.

        @return: the prepared message, or C{None} when C{codec} cannot
            encode it (reported once; the sockets on other codecs still get
            theirs).
        """
        # Once per recipient: the common case, every socket on one codec,
        # costs an identity check.
        if codec is self._last_codec:
            return self._last_frame
        key = id(codec)
        # The first codec (a publication with one recipient, or every
        # recipient on one codec) needs no look-up.
        frames = self._frames
        if self._last_codec is not None and key in frames:
            prepared = frames[key]
        else:
            packet = {"event": "#publish", "data": {"channel": self.channel, "data": self.data}}
            try:
                prepared = self._prepare(codec.encode(packet))
            except Exception as e:
                prepared = None
                self._warn(e)
            frames[key] = prepared
        self._last_codec = codec
        self._last_frame = prepared
        return prepared


class SCChannel(EventEmitter):
    """
    A channel on the server side.

    Watchers get every publication on the channel while it is subscribed.

    @ivar name: the channel name.
    @ivar state: L{PENDING}, L{SUBSCRIBED} or L{UNSUBSCRIBED}.
    """

    PENDING = "pending"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"

    _log = Logger(observer=log_observer)

    def __init__(self, name: str, exchange: "Exchange") -> None:
        EventEmitter.__init__(self)
        self.name = name
        self.state = self.UNSUBSCRIBED
        self._exchange = exchange
        self._watchers: list[Watcher] = []

    def __repr__(self) -> str:
        return "<SCChannel {!r} {}>".format(self.name, self.state)

    def on(self, name: str, handler: _HandlerT) -> _HandlerT:
        """
        Call C{handler} every time the event C{name} is emitted.

        Besides C{'subscribe'} and C{'unsubscribe'}, a channel that keeps
        presence (the C{presence_channels} option) emits C{'join'} and
        C{'leave'} as C{handler(socket_id, member)} for the members of
        every process (see L{Exchange.presence}), while it has such a
        handler.
        """
        EventEmitter.on(self, name, handler)
        if name in _PRESENCE_EVENTS:
            tracker = self._exchange.presence_tracker
            if tracker is not None:
                tracker.listen(self)
        return handler

    def off(self, name: Optional[str] = None, handler: Optional[Callable[..., Any]] = None
            ) -> None:
        """Remove handlers (see L{scserver._events.EventEmitter.off})."""
        EventEmitter.off(self, name, handler)
        tracker = self._exchange.presence_tracker
        if tracker is not None and not any(self.listeners(e) for e in _PRESENCE_EVENTS):
            tracker.unlisten(self)

    def emit(self, event: str, *args: Any) -> bool:
        """
        Fire the event C{event} of this channel with C{args} (the presence
        tracker fires C{'join'} and C{'leave'} this way).

        @return: whether any handler was called.
        """
        return self._emit(event, *args)

    def get_state(self) -> str:
        """Return L{state}."""
        return self.state

    def subscribe(self) -> Deferred["SCChannel"]:
        """
        Subscribe the channel (on the broker, if it is the first local
        subscriber).

        @return: a Deferred that fires with this channel once subscribed.
        """
        if self.state != self.UNSUBSCRIBED:
            return succeed(self)
        self.state = self.PENDING
        d = self._exchange._acquire(self.name)

        def subscribed(_: object) -> SCChannel:
            if self.state == self.PENDING:
                self.state = self.SUBSCRIBED
                self._emit("subscribe", self.name)
                self._exchange._channel_event("subscribe", self.name)
            return self

        def failed(failure: Failure) -> Failure:
            if self.state == self.PENDING:
                self.state = self.UNSUBSCRIBED
            return failure

        return d.addCallbacks(subscribed, failed)

    def unsubscribe(self) -> None:
        """Unsubscribe the channel; its watchers stay (and get nothing)."""
        if self.state == self.UNSUBSCRIBED:
            return
        self.state = self.UNSUBSCRIBED
        self._exchange._release(self.name)
        self._emit("unsubscribe", self.name)
        self._exchange._channel_event("unsubscribe", self.name)

    def is_subscribed(self, include_pending: bool = False) -> bool:
        """Return True when subscribed (or pending, with C{include_pending})."""
        return self.state == self.SUBSCRIBED or (include_pending and self.state == self.PENDING)

    def publish(self, data: Any) -> Deferred[Any]:
        """Publish C{data} on this channel; returns a Deferred (see L{Exchange.publish})."""
        return self._exchange.publish(self.name, data)

    def watch(self, handler: _WatcherT) -> _WatcherT:
        """Call C{handler(data)} for every publication on this channel."""
        self._watchers.append(handler)
        return handler

    def unwatch(self, handler: Optional[Watcher] = None) -> None:
        """Remove C{handler}, or every watcher when it is C{None}."""
        if handler is None:
            del self._watchers[:]
        elif handler in self._watchers:
            self._watchers.remove(handler)

    def watchers(self) -> list[Watcher]:
        """Return the list of watchers."""
        return list(self._watchers)

    def destroy(self) -> None:
        """Unsubscribe, drop every watcher, and forget the channel."""
        self._exchange.destroy_channel(self.name)

    def _deliver(self, data: Any) -> None:
        for handler in list(self._watchers):
            try:
                handler(data)
            except Exception:
                self._log.failure("Error in a watcher of channel {channel!r}", channel=self.name)


class Exchange(EventEmitter):
    """
    The server's exchange (C{server.exchange}).

    @ivar broker: the L{scserver.interfaces.IBroker} in use.
    @ivar presence_tracker: the L{scserver._presence.PresenceTracker} (set
        by the server), or C{None}: see L{presence}.
    @ivar history_store: the L{scserver._history.History} of the channels
        configured with L{configure_channel}.
    """

    _log = Logger(observer=log_observer)

    def __init__(self, broker: IBroker, prepare: Prepare, warn: Callable[[Any], object],
                 per_recipient: Callable[[], bool] = lambda: False, clock: Any = None) -> None:
        """
        @param broker: the L{scserver.interfaces.IBroker}.
        @param prepare: frames an encoded payload once for many connections
            (see L{Publication}).
        @param warn: called with the errors of a fan-out.
        @param per_recipient: tells, once per publication, whether each
            recipient must get its own copy (C{publishOut} middleware).
        @param clock: an C{IReactorTime} for the expiry of in-process
            histories (L{configure_channel}); the system time by default.
        """
        EventEmitter.__init__(self)
        self.broker = broker
        self._prepare = prepare
        self._warn = warn
        self._per_recipient = per_recipient
        self._channels: dict[str, SCChannel] = {}
        self._sockets: dict[str, dict[SCServerSocket, None]] = {}
        # channel -> [local subscribers, the Deferreds waiting for the
        # broker's subscription (None once subscribed)]
        self._broker_channels: dict[str, list[Any]] = {}
        self.presence_tracker: Optional[PresenceTracker] = None
        from ._history import History
        self.history_store = History(self, broker, prepare, warn, per_recipient, clock)

    # -- public ----------------------------------------------------------

    def publish(self, channel: str, data: Any) -> Deferred[Any]:
        """
        Publish C{data} on C{channel}, to every subscriber in every process.

        @return: a Deferred that fires once the broker accepted it.
        """
        if type(channel) is not str:
            return fail(InvalidArgumentsError("The channel name must be a string"))
        if self.history_store.specs:
            spec = self.history_store.spec(channel)
            if spec is not None:
                return self.history_store.publish(channel, data, spec)
        return maybeDeferred(self.broker.publish, channel, data)

    def publish_now(self, channel: str, data: Any) -> Optional[Deferred[Any]]:
        """
        Publish C{data} on C{channel} as L{publish} does, without a
        Deferred when the broker accepted the publication at once.

        The in-process broker delivers inside its C{publish} and returns an
        already fired Deferred: a client's C{#publish} then costs no
        Deferred machinery of its own (the socket answers synchronously).

        @return: C{None} when the broker accepted the publication
            synchronously (it returned a Deferred that already succeeded,
            or a value that is neither a Deferred nor a C{Failure});
            otherwise a Deferred as from L{publish}: pending, or failed (an
            invalid channel, a broker that raised or failed).  A channel
            with history always gets the history store's Deferred.
        """
        if type(channel) is not str:
            return self.publish(channel, data)
        if self.history_store.specs:
            # A channel with history: the history store publishes (once).
            spec = self.history_store.spec(channel)
            if spec is not None:
                return self.history_store.publish(channel, data, spec)
        try:
            result = self.broker.publish(channel, data)
        except BaseException:
            return fail()
        if isinstance(result, Deferred):
            # A Deferred fired with a Failure, paused, or waiting on a
            # chained Deferred, takes the slow path (whose errback handles
            # a failure).
            if result.called and not result.paused and not isinstance(
                    result.result, (Failure, Deferred)):
                return None
            return result
        if isinstance(result, (Failure, CoroutineType)):
            # What maybeDeferred makes of them: a failed Deferred, or the
            # coroutine's.
            return maybeDeferred(_identity, result)
        return None

    def configure_channel(self, pattern: str, history_size: int,
                          history_ttl: Optional[float] = None) -> None:
        """
        Keep the history of the channels called C{pattern}, or matching it
        (a glob: C{*}, C{?}, C{[...]}); see L{scserver._history} and the
        I{History and recovery} page of the documentation.  The first
        pattern configured that matches a channel wins; configuring a
        pattern again replaces it.  Every process of an application must
        configure the same channels.

        @param history_size: the most publications kept (1 to
            L{scserver._history.MAX_HISTORY_SIZE}).
        @param history_ttl: seconds without a publication after which the
            history is lost (a new epoch), or C{None}.
        @raise scserver._history.HistoryUnsupportedError: the broker keeps
            no history (only the memory and the Redis brokers do).
        @raise InvalidArgumentsError: for a bad size, TTL or pattern.
        """
        from ._history import HistorySpec
        self.history_store.configure(HistorySpec(pattern, history_size, history_ttl))

    def history(self, channel: str, since: Optional[int] = None,
                limit: int = 100) -> Deferred[Any]:
        """
        Read the history of C{channel}.

        @param since: the offset after which to read; C{None}: the last
            C{limit} publications.
        @param limit: the most publications returned (at most the
            channel's history size).
        @return: a Deferred firing with a L{scserver._history.HistoryPage}
            (C{epoch}, C{top}, C{first}, C{publications}: C{(offset,
            data)} pairs, oldest first).
        """
        if type(channel) is not str:
            return fail(InvalidArgumentsError("The channel name must be a string"))
        return self.history_store.read(channel, since, limit)

    def presence(self, channel: str, limit: Optional[int] = None) -> Deferred[dict[str, Any]]:
        """
        The members of C{channel} in every process (see the I{Presence}
        page of the documentation; the channel must match the
        C{presence_channels} option).

        @param limit: the most members returned (at most, and by default,
            the C{presence_max_members} option), the earliest joined first.
        @return: a Deferred firing with socket id → C{{"joined": unix
            time, ...}} (what the C{presence_info} option exposes); it
            fails with L{InvalidActionError} when the channel keeps no
            presence or the broker keeps none, and with
            L{scserver.errors.BrokerError} when the broker is unavailable.
        """
        if self.presence_tracker is None:
            return fail(InvalidActionError("This exchange keeps no presence"))
        return self.presence_tracker.presence(channel, limit)

    def presence_stats(self, channel: str) -> Deferred[dict[str, int]]:
        """
        The counts of C{channel} in every process: C{{"connections": n,
        "users": m}}, C{users} being the distinct values of the
        C{presence_user_claim} claim (C{sub} by default) of the members'
        auth tokens.  Fails as L{presence}.
        """
        if self.presence_tracker is None:
            return fail(InvalidActionError("This exchange keeps no presence"))
        return self.presence_tracker.presence_stats(channel)

    def subscribe(self, name: str) -> SCChannel:
        """
        Subscribe the server to C{name}.

        @return: the L{SCChannel} (pending until the broker confirmed).
        """
        channel = self.channel(name)
        channel.subscribe().addErrback(
            lambda f: self._log.failure("Failed to subscribe to {name!r}", f, name=name))
        return channel

    def unsubscribe(self, name: str) -> None:
        """Unsubscribe the server from C{name}."""
        channel = self._channels.get(name)
        if channel is not None:
            channel.unsubscribe()

    def channel(self, name: str) -> SCChannel:
        """Return the L{SCChannel} called C{name}, creating it unsubscribed."""
        if type(name) is not str:
            raise InvalidArgumentsError("The channel name must be a string")
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = SCChannel(name, self)
        return channel

    def destroy_channel(self, name: str) -> None:
        """Unsubscribe and unwatch the channel C{name} and forget it."""
        channel = self._channels.pop(name, None)
        if channel is None:
            return
        channel.unwatch()
        channel.unsubscribe()

    def subscriptions(self, include_pending: bool = False) -> list[str]:
        """Return the names of the server's subscribed channels."""
        return [name for name, channel in self._channels.items()
                if channel.is_subscribed(include_pending)]

    def is_subscribed(self, name: str, include_pending: bool = False) -> bool:
        """Return True when the server is subscribed to C{name}."""
        channel = self._channels.get(name)
        return channel is not None and channel.is_subscribed(include_pending)

    def watch(self, name: str, handler: _WatcherT) -> _WatcherT:
        """Watch the channel C{name} (see L{SCChannel.watch})."""
        return self.channel(name).watch(handler)

    def unwatch(self, name: str, handler: Optional[Watcher] = None) -> None:
        """Unwatch the channel C{name} (see L{SCChannel.unwatch})."""
        channel = self._channels.get(name)
        if channel is not None:
            channel.unwatch(handler)

    def watchers(self, name: str) -> list[Watcher]:
        """Return the watchers of the channel C{name}."""
        channel = self._channels.get(name)
        return channel.watchers() if channel is not None else []

    # -- broker interest -------------------------------------------------

    def _acquire(self, channel: str) -> Deferred[None]:
        """
        Note one more local subscriber of C{channel}; subscribe the broker
        when it is the first.  Returns a Deferred fired once the broker is
        subscribed.
        """
        state = self._broker_channels.get(channel)
        if state is None:
            state = self._broker_channels[channel] = [1, []]
            waiters: list[Deferred[None]] = state[1]
            waiter: Deferred[None] = Deferred()
            waiters.append(waiter)
            d = maybeDeferred(self.broker.subscribe, channel)
            d.addCallbacks(self._broker_subscribed, self._broker_failed,
                           callbackArgs=(channel, waiters), errbackArgs=(channel, waiters))
            return waiter
        state[0] += 1
        if state[1] is None:
            return succeed(None)
        waiter = Deferred()
        state[1].append(waiter)
        return waiter

    def _broker_subscribed(self, _: object, channel: str, waiters: list[Deferred[None]]) -> None:
        state = self._broker_channels.get(channel)
        if state is not None and state[1] is waiters:
            state[1] = None
            if state[0] <= 0:
                self._unsubscribe_broker(channel)
        for waiter in waiters:
            waiter.callback(None)

    def _broker_failed(self, failure: Failure, channel: str,
                       waiters: list[Deferred[None]]) -> None:
        state = self._broker_channels.get(channel)
        if state is not None and state[1] is waiters:
            del self._broker_channels[channel]
        for waiter in waiters:
            waiter.errback(failure)

    def _release(self, channel: str) -> None:
        """Note one less local subscriber of C{channel}."""
        state = self._broker_channels.get(channel)
        if state is None:
            return
        state[0] -= 1
        if state[0] <= 0 and state[1] is None:
            self._unsubscribe_broker(channel)

    def _unsubscribe_broker(self, channel: str) -> None:
        del self._broker_channels[channel]
        maybeDeferred(self.broker.unsubscribe, channel).addErrback(
            lambda f: self._log.failure(
                "Failed to unsubscribe the broker from {channel!r}", f, channel=channel))

    def _channel_event(self, event: str, name: str) -> None:
        self._emit(event, name)

    def add_subscriber(self, socket: "SCServerSocket", channel: str) -> Deferred[None]:
        """
        Note that C{socket} subscribed to C{channel} (called by the socket).

        @return: a Deferred that fires once the broker is subscribed to the
            channel.
        """
        sockets = self._sockets.get(channel)
        if sockets is None:
            sockets = self._sockets[channel] = {}
        sockets[socket] = None
        d = self._acquire(channel)
        tracker = self.presence_tracker
        if tracker is not None and tracker.patterns and tracker.tracks(channel):
            d.addCallback(tracker.subscribed, socket, channel)

        def failed(failure: Failure) -> Failure:
            members = self._sockets.get(channel)
            if members is not None:
                members.pop(socket, None)
                if not members:
                    del self._sockets[channel]
            return failure

        return d.addErrback(failed)

    def remove_subscriber(self, socket: "SCServerSocket", channel: str) -> None:
        """Note that C{socket} left C{channel} (called by the socket)."""
        sockets = self._sockets.get(channel)
        if sockets is None or socket not in sockets:
            return
        del sockets[socket]
        if not sockets:
            del self._sockets[channel]
        if self.presence_tracker is not None:
            self.presence_tracker.unsubscribed(socket, channel)
        if self.history_store.opted:
            self.history_store.forget(socket, channel)
        self._release(channel)

    # -- delivery --------------------------------------------------------

    def deliver(self, channel: str, data: Any) -> None:
        """
        Hand a publication from the broker to the local subscribers of
        C{channel}: every socket, then the watchers of the server-side
        channel (the C{deliver} callable of L{scserver.interfaces.IBroker}).
        """
        sockets = self._sockets.get(channel)
        if sockets:
            publication = Publication(channel, data, self._prepare, self._warn,
                                      shared=not self._per_recipient())
            for socket in list(sockets):
                socket.deliver(publication)
        self._watchers_deliver(channel, data)

    def deliver_positioned(self, channel: str, data: Any, offset: int, epoch: str) -> None:
        """
        Hand a publication of a channel with history, at C{offset} of the
        history C{epoch}, to the local subscribers of C{channel} (called by
        the history store; see L{scserver._history}): the subscriptions
        that opted in to recovery get its position, the others the same
        frames as from L{deliver}.
        """
        sockets = self._sockets.get(channel)
        if sockets:
            publication = Publication(channel, data, self._prepare, self._warn,
                                      shared=not self._per_recipient())
            self.history_store.fan_out(channel, list(sockets), publication, offset, epoch)
        self._watchers_deliver(channel, data)

    def _watchers_deliver(self, channel: str, data: Any) -> None:
        """Hand C{data} to the watchers of the server-side C{channel}, if subscribed."""
        server_channel = self._channels.get(channel)
        if server_channel is not None and server_channel.state == SCChannel.SUBSCRIBED:
            server_channel._deliver(data)
