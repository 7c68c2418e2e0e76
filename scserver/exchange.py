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

from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._events import EventEmitter
from .errors import InvalidArgumentsError
from .interfaces import IBroker, ICodecEngine

if TYPE_CHECKING:
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
        try:
            prepared = self._frames[key]
        except KeyError:
            packet = {"event": "#publish", "data": {"channel": self.channel, "data": self.data}}
            try:
                prepared = self._prepare(codec.encode(packet))
            except Exception as e:
                prepared = None
                self._warn(e)
            self._frames[key] = prepared
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

    _log = Logger()

    def __init__(self, name: str, exchange: "Exchange") -> None:
        EventEmitter.__init__(self)
        self.name = name
        self.state = self.UNSUBSCRIBED
        self._exchange = exchange
        self._watchers: list[Watcher] = []

    def __repr__(self) -> str:
        return "<SCChannel {!r} {}>".format(self.name, self.state)

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
    """

    _log = Logger()

    def __init__(self, broker: IBroker, prepare: Prepare, warn: Callable[[Any], object],
                 per_recipient: Callable[[], bool] = lambda: False) -> None:
        """
        @param broker: the L{scserver.interfaces.IBroker}.
        @param prepare: frames an encoded payload once for many connections
            (see L{Publication}).
        @param warn: called with the errors of a fan-out.
        @param per_recipient: tells, once per publication, whether each
            recipient must get its own copy (C{publishOut} middleware).
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

    # -- public ----------------------------------------------------------

    def publish(self, channel: str, data: Any) -> Deferred[Any]:
        """
        Publish C{data} on C{channel}, to every subscriber in every process.

        @return: a Deferred that fires once the broker accepted it.
        """
        if type(channel) is not str:
            return fail(InvalidArgumentsError("The channel name must be a string"))
        return maybeDeferred(self.broker.publish, channel, data)

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
        server_channel = self._channels.get(channel)
        if server_channel is not None and server_channel.state == SCChannel.SUBSCRIBED:
            server_channel._deliver(data)
