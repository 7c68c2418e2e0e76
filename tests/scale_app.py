"""
The server-side application of the scale-out interop tests
(C{tests/interop/scenarios/scale.js}): several processes, or the workers of
C{twistd scserver --workers N}, each running it and sharing a broker.

    twistd -n scserver --listen tcp:8000 --broker redis://127.0.0.1:6379/0 \\
        --auth-key "$KEY" --app tests.scale_app:setup

Client events it handles:

- C{pid}: replies with this process's pid.
- C{watched} (a channel name): replies with every publication the server's
  own exchange watcher saw on that channel (the channels C{scale} and
  C{failover} are watched from start-up).
- C{pleasePublish} (C{{channel, data}}): C{server.exchange.publish}; replies
  C{'published'} once the broker accepted it.
- C{killme}: the process kills itself with SIGKILL (a crashed worker).
- C{terminateParent}: sends SIGTERM to the parent process (the C{--workers}
  supervisor); replies C{'sent'}.
"""

import os
import signal

__all__ = ["setup", "WATCHED_CHANNELS"]

WATCHED_CHANNELS = ("scale", "failover")


def setup(server):
    """Install the handlers on C{server} (an L{scserver.SCServer})."""
    watched = {name: [] for name in WATCHED_CHANNELS}
    for name in WATCHED_CHANNELS:
        server.exchange.subscribe(name).watch(watched[name].append)

    def on_connection(socket, status):
        socket.on("pid", lambda data, respond: respond(None, os.getpid()))
        socket.on("watched", lambda data, respond: respond(None, watched.get(data, [])))

        def please_publish(data, respond):
            d = server.exchange.publish(data["channel"], data.get("data"))
            d.addCallbacks(lambda _: respond(None, "published"), lambda f: respond(f.value))

        socket.on("pleasePublish", please_publish)
        socket.on("killme", lambda data, respond: os.kill(os.getpid(), signal.SIGKILL))

        def terminate_parent(data, respond):
            os.kill(os.getppid(), signal.SIGTERM)
            respond(None, "sent")

        socket.on("terminateParent", terminate_parent)

    server.on("connection", on_connection)
