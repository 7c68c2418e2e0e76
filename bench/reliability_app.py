"""
The server-side application of some scenarios of C{bench/reliability.py}:
the interop test application (C{tests.interop_app}) plus what those
scenarios need and the tests' application does not have::

    twistd -n scserver --app bench.reliability_app:setup ...

(with the repository on C{PYTHONPATH}).  Client events it adds:

- C{dbFail}: the handler raises L{DatabaseError}, an ordinary Python
  exception whose message and attributes hold a database DSN with a
  password; C{dbFailAsync} raises it from a coroutine, C{dbFailDeferred}
  returns a failed Deferred, and C{dbRespond} passes it to C{respond}
  itself (the application choosing to send it).
- C{mwFail}: an C{emit} middleware raises L{DatabaseError} for this event.
- C{blast} (C{{channel, count, size}}): the server publishes C{count}
  messages of C{size} characters to C{channel}; replies C{'blasted'}.
- C{serverCloses}: replies with C{[code, reason]} of every server socket
  closed so far, as the server saw it (its C{'disconnection'} and
  C{'connectionAbort'} events), in order.

The C{authenticate} middleware it installs is asynchronous for a token with
a C{slow} claim: it decides C{slow} seconds later (a C{reactor.callLater}),
and blocks the token when it also has C{reject: true}.  Other tokens are
allowed at once.
"""

from twisted.internet.defer import fail

from tests import interop_app

__all__ = ["setup", "DatabaseError", "DSN"]

DSN = "postgresql://app:hunter2-db-password@db.internal:5432/production"
"""The secret the failing handlers carry: it must never reach a client."""


class DatabaseError(Exception):
    """
    An ordinary application exception (not a SocketCluster error), like a
    database driver's, with the DSN in its message and its attributes.
    """

    def __init__(self, message, dsn):
        super().__init__(message)
        self.dsn = dsn
        self.query = "SELECT * FROM users WHERE id = 1"


def _error():
    return DatabaseError("could not connect to " + DSN, DSN)


def setup(server):
    """
    Install the interop application and the additions above on C{server}.
    """
    interop_app.setup(server)
    reactor = server.reactor
    server.reliability_closes = []
    limit = 10000

    def closed(socket, code, reason):
        if len(server.reliability_closes) < limit:
            server.reliability_closes.append([code, reason])

    server.on("disconnection", closed)
    server.on("connectionAbort", closed)

    def authenticate(req, next):
        token = req.auth_token or {}
        delay = token.get("slow")
        if type(delay) not in (int, float):
            next()
            return

        def decide():
            if token.get("reject"):
                next(interop_app.CustomError("Token rejected by the slow middleware"))
            else:
                next()

        reactor.callLater(min(max(delay, 0), 30), decide)

    def emit_middleware(req, next):
        if req.event == "mwFail":
            raise _error()
        next()

    server.add_middleware(server.MIDDLEWARE_AUTHENTICATE, authenticate)
    server.add_middleware(server.MIDDLEWARE_EMIT, emit_middleware)

    def on_connection(socket, status):
        def db_fail(data, respond):
            raise _error()

        async def db_fail_async(data, respond):
            raise _error()

        def db_fail_deferred(data, respond):
            return fail(_error())

        def db_respond(data, respond):
            respond(_error())

        def mw_fail(data, respond):
            respond(None, "not reached")

        def blast(data, respond):
            channel = data["channel"]
            count = min(int(data.get("count", 1)), 100000)
            text = "x" * min(int(data.get("size", 1)), 1 << 20)
            for i in range(count):
                server.exchange.publish(channel, {"i": i, "text": text})
            respond(None, "blasted")

        def server_closes(data, respond):
            respond(None, list(server.reliability_closes))

        for event, handler in [("dbFail", db_fail), ("dbFailAsync", db_fail_async),
                               ("dbFailDeferred", db_fail_deferred),
                               ("dbRespond", db_respond), ("mwFail", mw_fail),
                               ("blast", blast), ("serverCloses", server_closes)]:
            socket.on(event, handler)

    server.on("connection", on_connection)

