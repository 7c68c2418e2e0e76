"""
The server-side application of the history interop tests
(C{tests/interop/scenarios/history.js}): several processes on one Redis,
started with C{--history-channels}.

    twistd -n scserver --listen tcp:8000 --broker redis://127.0.0.1:6379/0 \\
        --history-channels 'h.*=10/60' --app tests.history_app:setup

Client events it handles:

- C{dropMe}: the server closes this connection with code 4300 (the client
  reconnects on its own after its reconnection delay).
- C{pleasePublish} (C{{channel, data}}): C{server.exchange.publish};
  replies with the offset once the broker accepted it.
- C{history} (C{{channel, since, limit}}): replies with the
  C{exchange.history} page (C{epoch}, C{top}, C{first}, C{publications}).
"""

__all__ = ["setup", "DROP_CODE"]

DROP_CODE = 4300
"""The close code of C{dropMe}."""


def setup(server):
    """Install the handlers on C{server} (an L{scserver.SCServer})."""

    def on_connection(socket, status):
        socket.on("dropMe", lambda data, respond: socket.disconnect(DROP_CODE, "dropped"))

        def please_publish(data, respond):
            d = server.exchange.publish(data["channel"], data.get("data"))
            d.addCallbacks(lambda position: respond(None, position[0]),
                           lambda f: respond(f.value))

        socket.on("pleasePublish", please_publish)

        def history(data, respond):
            d = server.exchange.history(data["channel"], data.get("since"),
                                        data.get("limit", 100))
            d.addCallbacks(
                lambda page: respond(None, {"epoch": page.epoch, "top": page.top,
                                            "first": page.first,
                                            "publications": page.publications}),
                lambda f: respond(f.value))

        socket.on("history", history)

    server.on("connection", on_connection)
