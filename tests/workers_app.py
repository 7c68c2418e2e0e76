"""
The application of L{tests.test_workers}, run by C{twistd scserver} worker
processes::

    twistd -n scserver --workers 2 --listen tcp:8000:interface=127.0.0.1 \\
        --app tests.workers_app:setup --broker tests.workers_app:make_broker \\
        --auth-key secret

Client events it handles:

- C{pid}: replies with the worker's process id, C{os.getpid()}.
- C{echo} (anything): replies with the data.

L{stubborn_setup} is the same application in a process that never finishes
stopping, for the shutdown timeout.
"""

import os

from twisted.internet.defer import Deferred

from scserver.brokers.memory import MemoryBroker

__all__ = ["setup", "stubborn_setup", "make_broker"]


def setup(server):
    """
    Install the handlers on C{server} (an C{SCServer}).
    """

    def on_connection(socket, status):
        socket.on("pid", lambda data, respond: respond(None, os.getpid()))
        socket.on("echo", lambda data, respond: respond(None, data))

    server.on("connection", on_connection)


def stubborn_setup(server):
    """
    L{setup}, plus a shutdown trigger that never finishes: the process
    does not exit on SIGTERM, so its parent has to kill it.
    """
    setup(server)
    server.reactor.addSystemEventTrigger("before", "shutdown", Deferred)


def make_broker(reactor=None):
    """
    A C{--broker pkg.module:factory} for the tests: the in-process
    C{MemoryBroker} under another name.  C{--workers} refuses only the
    default in-process broker; these tests do not publish across workers
    (a real shared broker is Redis).
    """
    return MemoryBroker()
