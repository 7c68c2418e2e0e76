"""
A typing smoke check of the public API.

mypy checks this module as strictly as an application's own code (see its
section in setup.cfg): the functions below use scserver the way an
application does, and C{assert_type} pins what the API returns.  A line
marked C{# type: ignore[...]} is a misuse that mypy must reject (with
C{warn_unused_ignores}, an ignore that is not needed is an error).  The
functions never run; trial only imports the module, and checks that the
package ships its C{py.typed} marker.
"""

import os
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import SynchronousTestCase
from typing_extensions import assert_type

import scserver
from scserver import SCChannel, SCServer, SCServerSocket, listen
from scserver.brokers.memory import MemoryBroker
from scserver.client import SCClientChannel, SCClientSocket, connect
from scserver.codec import MinBinCodec
from scserver.exchange import Exchange
from scserver.interfaces import IBroker, ICodecEngine
from scserver.middleware import Request


def on_connection(socket: SCServerSocket, status: dict[str, Any]) -> None:
    socket.emit("welcome", {"id": socket.id})
    socket.emit("ping", None, lambda error, data: None)
    assert_type(socket.invoke("ask", 1), Deferred[Any])
    assert_type(socket.set_auth_token({"user": "alice"}, expires_in=60), Deferred[str])
    assert_type(socket.auth_token, Optional[dict[str, Any]])
    assert_type(socket.state, str)
    assert_type(socket.subscriptions(), list[str])
    socket.on("chat", lambda data, respond: respond(None, data))
    socket.kick_out(["news", "sport"], "bye")
    socket.disconnect(4000, "bye")
    socket.disconnect("bye")  # type: ignore[arg-type]


def publish_in(req: Request, next: Callable[..., None]) -> None:
    if req.channel == "private":
        next(Exception("private channel"))
    else:
        req.data = {"wrapped": req.data}
        next()


def server_side() -> None:
    server = SCServer(path="/socketcluster/", ping_interval=5.0, broker=MemoryBroker())
    server.on("connection", on_connection)
    server.add_middleware(SCServer.MIDDLEWARE_PUBLISH_IN, publish_in)
    server.set_codec_engine(MinBinCodec())
    codec: ICodecEngine = server.codec
    broker: IBroker = server.broker
    assert_type(server.clients.get("id"), Optional[SCServerSocket])
    assert_type(server.emit("warning", Exception()), bool)

    exchange: Exchange = server.exchange
    assert_type(exchange.publish("news", {"headline": "hi"}), Deferred[Any])
    exchange.publish(1, "hi")  # type: ignore[arg-type]
    channel = exchange.subscribe("news")
    assert_type(channel, SCChannel)
    watcher: Callable[[Any], None] = print
    assert_type(channel.watch(watcher), Callable[[Any], None])
    assert_type(channel.subscribe(), Deferred[SCChannel])
    assert_type(channel.publish("hi"), Deferred[Any])

    assert_type(server.listen("tcp:8000"), Deferred[IListeningPort])
    assert_type(server.listen(8000), Deferred[IListeningPort])
    server.listen(8000.5)  # type: ignore[arg-type]
    assert_type(server.close(), Deferred[Any])
    assert_type(listen(8000, auth_key="secret"), Deferred[SCServer])
    print(codec, broker)


async def client_side() -> None:
    socket = await connect("ws://127.0.0.1:8000/socketcluster/", auto_reconnect=False)
    assert_type(socket, SCClientSocket)
    socket.on("welcome", lambda data, respond: None)
    assert_type(await socket.invoke("echo", {"hello": "world"}), Any)
    channel = socket.subscribe("news", wait_for_auth=True)
    assert_type(channel, SCClientChannel)
    channel.watch(print)
    assert_type(await channel.when_subscribed(), SCClientChannel)
    assert_type(socket.channel("news"), Optional[SCClientChannel])
    await socket.publish("news", "hi")
    status = await socket.authenticate("signed.jwt.token")
    assert_type(status, dict[str, Any])
    assert_type(socket.disconnect(), Deferred[None])
    socket.subscribe(42)  # type: ignore[arg-type]


class PyTypedTests(SynchronousTestCase):
    """The package is marked as typed (PEP 561)."""

    def test_py_typed(self) -> None:
        """C{scserver/py.typed} exists, so type checkers read the annotations."""
        path = os.path.join(os.path.dirname(scserver.__file__), "py.typed")
        if not os.path.isfile(path):
            self.fail("{} is missing".format(path))
