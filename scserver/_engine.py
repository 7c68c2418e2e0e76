"""
The SocketCluster wire protocol as a sans-I/O state machine, for both roles.

One L{ProtocolEngine} is one WebSocket connection, seen from the server
(L{SERVER}) or from the client (L{CLIENT}).  It is fed inbound payloads
(L{ProtocolEngine.receive}) and driven by a clock (any C{IReactorTime}, a
C{twisted.internet.task.Clock} in tests).  It knows nothing of sockets or
autobahn: it writes payloads and closes through an L{IEngineOutput} and
reports what the peer did to an L{IEngineOwner}.  Every rule of the
protocol is therefore written once and testable frame by frame:

 - packet classification (heartbeat, batch, event, reply, raw);
 - call ids in both directions, acknowledgement timeouts, replies and
   batched replies, error (de)hydration;
 - the heartbeat: the server pings (protocol v1: C{#1} through the codec;
   v2: an empty text frame; C{'auto'} learns the version per socket from
   the first pong) and closes with 4001 when pongs stop; the client answers
   pings and closes with 4000 when they stop;
 - the server's handshake timer (close 4005) and strict handshake (close
   4009);
 - (server) the inbound limits of a socket: its budget of messages and
   bytes per second (L{InboundBudget}, close L{CLOSE_RATE_LIMIT}), the
   size of a batch (close L{CLOSE_BATCH_TOO_LARGE}) and the requests in
   flight (a C{ResourceLimitError} reply);
 - C{#disconnect} and close codes: a server close announces itself with a
   C{#disconnect} event (unless the peer speaks v2) and the reason in the
   close frame (the union dialect); a client close does as
   socketcluster-client does for its protocol version.

What differs between the roles is the heartbeat, the handshake timer and
the close dialect; everything else is shared.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface

from ._logging import observer as log_observer
from .errors import (
    BadConnectionError,
    InvalidMessageError,
    ResourceLimitError,
    TimeoutError,
    as_exception,
    dehydrate_error,
    hydrate_error,
)

SERVER = "server"
"""The role of an engine that serves a client (it pings, it waits for C{#handshake})."""

CLIENT = "client"
"""The role of an engine that dialled a server (it answers pings, it sends C{#handshake})."""

CONNECTING = "connecting"
OPEN = "open"
CLOSED = "closed"

PING_V1 = "#1"
PONG_V1 = "#2"
PING_V2 = ""

MISSING = object()
"""Stands for an argument that was not given (C{None} is a value on the wire)."""

DEFAULT_TIMEOUT = object()
"""Use the engine's C{ack_timeout} (see L{ProtocolEngine.emit})."""

_MAX_SAFE_INTEGER = 2 ** 53 - 1
_MAX_CID_TEXT = 128

CLOSE_RATE_LIMIT = 4100
"""The server's close code for a socket that sent more than its inbound budget
(the C{max_messages_per_second} and C{max_bytes_per_second} options)."""

CLOSE_BATCH_TOO_LARGE = 4101
"""The server's close code for an inbound batch of more than C{max_batch_size}
packets."""


class IEngineOutput(Interface):
    """
    Where an engine's outbound traffic goes: the WebSocket connection.
    """

    def write(payload):
        """
        Send one WebSocket message.

        @param payload: C{str} for a text frame, C{bytes} for a binary frame.
        """

    def close(code, reason):
        """
        Start the WebSocket closing handshake.

        @param code: a code the role may put in a close frame (the engine
            checked it).
        @param reason: the close frame's reason text (C{""} for none).
        """


class IEngineOwner(Interface):
    """
    What an engine reports, to the socket that owns it.

    The engine calls these synchronously from L{ProtocolEngine.receive},
    from its timers and from L{ProtocolEngine.close}.
    """

    def engine_message(payload):
        """Every inbound message, before anything else (heartbeats included)."""

    def engine_handshake(cid, data):
        """
        The client sent C{#handshake} (server role only; the first one).

        @param cid: the call id to answer, or C{None}.
        """

    def engine_event(event, data, cid):
        """
        The peer sent an event (C{#publish}, C{#subscribe}, an application
        event, ...).

        @param cid: the call id to answer with L{ProtocolEngine.respond},
            or C{None} when the peer wants no reply.
        """

    def engine_raw(message):
        """An inbound message that is neither an event nor a reply."""

    def engine_pong():
        """A heartbeat answer arrived (server role)."""

    def engine_error(error):
        """Something on this connection went wrong (an undecodable message, ...)."""

    def engine_closed(code, reason, was_open):
        """
        The connection closed, from either side.  Called once; the requests
        still waiting for a reply fail right after it.

        @param was_open: whether the handshake had completed.
        """


def valid_cid(cid):
    """
    Return C{cid} when it is one this engine answers, else C{None}.

    SocketCluster answers every truthy cid and echoes it as the C{rid}.  We
    answer positive integers (any a client can send; JavaScript numbers past
    2**53 arrive as large integers), integral floats (as integers) and
    strings of at most 128 characters (v14 echoes string cids), and refuse
    anything else rather than echo it back.
    """
    kind = type(cid)
    if kind is int:
        return cid if cid > 0 else None
    if kind is str:
        return cid if 0 < len(cid) <= _MAX_CID_TEXT else None
    if kind is float and cid.is_integer() and cid > 0:
        return int(cid)
    return None


_CLOSE_CODES = {
    # RFC 6455: 1001 (going away) and 1011 (unexpected condition) are for
    # servers; a browser's WebSocket API lets a client send 1000 and 3000+.
    SERVER: frozenset([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011]),
    CLIENT: frozenset([1000]),
}


def close_frame_code(code, role=SERVER):
    """
    Return a code that C{role} may put into a close frame: C{code} itself
    when it is allowed (3000-4999, 1000, and for a server also 1001, 1002,
    1003, 1007, 1008, 1009 and 1011), otherwise 1000.
    """
    if type(code) is int and (code in _CLOSE_CODES[role] or 3000 <= code <= 4999):
        return code
    return 1000


def close_frame_reason(reason):
    """
    Return C{reason} as close frame text: at most 123 bytes of UTF-8; a
    non-string reason is left out.
    """
    if not isinstance(reason, str):
        return ""
    encoded = reason.encode("utf-8")
    if len(encoded) <= 123:
        return reason
    return encoded[:123].decode("utf-8", "ignore")


def aborted_error(event, code, reason, was_open):
    """
    Return the L{scserver.errors.BadConnectionError} of a request that will
    never be answered because its connection closed (with C{code} and
    C{reason}).

    @param event: the event of the request, or C{None}.
    @param was_open: whether the connection had completed its handshake:
        the error's C{type} is C{'disconnect'}, else C{'connectAbort'}.
    """
    error = BadConnectionError(
        "Event {}was aborted due to a bad connection".format(
            "" if event is None else "'{}' ".format(event)),
        type="disconnect" if was_open else "connectAbort")
    error.code = code
    error.reason = reason
    return error


def reply_deferred(forget):
    """
    Return a Deferred for the reply to a request, and the
    C{callback(error, data)} that fires it: with the data, or with the
    error as an exception (L{scserver.errors.as_exception}).  Cancelling
    the Deferred calls C{forget()}.
    """
    d = Deferred(lambda _: forget())

    def callback(error, reply):
        if d.called:
            return
        if error is not None:
            d.errback(as_exception(error))
        else:
            d.callback(reply)

    return d, callback


class InboundBudget:
    """
    A token bucket of inbound messages and bytes per second, on a clock.

    Each bucket holds one second's worth (the byte bucket at least
    C{burst_bytes}, so that one message of the largest size allowed always
    fits), and refills continuously.  A new bucket starts full, or with the
    fraction C{burst} of that.
    """

    __slots__ = ("_clock", "_message_rate", "_byte_rate", "_message_cap", "_byte_cap",
                 "_messages", "_bytes", "_stamp")

    def __init__(self, clock, messages_per_second=None, bytes_per_second=None, burst_bytes=0,
                 burst=1.0):
        """
        @param clock: an C{IReactorTime}.
        @param messages_per_second: the message rate, or C{None} for no limit.
        @param bytes_per_second: the byte rate, or C{None} for no limit.
        @param burst_bytes: the least the byte bucket holds.
        @param burst: the fraction of a full bucket it starts with (the
            byte bucket never with less than C{burst_bytes}).
        """
        self._clock = clock
        self._message_rate = messages_per_second
        self._byte_rate = bytes_per_second
        self._message_cap = messages_per_second
        self._byte_cap = None if bytes_per_second is None else max(bytes_per_second, burst_bytes)
        self._messages = None if messages_per_second is None else messages_per_second * burst
        self._bytes = None if self._byte_cap is None else max(self._byte_cap * burst, burst_bytes)
        self._stamp = clock.seconds()

    def take(self, size):
        """
        Spend one message of C{size} bytes.

        @return: C{False} when this message is beyond the budget.
        """
        now = self._clock.seconds()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        ok = True
        if self._message_rate is not None:
            messages = min(self._message_cap, self._messages + elapsed * self._message_rate) - 1
            self._messages = messages
            ok = messages >= 0
        if self._byte_rate is not None:
            spent = min(self._byte_cap, self._bytes + elapsed * self._byte_rate) - size
            self._bytes = spent
            ok = ok and spent >= 0
        return ok


class _PendingAck:
    __slots__ = ("event", "callback", "timer")

    def __init__(self, event, callback, timer):
        self.event = event
        self.callback = callback
        self.timer = timer


class ProtocolEngine:
    """
    One SocketCluster connection, without I/O.

    @ivar role: L{SERVER} or L{CLIENT}.
    @ivar state: C{'connecting'} until L{handshake_done}, then C{'open'};
        C{'closed'} once closed from either side.
    @ivar protocol_version: 1 or 2 once known; C{None} while a server
        engine in C{'auto'} mode has not seen a pong yet.
    @ivar codec: the L{scserver.interfaces.ICodecEngine} of the connection.
    @ivar ping_timeout: seconds without a pong (server) or a ping (client)
        before the connection closes.
    """

    # One engine per connection: no instance dict (a third of the size).
    __slots__ = (
        "role", "codec", "clock", "owner", "output", "state", "protocol_version",
        "ping_interval", "ping_timeout", "ping_timeout_disabled", "ack_timeout",
        "strict_handshake", "batch_duration", "max_batch_size", "max_inflight_requests",
        "_budget", "_inflight", "_inflight_count", "_inflight_sweep", "_cid", "_next_cid",
        "_pending", "_batch", "_batch_timer", "_handshake_received", "_ping_sent",
        "_ping_loop", "_auto_grace", "_handshake_timer", "_heartbeat_timer", "_heard",
        "_armed_heard",
    )

    _log = Logger(observer=log_observer)

    def __init__(self, codec, clock, owner, output, *, role=SERVER, protocol_version="auto",
                 ping_interval=8.0, ping_timeout=20.0, ping_timeout_disabled=False,
                 handshake_timeout=10.0, ack_timeout=10.0, strict_handshake=True,
                 batch_duration=None, next_cid=None, max_batch_size=None,
                 max_inflight_requests=None, budget=None):
        """
        @param codec: the codec (an L{scserver.interfaces.ICodecEngine}).
        @param clock: an C{IReactorTime}.
        @param owner: the L{IEngineOwner}.
        @param output: the L{IEngineOutput}.
        @param role: L{SERVER} or L{CLIENT}.
        @param protocol_version: 1, 2, or C{'auto'} (server role only).
        @param ping_interval: seconds between the server's pings.
        @param handshake_timeout: seconds the server waits for C{#handshake}.
        @param strict_handshake: (server) close 4009 on a message before
            C{#handshake}.
        @param batch_duration: seconds batched replies wait (see L{respond}).
        @param next_cid: a callable returning the next call id; the engine
            counts from 1 by itself when C{None} (a client socket shares one
            counter across its connections, as socketcluster-client does).
        @param max_batch_size: (server) the most packets an inbound batch
            may hold; a larger batch closes the connection with
            L{CLOSE_BATCH_TOO_LARGE}.  C{None}: no limit.
        @param max_inflight_requests: (server) the most requests of the
            peer (events with a cid) not answered yet; beyond, a request is
            answered with a L{scserver.errors.ResourceLimitError} and not
            reported to the owner.  A request unanswered for C{ack_timeout}
            no longer counts.  C{None}: no limit.
        @param budget: (server) an L{InboundBudget}; a message beyond it
            closes the connection with L{CLOSE_RATE_LIMIT}.  C{None}: no
            limit.
        """
        if role not in (SERVER, CLIENT):
            raise ValueError("role must be SERVER or CLIENT")
        if protocol_version not in (1, 2) and not (role == SERVER and protocol_version == "auto"):
            raise ValueError("protocol_version must be 1, 2 or (for a server) 'auto'")
        self.role = role
        self.codec = codec
        self.clock = clock
        self.owner = owner
        self.output = output
        self.state = CONNECTING
        self.protocol_version = None if protocol_version == "auto" else protocol_version
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.ping_timeout_disabled = ping_timeout_disabled
        self.ack_timeout = ack_timeout
        self.strict_handshake = strict_handshake and role == SERVER
        self.batch_duration = batch_duration
        self.max_batch_size = max_batch_size
        self.max_inflight_requests = max_inflight_requests
        self._budget = budget
        # Requests of the peer not answered yet (with a limit): cid →
        # [count, time of the latest], and their total.
        self._inflight = None if max_inflight_requests is None else {}
        self._inflight_count = 0
        self._inflight_sweep = 0.0
        self._cid = 0
        self._next_cid = next_cid if next_cid is not None else self._count_cid
        self._pending = {}
        self._batch = []
        self._batch_timer = None
        self._handshake_received = False
        self._ping_sent = False
        self._ping_loop = None
        self._auto_grace = None
        self._handshake_timer = None
        # Server: no message for ping_timeout closes 4001.  Client: no ping
        # for ping_timeout closes 4000.
        self._heartbeat_timer = None
        # (server) When the latest message arrived (the start at first), and
        # when the one before the heartbeat timer was set.  A message costs
        # a clock reading, not a timer reset; the timer is set only when
        # the deadline comes before the next ping (see _watch_heartbeat):
        # a live socket has one timer, its ping loop.
        self._heard = None
        self._armed_heard = None
        if role == SERVER:
            self._handshake_timer = clock.callLater(handshake_timeout, self._handshake_timed_out)
            if not ping_timeout_disabled:
                self._ping_loop = clock.callLater(ping_interval, self._ping)
                self._heard = clock.seconds()
                self._watch_heartbeat(ping_interval)
        elif not ping_timeout_disabled:
            self._heartbeat_timer = clock.callLater(ping_timeout, self._heartbeat_timed_out)

    def _count_cid(self):
        self._cid += 1
        return self._cid

    # -- inbound ---------------------------------------------------------

    def receive(self, payload):
        """
        Handle one inbound WebSocket message.

        @param payload: C{str} for a text frame, C{bytes} for a binary one.
        """
        if self.state == CLOSED:
            return
        self.owner.engine_message(payload)
        if self.state == CLOSED:
            return
        if self._budget is not None and not self._budget.take(len(payload)):
            self.close(CLOSE_RATE_LIMIT, "Inbound rate limit exceeded")
            return
        if self._heard is not None:
            self._heard = self.clock.seconds()
        if payload == PING_V2:
            self._heartbeat(2, payload)
            return
        try:
            obj = self.codec.decode(payload)
        except Exception as e:
            if self.strict_handshake and self.state == CONNECTING:
                self._violation()
                return
            self.owner.engine_error(InvalidMessageError("Failed to decode message: {}".format(e)))
            return
        if obj == (PONG_V1 if self.role == SERVER else PING_V1):
            self._heartbeat(1, obj)
            return
        if self.strict_handshake and self.state == CONNECTING:
            if not (type(obj) is dict and obj.get("event") == "#handshake"):
                self._violation()
                return
        if type(obj) is list:
            if self.max_batch_size is not None and len(obj) > self.max_batch_size:
                self.close(CLOSE_BATCH_TOO_LARGE, "Batch too large")
                return
            for item in obj:
                if self.state == CLOSED:
                    return
                self._dispatch(item)
        else:
            self._dispatch(obj)

    def _violation(self):
        self.close(4009, "", notify_peer=False)

    def _dispatch(self, obj):
        if type(obj) is not dict:
            self.owner.engine_raw(obj)
            return
        event = obj.get("event", MISSING)
        if event is not MISSING:
            cid = obj.get("cid")
            if type(event) is not str:
                self.owner.engine_error(InvalidMessageError(
                    "Event names must be strings; got {}".format(type(event).__name__)))
                self.respond(valid_cid(cid), InvalidMessageError("Event name was malformatted"))
                return
            data = obj.get("data")
            if event == "#handshake" and self.role == SERVER:
                if not self._handshake_received:
                    self._handshake_received = True
                    self._cancel(self._handshake_timer)
                    self._handshake_timer = None
                    self.owner.engine_handshake(valid_cid(cid), data)
                return
            if event == "#disconnect":
                self._peer_disconnect(data)
                return
            if cid is not None:
                checked = valid_cid(cid)
                if checked is None and cid:
                    self.owner.engine_error(InvalidMessageError(
                        "Ignored the invalid cid of a {!r} event".format(event)))
                cid = checked
                if self._inflight is not None and cid is not None and not self._admit(cid):
                    return
            self.owner.engine_event(event, data, cid)
            return
        if "rid" in obj:
            self._reply(obj)
            return
        self.owner.engine_raw(obj)

    def _admit(self, cid):
        """
        Count the request C{cid} in flight, or answer it with a
        L{scserver.errors.ResourceLimitError} when C{max_inflight_requests}
        are in flight already.

        @return: whether the request may run.
        """
        inflight = self._inflight
        now = self.clock.seconds()
        if self._inflight_count >= self.max_inflight_requests:
            if now >= self._inflight_sweep:
                # Forget the requests unanswered for ack_timeout, and note
                # when the oldest left can expire: until then a refusal
                # costs no sweep.
                horizon = now - self.ack_timeout
                oldest = now
                for key, entry in list(inflight.items()):
                    if entry[1] <= horizon:
                        del inflight[key]
                        self._inflight_count -= entry[0]
                    elif entry[1] < oldest:
                        oldest = entry[1]
                self._inflight_sweep = oldest + self.ack_timeout
            if self._inflight_count >= self.max_inflight_requests:
                self._write_encoded({"rid": cid, "error": dehydrate_error(ResourceLimitError(
                    "Too many requests in flight: the limit is {}".format(
                        self.max_inflight_requests)))})
                return False
        entry = inflight.get(cid)
        if entry is None:
            inflight[cid] = [1, now]
        else:
            entry[0] += 1
            entry[1] = now
        self._inflight_count += 1
        return True

    def release(self, cid):
        """
        The peer's request C{cid} will not be answered (no handler wants
        it): it no longer counts against C{max_inflight_requests}.
        L{respond} releases the requests it answers.
        """
        inflight = self._inflight
        if inflight:
            entry = inflight.get(cid)
            if entry is not None:
                self._inflight_count -= 1
                if entry[0] <= 1:
                    del inflight[cid]
                else:
                    entry[0] -= 1

    @property
    def inflight_requests(self):
        """The number of the peer's requests not answered yet (counted with a limit only)."""
        return self._inflight_count

    def _reply(self, obj):
        rid = obj.get("rid")
        if type(rid) is bool:
            return
        try:
            pending = self._pending.pop(rid, None)
        except TypeError:
            return
        if pending is None:
            return
        self._cancel(pending.timer)
        error = obj.get("error")
        error = None if error is None or error is False else hydrate_error(error)
        self._call(pending, error, obj.get("data"))

    def _peer_disconnect(self, data):
        code, reason = 1000, None
        if type(data) is dict:
            code = data.get("code", 1000)
            reason = data.get("data")
        if type(code) is not int:
            code = 1000
        # socketcluster-client answers with its own close (a v1 client
        # echoes the #disconnect); a server just closes.
        self.close(code, reason, notify_peer=self.role == CLIENT)

    # -- heartbeat -------------------------------------------------------

    def _reset_heartbeat(self):
        timer = self._heartbeat_timer
        if timer is not None and timer.active():
            timer.reset(self.ping_timeout)

    def _heartbeat(self, version, message):
        """
        A heartbeat in the form of C{version} arrived: a pong for a server,
        a ping for a client.  For a socket that speaks the other version it
        is raw text.
        """
        if self.role == CLIENT:
            if version != self.protocol_version:
                self.owner.engine_raw(message)
                return
            self._reset_heartbeat()
            if version == 2:
                self.output.write(PING_V2)
            else:
                self._write_encoded(PONG_V1)
            return
        if self.strict_handshake and self.state == CONNECTING and not self._ping_sent:
            self._violation()
            return
        if self.protocol_version is None:
            self.protocol_version = version
        elif self.protocol_version != version:
            self.owner.engine_raw(message)
            return
        self._cancel(self._auto_grace)
        self._auto_grace = None
        self.owner.engine_pong()

    def _watch_heartbeat(self, horizon):
        """
        (server) Set the heartbeat timer, for ping_timeout after the latest
        message, when that comes within C{horizon} seconds (by the next
        ping, which looks again).
        """
        if self._heartbeat_timer is None and self._heard is not None:
            delay = self._heard + self.ping_timeout - self.clock.seconds()
            if delay <= horizon:
                self._armed_heard = self._heard
                self._heartbeat_timer = self.clock.callLater(
                    max(delay, 0.0), self._heartbeat_timed_out)

    def _ping(self):
        # The heartbeat first: at the same time, the original's timer (set
        # before this ping's) fires first.
        self._watch_heartbeat(self.ping_interval)
        self._ping_loop = self.clock.callLater(self.ping_interval, self._ping)
        self._ping_sent = True
        if self.protocol_version == 1:
            self._write_encoded(PING_V1)
            return
        self.output.write(PING_V2)
        if self.protocol_version is None and (
                self._auto_grace is None or not self._auto_grace.active()):
            # 'auto': a v1 client ignores the empty ping; if no pong came
            # shortly, ping the v1 way too.
            grace = min(1.0, self.ping_interval / 4.0, self.ping_timeout / 4.0)
            self._auto_grace = self.clock.callLater(grace, self._auto_fallback)

    def _auto_fallback(self):
        self._auto_grace = None
        if self.state != CLOSED and self.protocol_version is None:
            self._write_encoded(PING_V1)

    def _heartbeat_timed_out(self):
        self._heartbeat_timer = None
        if self._heard is not None and self._heard != self._armed_heard:
            # A message arrived since the timer was set: ping_timeout
            # counts from it; the timer is set again if the deadline comes
            # before the next ping.
            loop = self._ping_loop
            self._watch_heartbeat(loop.getTime() - self.clock.seconds()
                                  if loop is not None and loop.active() else float("inf"))
            return
        # As the originals report it: SocketCluster's server with an empty
        # reason, the client with none.
        if self.role == SERVER:
            self.close(4001, "", notify_peer=False)
        else:
            self.close(4000, None, notify_peer=False)

    def _handshake_timed_out(self):
        self._handshake_timer = None
        if self.state == CONNECTING:
            self.close(4005, None)

    # -- outbound --------------------------------------------------------

    def handshake_done(self, ping_timeout=None):
        """
        The handshake succeeded: the connection is open.

        @param ping_timeout: (client) the server's C{pingTimeout} in
            seconds, which replaces the engine's from now on.
        """
        if self.state != CONNECTING:
            return
        self.state = OPEN
        self._cancel(self._handshake_timer)
        self._handshake_timer = None
        if ping_timeout is not None:
            self.ping_timeout = ping_timeout
            self._reset_heartbeat()

    def _write_encoded(self, packet):
        try:
            payload = self.codec.encode(packet)
        except Exception as e:
            self.owner.engine_error(e)
            return False
        self.output.write(payload)
        return True

    def send_packet(self, packet):
        """
        Encode and send C{packet}.

        @return: C{True} when it was written; C{False} when the connection
            is closed or the packet could not be encoded (reported to the
            owner as an error).
        """
        if self.state == CLOSED:
            return False
        return self._write_encoded(packet)

    def emit(self, event, data=MISSING, callback=None, timeout=DEFAULT_TIMEOUT, cid=None):
        """
        Send an event; with a C{callback(error, data)} ask for a reply.

        The callback gets the peer's reply (its error hydrated, or C{None}),
        a L{scserver.errors.TimeoutError} when no reply came in time, or a
        L{scserver.errors.BadConnectionError} when the connection closed
        first (at once when it is closed already).

        @param data: the event data; left out of the packet when not given.
        @param timeout: seconds to wait for the reply; the engine's
            C{ack_timeout} by default; C{None} waits as long as the
            connection lives.
        @param cid: the call id to use (a client reserves one for an event
            it buffered); the next one by default.
        @return: the cid used, or C{None}.
        @raise Exception: when the codec cannot encode the packet; then
            nothing was sent and the callback is not called.
        """
        packet = {"event": event}
        if data is not MISSING:
            packet["data"] = data
        if self.state == CLOSED:
            if callback is not None:
                callback(aborted_error(event, None, None, True), None)
            return None
        if callback is None:
            self.output.write(self.codec.encode(packet))
            return None
        if cid is None:
            cid = self._next_cid()
        packet["cid"] = cid
        payload = self.codec.encode(packet)
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.ack_timeout
        timer = None if timeout is None else self.clock.callLater(
            timeout, self._ack_timed_out, cid)
        self._pending[cid] = _PendingAck(event, callback, timer)
        self.output.write(payload)
        return cid

    def invoke(self, event, data=MISSING, timeout=DEFAULT_TIMEOUT):
        """
        Send C{event} and wait for the reply.

        @return: a Deferred firing with the reply data.  It fails with the
            peer's error (hydrated; a value that is not an error is wrapped
            by L{scserver.errors.as_exception}), a
            L{scserver.errors.TimeoutError}, a
            L{scserver.errors.BadConnectionError}, or the codec's error when
            the packet cannot be encoded.  Cancelling it forgets the request.
        """
        cids = []
        d, callback = reply_deferred(lambda: cids and self.forget(cids[0]))
        try:
            cids.append(self.emit(event, data, callback, timeout))
        except Exception as e:
            d.errback(e)
        return d

    def forget(self, cid):
        """Stop waiting for the reply to C{cid}; its callback is never called."""
        pending = self._pending.pop(cid, None)
        if pending is not None:
            self._cancel(pending.timer)

    def _ack_timed_out(self, cid):
        pending = self._pending.pop(cid, None)
        if pending is not None:
            pending.timer = None
            self._call(pending, TimeoutError(
                "Event response for '{}' timed out".format(pending.event)), None)

    def respond(self, cid, error=None, data=None, batch=False):
        """
        Reply to the request C{cid}: C{{"rid": cid}} with C{error}
        (dehydrated) when it is not C{None} or C{False}, and C{data} when it
        is not C{None}.  Nothing is sent when C{cid} is C{None}.

        A reply the codec cannot encode is reported to the owner, and an
        L{scserver.errors.InvalidMessageError} reply goes instead.

        With C{batch}, the reply is queued and sent in one array with the
        other batched replies after the batch duration.
        """
        if cid is None or self.state == CLOSED:
            return
        if self._inflight:
            self.release(cid)
        packet = {"rid": cid}
        if error is not None and error is not False:
            packet["error"] = dehydrate_error(error)
        if data is not None:
            packet["data"] = data
        if batch:
            self._batch.append(packet)
            if self._batch_timer is None:
                self._batch_timer = self.clock.callLater(
                    self.batch_duration or 0, self._flush_batch)
            return
        if not self._write_encoded(packet):
            self._write_encoded({"rid": cid, "error": dehydrate_error(
                InvalidMessageError("The response could not be encoded"))})

    def _flush_batch(self):
        self._cancel(self._batch_timer)
        self._batch_timer = None
        batch, self._batch = self._batch, []
        if batch:
            self._write_encoded(batch)

    def send_raw(self, data):
        """Send C{data} as it is, without the codec (C{str} text, C{bytes} binary)."""
        if self.state != CLOSED:
            self.output.write(data)

    # -- closing ---------------------------------------------------------

    def close(self, code=1000, reason=None, notify_peer=True):
        """
        Close the connection with C{code}.

        With C{notify_peer} the close is announced in the role's dialect: a
        server sends a C{#disconnect} event with the code and the reason
        (unless the peer speaks v2) and puts the reason in the close frame;
        a v1 client that is open sends C{#disconnect}, a v2 client puts the
        reason in the close frame.  Without it (a failure rather than a
        disconnect) a client sends the bare code.
        """
        if self.state == CLOSED:
            return
        if self._batch:
            self._flush_batch()
        frame_reason = close_frame_reason(reason)
        if self.role == SERVER:
            announce = notify_peer and self.protocol_version != 2
        else:
            announce = notify_peer and self.protocol_version == 1 and self.state == OPEN
            if not (notify_peer and self.protocol_version == 2):
                frame_reason = ""
        if announce:
            packet = {"code": code}
            if reason is not None:
                packet["data"] = reason
            self._write_encoded({"event": "#disconnect", "data": packet})
        self._shut(code, reason, (close_frame_code(code, self.role), frame_reason))

    def connection_lost(self, code, reason):
        """
        The connection is gone (the peer closed it, it dropped, or its
        owner cut it off) with C{code} and C{reason}.
        """
        if self.state != CLOSED:
            self._shut(code, reason, None)

    def _shut(self, code, reason, close_frame):
        was_open = self.state == OPEN
        self.state = CLOSED
        for timer in (self._handshake_timer, self._heartbeat_timer, self._ping_loop,
                      self._auto_grace, self._batch_timer):
            self._cancel(timer)
        self._handshake_timer = self._heartbeat_timer = self._ping_loop = None
        self._auto_grace = self._batch_timer = None
        self._batch = []
        if self._inflight:
            self._inflight.clear()
            self._inflight_count = 0
        pending, self._pending = self._pending, {}
        for ack in pending.values():
            self._cancel(ack.timer)
        if close_frame is not None:
            self.output.close(*close_frame)
        self.owner.engine_closed(code, reason, was_open)
        # v14 lets pending acks time out; failing them at once is kinder and
        # frees their memory (v15+ does the same).
        for ack in pending.values():
            self._call(ack, aborted_error(ack.event, code, reason, was_open), None)

    def _call(self, pending, error, data):
        """Call an acknowledgement callback; its exceptions are logged, not raised."""
        try:
            pending.callback(error, data)
        except Exception:
            self._log.failure("Error in the acknowledgement callback of {event!r}",
                              event=pending.event)

    @staticmethod
    def _cancel(timer):
        if timer is not None and timer.active():
            timer.cancel()
