"""
The server-side application of the interop tests.

The scenarios in C{tests/interop/scenarios/} drive the official SocketCluster
JavaScript clients against a server running this application.  It uses only
the public API of C{scserver} (see the API documentation), so it also runs
as a real server::

    twistd -n scserver --listen tcp:8000:interface=127.0.0.1 --app tests.interop_app:setup

and then, from C{tests/interop}::

    node run.js emitAck 14 ws://127.0.0.1:8000/socketcluster/

Client events it handles (the client's data in brackets):

- C{echo} (anything): replies with the data.
- C{fail}: replies with a L{CustomError} (code 4242, details).
- C{failString}: replies with the string error C{'plain string error'}.
- C{unhandledEvent}: deliberately no handler, so no reply ever.
- C{noack} (anything): appends the data to C{server.interop_noack}.
- C{noackReceived}: replies with C{server.interop_noack}.
- C{pleaseInvoke} (C{{event, data}}): C{socket.invoke(event, data)}; replies
  with the client's answer, or its error.
- C{pleaseEmit} (C{{event, data, noAck}}): C{socket.emit(event, data,
  callback)}; replies with what the callback got.  With C{noAck} the emit has
  no callback and the reply is C{'sent'}.
- C{pleaseDisconnect} (C{{code, reason}}): C{socket.disconnect(code, reason)},
  by default C{4321, 'custom reason'}.
- C{pleasePublish} (C{{channel, data}}): C{server.exchange.publish(channel,
  data)}; replies C{'published'} once the exchange accepted it.
- C{pleaseKickOut} (C{{channel, message}}): C{socket.kick_out(channel,
  message)}; replies C{'kicked'}.
- C{socketInfo}: replies with C{{id, protocolVersion, subscriptions}} as this
  socket sees itself.
- C{login} (a dict): C{socket.set_auth_token(data)}; replies C{'ok'} once the
  signed token was sent (so the client gets C{#setAuthToken} first).
- C{authInfo}: replies with C{{authState, authToken, signedAuthToken}} as the
  server socket sees them.
- C{pleaseDeauthenticate}: C{socket.deauthenticate()}; replies
  C{'deauthenticated'} (after the C{#removeAuthToken}).

For assertions the server object gets C{interop_noack} (a list),
C{interop_sockets} (every socket that connected, in order) and
C{interop_auth_events}: C{(event, socket id, detail)} for every server
C{'authentication'} (detail: the token), C{'deauthentication'} (the old
token) and C{'badSocketAuthToken'} (the error's name) event, in order.
"""

__all__ = ["setup", "CustomError"]


class CustomError(Exception):
    """
    An application error with extra public fields, like a JavaScript
    C{Error} whose C{name}, C{code} and C{details} were assigned.  It reaches
    the client as C{{"message": ..., "name": "CustomError", "code": 4242,
    "details": {...}}}.
    """

    def __init__(self, message, code=None, details=None):
        super().__init__(message)
        self.name = "CustomError"
        self.code = code
        self.details = details


def setup(server):
    """
    Install the interop test application on C{server} (an C{SCServer}).
    """
    server.interop_noack = []
    server.interop_sockets = []
    server.interop_auth_events = []

    def on_connection(socket, status):
        server.interop_sockets.append(socket)
        _install_handlers(server, socket)

    def on_authentication(socket, token):
        server.interop_auth_events.append(("authentication", socket.id, token))

    def on_deauthentication(socket, old_token):
        server.interop_auth_events.append(("deauthentication", socket.id, old_token))

    def on_bad_token(socket, info):
        error = info.get("authError")
        server.interop_auth_events.append(
            ("badSocketAuthToken", socket.id, getattr(error, "name", type(error).__name__)))

    server.on("connection", on_connection)
    server.on("authentication", on_authentication)
    server.on("deauthentication", on_deauthentication)
    server.on("badSocketAuthToken", on_bad_token)


def _reply_with(respond):
    """
    Callbacks for a Deferred: its result becomes the reply, its failure the
    error reply.
    """

    def ok(result):
        respond(None, result)

    def failed(failure):
        respond(failure.value)

    return ok, failed


def _install_handlers(server, socket):
    def echo(data, respond):
        respond(None, data)

    def fail(data, respond):
        respond(
            CustomError(
                "Something bad happened",
                code=4242,
                details={"field": "amount", "reason": "negative"},
            )
        )

    def fail_string(data, respond):
        respond("plain string error")

    def noack(data, respond):
        server.interop_noack.append(data)

    def noack_received(data, respond):
        respond(None, list(server.interop_noack))

    def please_invoke(data, respond):
        d = socket.invoke(data["event"], data.get("data"))
        d.addCallbacks(*_reply_with(respond))

    def please_emit(data, respond):
        if data.get("noAck"):
            socket.emit(data["event"], data.get("data"))
            respond(None, "sent")
            return

        def callback(error, result):
            if error is not None:
                respond(error)
            else:
                respond(None, result)

        socket.emit(data["event"], data.get("data"), callback=callback)

    def please_disconnect(data, respond):
        data = data or {}
        code = data.get("code")
        reason = data.get("reason")
        socket.disconnect(
            4321 if code is None else code,
            "custom reason" if reason is None else reason,
        )

    def please_publish(data, respond):
        d = server.exchange.publish(data["channel"], data.get("data"))
        ok, failed = _reply_with(respond)
        d.addCallbacks(lambda _: ok("published"), failed)

    def please_kick_out(data, respond):
        data = data or {}
        socket.kick_out(data.get("channel"), data.get("message"))
        respond(None, "kicked")

    def socket_info(data, respond):
        respond(
            None,
            {
                "id": socket.id,
                "protocolVersion": socket.protocol_version,
                "subscriptions": sorted(socket.subscriptions()),
            },
        )

    def login(data, respond):
        d = socket.set_auth_token(data)
        d.addCallbacks(lambda _: respond(None, "ok"), lambda f: respond(f.value))

    def auth_info(data, respond):
        respond(
            None,
            {
                "authState": socket.auth_state,
                "authToken": socket.auth_token,
                "signedAuthToken": socket.signed_auth_token,
            },
        )

    def please_deauthenticate(data, respond):
        socket.deauthenticate()
        respond(None, "deauthenticated")

    handlers = {
        "echo": echo,
        "fail": fail,
        "failString": fail_string,
        "noack": noack,
        "noackReceived": noack_received,
        "pleaseInvoke": please_invoke,
        "pleaseEmit": please_emit,
        "pleaseDisconnect": please_disconnect,
        "pleasePublish": please_publish,
        "pleaseKickOut": please_kick_out,
        "socketInfo": socket_info,
        "login": login,
        "authInfo": auth_info,
        "pleaseDeauthenticate": please_deauthenticate,
    }
    for event, handler in handlers.items():
        socket.on(event, handler)
