"""
The zope interfaces of scserver's pluggable parts.

A part that provides one of these can replace the default: a codec engine
(C{codec_engine} option), an auth engine (L{SCServer.set_auth_engine
<scserver.server.SCServer.set_auth_engine>}), a broker (C{broker} option)
and middleware functions.
"""

from typing import Any, Callable, Mapping, Optional, Union

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

__all__ = ["ICodecEngine", "IMiddleware", "IAuthEngine", "IBroker", "IAttachableBroker",
           "IPresenceStore", "IPresenceBroker"]


class ICodecEngine(Interface):
    """
    Converts SocketCluster packets to and from WebSocket payloads.

    A codec whose C{encode} returns C{bytes} is sent in binary frames; one
    that returns C{str} in text frames.
    """

    def encode(obj: Any) -> Union[str, bytes]:
        """
        Encode a packet (a dict, list or the ping strings).

        @return: C{str} or C{bytes}.
        @raise Exception: when C{obj} cannot be encoded.
        """

    def decode(data: Union[str, bytes]) -> Any:
        """
        Decode an inbound payload.

        @param data: C{str} (text frame) or C{bytes} (binary frame).
        @return: the decoded object; a payload that is not a packet may be
            returned as the string itself.
        @raise Exception: when the payload cannot be decoded at all.
        """


class IMiddleware(Interface):
    """
    A middleware function, registered with C{SCServer.add_middleware(type, fn)}.
    """

    def __call__(req: Any, next: Callable[..., None]) -> Any:
        """
        Decide whether the action described by C{req} may go on.

        Call C{next()} to allow it, C{next(error)} to block it, C{next(True)}
        to block it silently; or return a Deferred or coroutine instead
        (success allows, failure blocks).  An exception raised blocks.
        """


class IAuthEngine(Interface):
    """
    Signs and verifies auth tokens.

    Both methods may return their result directly or as a Deferred.
    """

    def sign_token(
        payload: Mapping[str, Any], key: Any, options: Mapping[str, Any]
    ) -> Union[str, "Deferred[str]"]:
        """
        Sign C{payload} (a dict) as a token.

        @param key: the signature key (a secret or a PEM private key).
        @param options: a dict with C{algorithm}, C{expires_in} (seconds or
            None) and any further claims options (C{not_before}, C{audience},
            C{issuer}, C{subject}, C{jwtid}, C{headers}).
        @return: the signed token (C{str}) or a Deferred firing with it.
        """

    def verify_token(
        signed_token: Any, key: Any, options: Mapping[str, Any]
    ) -> Union[dict[str, Any], "Deferred[dict[str, Any]]"]:
        """
        Verify C{signed_token} and return its payload.

        @param key: the verification key (a secret or a PEM public key).
        @param options: a dict with C{algorithms} (the accepted list),
            C{leeway} (seconds) and C{socket} (the socket, or None).
        @return: the payload dict, or a Deferred firing with it; fails with
            an L{scserver.errors.AuthTokenExpiredError},
            L{scserver.errors.AuthTokenInvalidError},
            L{scserver.errors.AuthTokenNotBeforeError} or
            L{scserver.errors.AuthTokenError}.
        """


class IBroker(Interface):
    """
    Carries publications between the processes that serve one application.

    The exchange subscribes the broker to a channel once per process, when
    the first local subscriber (a socket or a server-side channel) appears,
    and unsubscribes it when the last one leaves.  The broker calls the
    C{deliver} callable given to L{IBroker.start} once for every
    publication on a subscribed channel, in publication order.
    """

    def start(deliver: Callable[[str, Any], object]) -> Optional["Deferred[Any]"]:
        """
        Start the broker.

        @param deliver: a callable C{deliver(channel, data)}.
        @return: a Deferred that fires when the broker is ready.
        """

    def subscribe(channel: str) -> Optional["Deferred[Any]"]:
        """Subscribe this process to C{channel}; returns a Deferred."""

    def unsubscribe(channel: str) -> Optional["Deferred[Any]"]:
        """Unsubscribe this process from C{channel}; returns a Deferred."""

    def publish(channel: str, data: Any) -> Optional["Deferred[Any]"]:
        """
        Publish C{data} on C{channel}.

        @return: a Deferred that fires once the broker accepted it.
        """

    def stop() -> Optional["Deferred[Any]"]:
        """Release the broker's connections; returns a Deferred."""

    subscriptions = Attribute("The set of channels this process is subscribed to.")


class IAttachableBroker(IBroker):
    """
    A broker that takes settings and a way to report from the server that
    uses it (optional: a plain L{IBroker} is used as it is).

    L{scserver.server.SCServer} calls L{attach} once, when it takes the
    broker, before L{IBroker.start}.  The Redis broker
    (L{scserver.brokers.redis.RedisBroker}) reads its channel prefix from
    the C{broker_prefix} option there and reports lost Redis servers
    through C{warn}.
    """

    def attach(options: Mapping[str, Any], warn: Callable[[Any], object]) -> None:
        """
        Attach the broker to a server.

        @param options: the server's validated options (read them, do not
            change them).
        @param warn: emits the server's C{'warning'} event with an error.
        """


class IPresenceStore(Interface):
    """
    Where the members of the channels that keep presence are stored, for
    every process of an application (see L{IPresenceBroker}).

    A member is a socket id; its record is a dict with C{joined} (a Unix
    time), C{user} (the value of the C{presence_user_claim} claim of its
    token, or C{None}) and C{info} (a dict: what the C{presence_info}
    option returned).  Methods may return their result directly or as a
    Deferred.
    """

    def start(local: Callable[[], Mapping[str, Mapping[str, dict[str, Any]]]],
              gone: Callable[[str, str, dict[str, Any]], object]) -> None:
        """
        Start the store (heartbeats, if it has any).

        @param local: returns this process's members: channel → member →
            record (to write them again after the store lost them).
        @param gone: called as C{gone(channel, member, record)} when the
            store removed the member of a process that died.
        """

    def add(channel: str, member: str, record: dict[str, Any]) -> Optional["Deferred[Any]"]:
        """Add C{member} of this process to C{channel}."""

    def remove(channel: str, member: str) -> Optional["Deferred[Any]"]:
        """Remove C{member} from C{channel}."""

    def members(channel: str) -> Union[dict[str, dict[str, Any]],
                                       "Deferred[dict[str, dict[str, Any]]]"]:
        """
        The members of C{channel} in every live process: member → record.

        @return: the dict, or a Deferred firing with it (failing with
            L{scserver.errors.BrokerError} when the store is unavailable).
        """

    def stop() -> Optional["Deferred[Any]"]:
        """Stop the store (this process's members may stay until they expire)."""


class IPresenceBroker(IBroker):
    """
    A broker that keeps presence (optional: with a broker that does not
    provide it, C{exchange.presence()} fails with a clear
    L{scserver.errors.InvalidActionError}).  The in-process and the Redis
    brokers provide it.
    """

    def presence_store(clock: Any, expiry: float) -> IPresenceStore:
        """
        Make the presence store of this broker (called once per server).

        @param clock: the reactor.
        @param expiry: seconds after which the members of a process that
            stopped refreshing them are gone (the C{presence_expiry}
            option).
        """
