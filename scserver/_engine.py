"""
The SocketCluster wire protocol as a sans-I/O state machine.

L{ProtocolEngine} is fed inbound payloads (L{ProtocolEngine.receive}) and
driven by a clock (any C{IReactorTime}, a L{twisted.internet.task.Clock} in
tests).  It knows nothing of sockets or autobahn: it writes payloads and
closes through an I{output} object and reports what the peer did to a
I{handler} object.  That makes every rule of the protocol testable frame by
frame:

 - packet classification (pong, batch, event, response, raw);
 - the handshake timer (close 4005) and the strict handshake (close 4009);
 - the ping/pong heartbeat for protocol v1 (C{#1}/C{#2} through the codec),
   v2 (empty text frames) and C{'auto'}, which learns the version per socket
   from the first pong;
 - call ids in both directions, acknowledgement timeouts, replies, batched
   replies;
 - C{#disconnect} handling and the union dialect for server closes (a
   C{#disconnect} event and the reason in the close frame).

The I{output} provides C{write(payload)} (C{str} for a text frame, C{bytes}
for a binary frame) and C{close(code, reason)}.

The I{handler} provides C{engine_handshake(cid, data)},
C{engine_event(event, data, cid)}, C{engine_raw(message)},
C{engine_message(message)}, C{engine_pong()}, C{engine_error(error)} and
C{engine_closed(code, reason, was_open)}.
"""

from twisted.logger import Logger

from .errors import (
    BadConnectionError,
    InvalidMessageError,
    TimeoutError,
    dehydrate_error,
    hydrate_error,
)

CONNECTING = "connecting"
OPEN = "open"
CLOSED = "closed"

PING_V1 = "#1"
PONG_V1 = "#2"
PING_V2 = ""

_MISSING = object()

_MAX_SAFE_INTEGER = 2 ** 53 - 1
_MAX_CID_TEXT = 128


def valid_cid(cid):
    """
    Return C{cid} when it is one this server answers, else C{None}.

    SocketCluster answers only a truthy cid and echoes it as the C{rid}; we
    accept integers in JavaScript's safe range and short strings (v14
    echoes string cids) and refuse anything else rather than echo it back.
    """
    if type(cid) is int:
        if 0 < cid <= _MAX_SAFE_INTEGER:
            return cid
        return None
    if type(cid) is str and 0 < len(cid) <= _MAX_CID_TEXT:
        return cid
    if type(cid) is float and cid.is_integer() and 0 < cid <= _MAX_SAFE_INTEGER:
        return int(cid)
    return None


_SERVER_CLOSE_CODES = frozenset([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011])


def close_frame_code(code):
    """
    Return a code that a server may put into a close frame: C{code} itself
    when RFC 6455 allows it (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011,
    or 3000-4999), otherwise 1000.
    """
    if type(code) is int and (code in _SERVER_CLOSE_CODES or 3000 <= code <= 4999):
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


class _PendingAck:
    __slots__ = ("event", "callback", "timer")

    def __init__(self, event, callback, timer):
        self.event = event
        self.callback = callback
        self.timer = timer


class ProtocolEngine:
    """
    One SocketCluster connection, server side, without I/O.

    @ivar state: C{'connecting'}, C{'open'} or C{'closed'}.
    @ivar protocol_version: 1 or 2 once known; C{None} while C{'auto'} has
        not seen a pong yet.
    """

    _log = Logger()

    def __init__(self, codec, clock, handler, output, *, protocol_version="auto",
                 ping_interval=8.0, ping_timeout=20.0, ping_timeout_disabled=False,
                 handshake_timeout=10.0, ack_timeout=10.0, strict_handshake=True,
                 batch_duration=None):
        self.codec = codec
        self.clock = clock
        self.handler = handler
        self.output = output
        self.state = CONNECTING
        self.protocol_version = None if protocol_version == "auto" else protocol_version
        self._auto = protocol_version == "auto"
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.ping_timeout_disabled = ping_timeout_disabled
        self.ack_timeout = ack_timeout
        self.strict_handshake = strict_handshake
        self.batch_duration = batch_duration
        self._handshake_received = False
        self._cid = 0
        self._pending = {}
        self._batch = []
        self._batch_timer = None
        self._ping_sent = False
        self._ping_loop = None
        self._pong_timer = None
        self._auto_grace = None
        self._handshake_timer = clock.callLater(handshake_timeout, self._handshake_timed_out)
        if not ping_timeout_disabled:
            self._pong_timer = clock.callLater(ping_timeout, self._pong_timed_out)
            self._ping_loop = clock.callLater(ping_interval, self._ping)

    # -- inbound ---------------------------------------------------------

    def receive(self, payload):
        """
        Handle one inbound WebSocket message.

        @param payload: C{str} for a text frame, C{bytes} for a binary one.
        """
        if self.state == CLOSED:
            return
        self.handler.engine_message(payload)
        if self.state == CLOSED:
            return
        self._reset_pong_timer()
        if payload == PING_V2:
            self._pong(2)
            return
        try:
            obj = self.codec.decode(payload)
        except Exception as e:
            error = InvalidMessageError("Failed to decode message: {}".format(e))
            if self.state == CONNECTING and self.strict_handshake:
                self._violation()
                return
            self.handler.engine_error(error)
            return
        if obj == PONG_V1:
            self._pong(1)
            return
        if self.state == CONNECTING and self.strict_handshake:
            if not (type(obj) is dict and obj.get("event") == "#handshake"):
                self._violation()
                return
        if type(obj) is list:
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
            self.handler.engine_raw(obj)
            return
        event = obj.get("event", _MISSING)
        if event is not _MISSING:
            cid = obj.get("cid")
            if type(event) is not str:
                self.handler.engine_error(InvalidMessageError(
                    "Event names must be strings; got {}".format(type(event).__name__)))
                cid = valid_cid(cid)
                if cid is not None:
                    self.respond(cid, InvalidMessageError("Event name was malformatted"))
                return
            data = obj.get("data")
            if event == "#handshake":
                if self._handshake_received:
                    return
                self._handshake_received = True
                self._cancel(self._handshake_timer)
                self._handshake_timer = None
                self.handler.engine_handshake(valid_cid(cid), data)
                return
            if event == "#disconnect":
                self._peer_disconnect(data)
                return
            if cid is not None:
                checked = valid_cid(cid)
                if checked is None and cid:
                    self.handler.engine_error(InvalidMessageError(
                        "Ignored the invalid cid of a {!r} event".format(event)))
                cid = checked
            self.handler.engine_event(event, data, cid)
            return
        if "rid" in obj:
            self._response(obj)
            return
        self.handler.engine_raw(obj)

    def _response(self, obj):
        rid = obj.get("rid")
        if type(rid) is bool:
            return
        try:
            pending = self._pending.pop(rid, None)
        except TypeError:
            pending = None
        if pending is None:
            return
        if pending.timer.active():
            pending.timer.cancel()
        error = obj.get("error")
        self._call(pending.callback,
                   hydrate_error(error) if error is not None else None, obj.get("data"))

    def _peer_disconnect(self, data):
        code, reason = 1000, None
        if type(data) is dict:
            code = data.get("code", 1000)
            reason = data.get("data")
        if type(code) is not int:
            code = 1000
        self.close(code, reason, notify_peer=False)

    # -- heartbeat -------------------------------------------------------

    def _reset_pong_timer(self):
        timer = self._pong_timer
        if timer is not None and timer.active():
            timer.reset(self.ping_timeout)

    def _pong(self, version):
        if self.state == CONNECTING and self.strict_handshake and not self._ping_sent:
            self._violation()
            return
        if self.protocol_version is None:
            self.protocol_version = version
        elif self.protocol_version != version:
            # The other dialect's pong form: for this socket it is raw text.
            self.handler.engine_raw(PONG_V1 if version == 1 else PING_V2)
            return
        if self._auto_grace is not None and self._auto_grace.active():
            self._auto_grace.cancel()
        self._auto_grace = None
        self.handler.engine_pong()

    def _ping(self):
        self._ping_loop = self.clock.callLater(self.ping_interval, self._ping)
        self._ping_sent = True
        version = self.protocol_version
        if version == 1:
            self._send_v1_ping()
        else:
            self.output.write(PING_V2)
            if version is None:
                grace = min(1.0, self.ping_interval / 4.0, self.ping_timeout / 4.0)
                if self._auto_grace is None or not self._auto_grace.active():
                    self._auto_grace = self.clock.callLater(grace, self._auto_fallback)

    def _auto_fallback(self):
        self._auto_grace = None
        if self.state != CLOSED and self.protocol_version is None:
            self._send_v1_ping()

    def _send_v1_ping(self):
        try:
            self.output.write(self.codec.encode(PING_V1))
        except Exception as e:
            self.handler.engine_error(e)

    def _pong_timed_out(self):
        self._pong_timer = None
        self.close(4001, "", notify_peer=False)

    def _handshake_timed_out(self):
        self._handshake_timer = None
        if self.state == CONNECTING:
            self.close(4005, None)

    # -- outbound --------------------------------------------------------

    def handshake_done(self):
        """The handshake succeeded: the connection is open."""
        if self.state != CONNECTING:
            return
        self.state = OPEN
        self._cancel(self._handshake_timer)
        self._handshake_timer = None

    def send_packet(self, packet):
        """
        Encode and send C{packet}.

        @return: C{True} when it was written; C{False} when the socket is
            closed or the packet could not be encoded (reported to the
            handler as an error).
        """
        if self.state == CLOSED:
            return False
        try:
            payload = self.codec.encode(packet)
        except Exception as e:
            self.handler.engine_error(e)
            return False
        self.output.write(payload)
        return True

    def emit(self, event, data=_MISSING, callback=None, timeout=None):
        """
        Send an event; with a C{callback(error, data)} ask for a reply.

        The callback gets a L{TimeoutError} when no reply came within the
        ack timeout, or when the packet could not be sent.

        @return: the cid used, or C{None}.
        """
        packet = {"event": event}
        if data is not _MISSING:
            packet["data"] = data
        if callback is not None and self.state == CLOSED:
            callback(BadConnectionError(
                "Event '{}' was aborted due to a bad connection".format(event),
                type="disconnect"), None)
            return None
        if callback is None:
            self.send_packet(packet)
            return None
        self._cid += 1
        cid = self._cid
        packet["cid"] = cid
        timer = self.clock.callLater(
            self.ack_timeout if timeout is None else timeout, self._ack_timed_out, cid)
        self._pending[cid] = _PendingAck(event, callback, timer)
        if not self.send_packet(packet):
            self._pending.pop(cid, None)
            timer.cancel()
            callback(TimeoutError("Event response for '{}' could not be sent".format(event)), None)
        return cid

    def _ack_timed_out(self, cid):
        pending = self._pending.pop(cid, None)
        if pending is not None:
            self._call(pending.callback,
                       TimeoutError("Event response for '{}' timed out".format(pending.event)),
                       None)

    def respond(self, cid, error=None, data=None, batch=False):
        """
        Reply to the request C{cid}: C{{"rid": cid}} with C{error}
        (dehydrated) when it is not C{None} or C{False}, and C{data} when it
        is not C{None}.

        With C{batch}, the reply is queued and sent in one array with the
        other batched replies after the batch duration.
        """
        if cid is None or self.state == CLOSED:
            return
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
        if not self.send_packet(packet) and self.state != CLOSED:
            self.send_packet({"rid": cid, "error": dehydrate_error(
                InvalidMessageError("The response could not be encoded"))})

    def _flush_batch(self):
        self._cancel(self._batch_timer)
        self._batch_timer = None
        batch, self._batch = self._batch, []
        if batch:
            self.send_packet(batch)

    def send_raw(self, data):
        """Send C{data} as it is, without the codec (C{str} text, C{bytes} binary)."""
        if self.state != CLOSED:
            self.output.write(data)

    # -- closing ---------------------------------------------------------

    def close(self, code=1000, reason=None, notify_peer=True):
        """
        Close the connection with C{code}.

        With C{notify_peer}, a C{#disconnect} event carrying the code and
        the reason goes first (protocol v1 clients read the reason there);
        the close frame carries the reason too (v2 clients read it there).
        """
        if self.state == CLOSED:
            return
        if self._batch:
            self._flush_batch()
        if notify_peer and self.protocol_version != 2:
            packet = {"code": code}
            if reason is not None:
                packet["data"] = reason
            self.send_packet({"event": "#disconnect", "data": packet})
        was_open = self.state == OPEN
        self.state = CLOSED
        self._stop_timers()
        self.output.close(close_frame_code(code), close_frame_reason(reason))
        self.handler.engine_closed(code, reason, was_open)

    def connection_lost(self, code, reason):
        """The transport closed (the peer closed, or the connection dropped)."""
        if self.state == CLOSED:
            return
        was_open = self.state == OPEN
        self.state = CLOSED
        self._stop_timers()
        self.handler.engine_closed(code, reason, was_open)

    def _stop_timers(self):
        for timer in (self._handshake_timer, self._pong_timer, self._ping_loop,
                      self._auto_grace, self._batch_timer):
            self._cancel(timer)
        self._handshake_timer = self._pong_timer = self._ping_loop = None
        self._auto_grace = self._batch_timer = None
        self._batch = []
        pending, self._pending = self._pending, {}
        for ack in pending.values():
            self._cancel(ack.timer)
        # v14 lets pending acks time out; failing them at once is kinder and
        # frees their memory (v15+ does the same).
        for ack in pending.values():
            self._call(ack.callback, BadConnectionError(
                "Event '{}' was aborted due to a bad connection".format(ack.event),
                type="disconnect"), None)

    def _call(self, callback, error, data):
        """Call an acknowledgement callback; its exceptions are logged, not raised."""
        try:
            callback(error, data)
        except Exception:
            self._log.failure("Error in the acknowledgement callback of an event")

    @staticmethod
    def _cancel(timer):
        if timer is not None and timer.active():
            timer.cancel()
