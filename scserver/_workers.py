# -*- test-case-name: tests.test_workers,tests.test_tap -*-
"""
Several worker processes on one host: C{twistd scserver --workers N}.

The parent process runs no server.  L{WorkerPool}, a Twisted service, binds
every C{--listen} endpoint once (in C{privilegedStartService}, so before
twistd drops privileges), stops accepting on those sockets itself, and
starts N workers with C{reactor.spawnProcess}, handing each the listening
sockets as inherited file descriptors (C{childFDs}): the first C{--listen}
endpoint is descriptor 3 of every worker, the next one 4, and so on.  The
kernel gives each new connection to one of the workers accepting on the
shared socket.

A worker is C{python -c "from twisted.scripts.twistd import run; run()"
-n --pidfile= --logger scserver._workers.worker_log_observer scserver ...}
with the parent's server options, C{--app} and C{--listen} arguments (not
C{--workers}), and the environment variable C{SCSERVER_WORKER_FDS}
(L{WORKER_FDS_ENV}), for example C{"3:INET,4:INET6"}: one descriptor and
address family per C{--listen}, in order.  C{twistd scserver} reads (and
removes) that variable and listens with an L{InheritedEndpoint} per
C{--listen} instead of binding: it adopts the descriptor with
C{reactor.adoptStreamPort}.  For an C{ssl:} endpoint the worker parses the
description again, against a C{MemoryReactor} that records but never binds,
to get the same TLS options, and wraps the server's factory in a
C{TLSMemoryBIOFactory}, as C{reactor.listenSSL} would.  A worker moves to a
process group of its own (Ctrl-C in a terminal signals the parent only),
and its standard input is a pipe from the parent: when the parent is gone
it reads end of file and stops (L{ParentWatch}).  Its log lines go to its
standard output, which the parent reads and logs, prefixed with the
worker's number and pid.

The parent restarts a worker that ends, after a delay growing from
L{INITIAL_DELAY} (doubling up to L{MAX_DELAY}, back to the start once a
worker has stayed up L{STABLE_AFTER} seconds).  When the parent's service
stops (SIGTERM or SIGINT to the parent), it sends SIGTERM to every worker
(each closes its connections with 1001 and exits), sends SIGKILL to those
still running after the shutdown timeout, and then closes the listening
sockets.

Each worker is a whole L{scserver.server.SCServer}: C{server.clients}, the
client counts and anything the C{--app} keeps in memory are per process.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import (
    ConnectionDone,
    ProcessDone,
    ProcessExitedAlready,
    ReactorNotRunning,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReadDescriptor,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import FileLogObserver, ILogObserver, LogEvent, Logger, eventAsText
from twisted.python.failure import Failure
from zope.interface import implementer

from ._logging import observer as log_observer
from ._endpoints import with_default_backlog

__all__ = [
    "WORKER_FDS_ENV",
    "FIRST_FD",
    "TWISTD",
    "INITIAL_DELAY",
    "MAX_DELAY",
    "STABLE_AFTER",
    "KILL_WAIT",
    "endpoint_type",
    "parse_inherited",
    "format_inherited",
    "tls_context_factory",
    "InheritedEndpoint",
    "ParentWatch",
    "worker_log_observer",
    "reactor_name",
    "WorkerPool",
]

WORKER_FDS_ENV = "SCSERVER_WORKER_FDS"
"""
The environment variable telling a worker which descriptors it inherited:
C{"fd:FAMILY"} per C{--listen}, comma-separated, FAMILY being C{INET},
C{INET6} or C{UNIX}.
"""

FIRST_FD = 3
"""The descriptor of the first shared socket in a worker (as systemd does)."""

TWISTD = "from twisted.scripts.twistd import run; run()"
"""The program a worker runs, with C{python -c}."""

INITIAL_DELAY = 1.0
"""Seconds before a worker that ended is started again, the first time."""

MAX_DELAY = 30.0
"""The longest delay before a restart: the delay doubles up to this."""

STABLE_AFTER = 30.0
"""A worker that stayed up this long is restarted after L{INITIAL_DELAY} again."""

KILL_WAIT = 5.0
"""Seconds to wait for the workers killed at the shutdown timeout to be reaped."""

_FAMILIES = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}

_log = Logger(namespace="scserver.workers", observer=log_observer)


def endpoint_type(description: str) -> str:
    """
    The type of an endpoint description: what comes before the first colon
    (C{"tcp"}, C{"ssl"}, C{"systemd"}, ...).

    @param description: a Twisted server endpoint description.
    @return: C{str}, stripped.
    """
    return description.split(":", 1)[0].strip()


def parse_inherited(text: str) -> list[tuple[int, int]]:
    """
    Parse a value of L{WORKER_FDS_ENV}.

    @param text: C{"3:INET,4:INET6"}.
    @return: C{[(fd, address family), ...]}, in C{--listen} order.
    @raise ValueError: when C{text} is not in that form.
    """
    inherited: list[tuple[int, int]] = []
    for item in text.split(","):
        fd, sep, family = item.strip().partition(":")
        if not sep or family.upper() not in _FAMILIES or not fd.isdigit():
            raise ValueError("expected fd:INET, fd:INET6 or fd:UNIX, got {!r}".format(item))
        inherited.append((int(fd), _FAMILIES[family.upper()]))
    return inherited


def format_inherited(families: Sequence[str], first: int = FIRST_FD) -> str:
    """
    Make the value of L{WORKER_FDS_ENV} for sockets that are descriptors
    C{first}, C{first + 1}, ... of the worker.

    @param families: C{"INET"}, C{"INET6"} or C{"UNIX"} per socket.
    @return: C{str}, for example C{"3:INET,4:INET6"}.
    """
    return ",".join("{}:{}".format(first + i, family) for i, family in enumerate(families))


def tls_context_factory(description: str) -> Any:
    """
    The TLS options of an endpoint description, without listening.

    The description is parsed against a C{MemoryReactor} and listened on
    there (which records, never binds): when the endpoint called
    C{listenSSL}, its context factory is returned.  C{systemd:} endpoints
    are not parsed (the inherited descriptors are the parent's).

    @param description: a Twisted server endpoint description.
    @return: the C{IOpenSSLServerConnectionCreator} (or context factory)
        of an C{ssl:} endpoint, or C{None} for an endpoint without TLS.
    @raise Exception: whatever parsing raises (a missing certificate file,
        for example).
    """
    if endpoint_type(description) == "systemd":
        return None
    from twisted.internet.testing import MemoryReactor

    recorder = MemoryReactor()  # type: ignore[no-untyped-call]
    serverFromString(recorder, description).listen(Factory())
    if recorder.sslServers:
        return recorder.sslServers[0][2]
    return None


@implementer(IStreamServerEndpoint)
class InheritedEndpoint:
    """
    Listen on a socket inherited from the parent process, with the TLS
    options of its C{--listen} description.

    @ivar reactor: the reactor (an C{IReactorSocket}).
    @ivar description: the C{--listen} endpoint description.
    @ivar fileno: the inherited descriptor; closed once adopted (the port
        keeps a duplicate of its own).
    @ivar family: its address family (C{socket.AF_INET}, ...).
    """

    def __init__(self, reactor: Any, description: str, fileno: int, family: int) -> None:
        self.reactor = reactor
        self.description = description
        self.fileno = fileno
        self.family = family

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Adopt the inherited socket with C{protocolFactory}, wrapped in a
        C{TLSMemoryBIOFactory} for an C{ssl:} description.

        @return: a C{Deferred} firing with the listening port, or failing
            (the TLS options could not be made, the descriptor is not a
            listening socket, ...).
        """
        try:
            options = tls_context_factory(self.description)
            factory = protocolFactory
            if options is not None:
                from twisted.protocols.tls import TLSMemoryBIOFactory

                factory = TLSMemoryBIOFactory(options, False, protocolFactory)
            os.set_blocking(self.fileno, False)
            port: IListeningPort = self.reactor.adoptStreamPort(self.fileno, self.family, factory)
            os.close(self.fileno)
        except BaseException:
            return fail()
        return succeed(port)


@implementer(IReadDescriptor)
class _ParentPipe:
    """
    The read end of the pipe the parent holds open: end of file means that
    the parent is gone.
    """

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self._fd = fd
        self._gone = gone

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "scserver-worker"

    def doRead(self) -> Optional[BaseException]:  # type: ignore[override]
        # The interface says Failure, but the reactor expects what Twisted's
        # own descriptors return: an exception instance (CONNECTION_DONE),
        # after which it calls connectionLost.
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if data:
            return None
        return ConnectionDone("the parent process closed the pipe")

    def connectionLost(self, reason: Failure) -> None:
        self._gone()


class ParentWatch(Service):
    """
    In a worker: leave the parent's process group, so that a signal to the
    group (Ctrl-C in a terminal) reaches the parent only, which then stops
    the workers; and stop the reactor when the parent process is gone (its
    end of the worker's standard input pipe is closed), so that a worker
    never outlives its parent.

    @ivar reactor: the reactor.
    @ivar fd: the descriptor to watch, 0.
    """

    name = "parent-watch"

    def __init__(self, reactor: Any, fd: int = 0) -> None:
        self.reactor = reactor
        self.fd = fd
        self._pipe: Optional[_ParentPipe] = None

    def startService(self) -> None:
        """
        Move to a process group of its own, watch the pipe, and ignore
        SIGTERM and SIGINT once the worker is stopping (the parent may send
        SIGTERM to a worker that systemd, say, already signalled; twistd
        would log a second one as an error).
        """
        Service.startService(self)
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        self.reactor.addSystemEventTrigger("before", "shutdown", _ignore_stop_signals)
        self._pipe = _ParentPipe(self.fd, self._gone)
        os.set_blocking(self.fd, False)
        self.reactor.addReader(self._pipe)

    def stopService(self) -> None:
        """Stop watching."""
        Service.stopService(self)
        if self._pipe is not None:
            self.reactor.removeReader(self._pipe)
            self._pipe = None

    def _gone(self) -> None:
        self._pipe = None
        if self.running and self.reactor.running:
            _log.warn("The parent process is gone; stopping")
            try:
                self.reactor.stop()
            except ReactorNotRunning:
                pass  # already stopping


def _ignore_stop_signals() -> None:
    for name in ("SIGTERM", "SIGINT"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_IGN)


def _worker_line(event: LogEvent) -> Optional[str]:
    text = eventAsText(event, includeTimestamp=False)
    return text + "\n" if text else None


def worker_log_observer() -> ILogObserver:
    """
    The log observer of a worker (C{twistd --logger
    scserver._workers.worker_log_observer}): C{"[system] message"} lines on
    standard output, without a timestamp (the parent adds its own).

    @return: an C{ILogObserver}.
    """
    out: TextIO = sys.stdout
    return FileLogObserver(out, _worker_line)


def reactor_name(reactor: Any) -> Optional[str]:
    """
    The twistd C{--reactor} name of C{reactor}'s type, so that the workers
    run the same reactor as the parent.

    @return: C{str}, or C{None} when C{reactor} is not one twistd can
        install by name.
    """
    from twisted.application.reactors import getReactorTypes

    module = type(reactor).__module__
    for installer in getReactorTypes():
        # moduleName is an attribute of Twisted's Reactor installers, not of
        # the IReactorInstaller interface.
        if getattr(installer, "moduleName", None) == module:
            name: str = installer.shortName
            return name
    return None


class _NoAccept(Factory):
    """The factory of the parent's ports, which never accept."""

    noisy = False

    def logPrefix(self) -> str:
        return "scserver-workers"

    def buildProtocol(self, addr: Any) -> Optional[Protocol]:
        return None


def _family(address: object) -> str:
    if isinstance(address, IPv4Address):
        return "INET"
    if isinstance(address, IPv6Address):
        return "INET6"
    if isinstance(address, UNIXAddress):
        return "UNIX"
    raise ValueError("not a TCP or UNIX socket address: {!r}".format(address))


def _show(address: object) -> str:
    if isinstance(address, IPv4Address):
        return "{}:{}".format(address.host, address.port)
    if isinstance(address, IPv6Address):
        return "[{}]:{}".format(address.host, address.port)
    if isinstance(address, UNIXAddress):
        name = address.name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return repr(address)


def _how(reason: Optional[BaseException]) -> str:
    """How a process ended, in words."""
    if isinstance(reason, ProcessDone):
        return "exited with status 0"
    number = getattr(reason, "signal", None)
    if number is not None:
        return "was killed by signal {}".format(number)
    return "exited with status {}".format(getattr(reason, "exitCode", None))


class _Worker(ProcessProtocol):
    """
    One worker process: logs its output line by line and tells the pool
    when it exits.
    """

    def __init__(self, pool: "WorkerPool", slot: "_Slot") -> None:
        self._pool = pool
        self._slot = slot
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        for line in lines:
            self._relay(line)

    def _relay(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text:
            _log.info("{line}", line=text,
                      log_system="worker {} pid {}".format(self._slot.number, self._slot.pid))

    def processExited(self, reason: Failure) -> None:
        # On exit, not on processEnded: that waits until every pipe is
        # closed, which a process the worker started may delay forever.
        self._pool.worker_ended(self._slot, reason.value)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in sorted(self._partial.items()):
            if rest:
                self._relay(rest)
        self._partial = {}


class _Slot:
    """
    One of the N workers: its current process, restart delay and timer.

    @ivar number: 1 to N.
    @ivar transport: the C{IProcessTransport} while running, else C{None}.
    @ivar pid: the pid of the current (or last) process.
    @ivar started: when it was started (reactor seconds).
    @ivar delay: the delay before the next restart.
    @ivar restart: the pending restart call, or C{None}.
    @ivar waiters: C{Deferred}s to fire when the process ends.
    """

    def __init__(self, number: int) -> None:
        self.number = number
        self.transport: Any = None
        self.pid: Optional[int] = None
        self.started = 0.0
        self.delay = INITIAL_DELAY
        self.restart: Any = None
        self.waiters: list[Deferred[None]] = []

    def ended(self) -> Deferred[None]:
        """
        @return: a C{Deferred} firing once the current process has ended
            (at once when none is running).
        """
        if self.transport is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.waiters.append(d)
        return d


class WorkerPool(Service):
    """
    The parent process of C{twistd scserver --workers N}: binds the
    C{--listen} endpoints, runs N workers on them, restarts those that end
    and stops them all when it stops (see the module documentation).

    @ivar reactor: the reactor.
    @ivar listen: the C{--listen} endpoint descriptions.
    @ivar arguments: the C{twistd scserver} arguments of a worker (after
        C{scserver}).
    @ivar workers: the number of workers.
    @ivar shutdown_timeout: seconds the workers get to stop before they
        are killed.
    @ivar twistd_arguments: extra twistd arguments of a worker (before
        C{scserver}), such as C{--reactor}.
    @ivar executable: the Python interpreter the workers run.
    @ivar handle_signals: whether SIGTERM and SIGINT stop the reactor
        without twistd re-raising the signal, so that the parent exits 0
        once its workers stopped (set by the twistd plugin).
    @ivar environment: environment variables a worker gets besides the
        parent's (the token keys given by file or environment variable,
        which are kept off the workers' command lines).
    @ivar ports: the parent's listening ports, once bound.
    """

    name = "workers"

    def __init__(self, reactor: Any, listen: Sequence[str], arguments: Sequence[str],
                 workers: int, shutdown_timeout: float = 10.0,
                 twistd_arguments: Sequence[str] = (),
                 executable: str = sys.executable, handle_signals: bool = False,
                 environment: Optional[Mapping[str, str]] = None) -> None:
        self.reactor = reactor
        self.listen = list(listen)
        self.arguments = list(arguments)
        self.workers = workers
        self.shutdown_timeout = shutdown_timeout
        self.twistd_arguments = list(twistd_arguments)
        self.executable = executable
        self.handle_signals = handle_signals
        self.environment = dict(environment) if environment is not None else {}
        self.ports: list[Any] = []
        self._families: list[str] = []
        self._slots = [_Slot(number) for number in range(1, workers + 1)]
        self._stopping = False

    # -- the shared sockets ------------------------------------------------

    def privilegedStartService(self) -> None:
        """
        Bind every endpoint (before twistd sheds privileges).

        @raise Exception: when an endpoint cannot be listened on, so that
            twistd does not start.
        """
        Service.privilegedStartService(self)
        self._bind()

    def _bind(self) -> None:
        if self.ports:
            return
        try:
            for description in self.listen:
                self._bind_one(description)
        except BaseException:
            for port in self.ports:
                port.stopListening()
            self.ports = []
            self._families = []
            raise

    def _bind_one(self, description: str) -> None:
        outcome: list[object] = []
        # The backlog is the listening socket's: the workers inherit it.
        d = serverFromString(self.reactor, with_default_backlog(description)).listen(_NoAccept())
        d.addBoth(outcome.append)
        if not outcome:
            d.cancel()
            raise RuntimeError(
                "--listen {}: the endpoint did not listen at once; --workers needs an"
                " endpoint that binds a socket (tcp, tcp6, ssl, systemd)".format(description))
        result = outcome[0]
        if isinstance(result, Failure):
            result.raiseException()
        port: Any = result
        if not (callable(getattr(port, "stopReading", None))
                and callable(getattr(port, "fileno", None))):
            port.stopListening()
            raise RuntimeError(
                "--listen {}: its port has no file descriptor to share with the"
                " workers".format(description))
        # The parent never accepts: the workers do, on the same socket.
        port.stopReading()
        self.ports.append(port)
        host = port.getHost()
        self._families.append(_family(host))
        _log.info("{description} bound on {address}, shared by {workers} workers",
                  description=description, address=_show(host), workers=self.workers)

    # -- the workers -------------------------------------------------------

    def startService(self) -> None:
        """Bind (if not done yet) and start the workers once the reactor runs."""
        Service.startService(self)
        self._stopping = False
        self._bind()
        self.reactor.callWhenRunning(self._start_all)

    def _start_all(self) -> None:
        if self.handle_signals:
            # Installed once the reactor runs, over the reactor's own: a stop
            # asked for by a signal is an orderly one (exit status 0).
            for number in (signal.SIGTERM, signal.SIGINT):
                signal.signal(number, self._stop_signal)
        for slot in self._slots:
            if self.running and not self._stopping and slot.transport is None:
                self._spawn(slot)

    def command(self) -> list[str]:
        """
        @return: the command line of a worker.
        """
        return ([self.executable, "-c", TWISTD, "-n", "--pidfile=",
                 "--logger", "scserver._workers.worker_log_observer"]
                + self.twistd_arguments + ["scserver"] + self.arguments)

    def _spawn(self, slot: _Slot) -> None:
        slot.restart = None
        if not self.running or self._stopping:
            return
        env = dict(os.environ)
        env.update(self.environment)
        env[WORKER_FDS_ENV] = format_inherited(self._families)
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        for i, port in enumerate(self.ports):
            child_fds[FIRST_FD + i] = port.fileno()
        try:
            transport = self.reactor.spawnProcess(
                _Worker(self, slot), self.executable, self.command(), env=env,
                childFDs=child_fds)
        except Exception:
            _log.failure("Worker {number} could not be started", number=slot.number)
            self._schedule_restart(slot)
            return
        slot.transport = transport
        slot.pid = transport.pid
        slot.started = self.reactor.seconds()
        _log.info("Worker {number} started (pid {pid})", number=slot.number, pid=slot.pid)

    def worker_ended(self, slot: _Slot, reason: Optional[BaseException]) -> None:
        """
        Called by a worker's process protocol when it ended: log it and,
        unless the pool is stopping, schedule its restart.

        @param slot: the worker.
        @param reason: C{ProcessDone} or C{ProcessTerminated}.
        """
        slot.transport = None
        waiters, slot.waiters = slot.waiters, []
        if self.running and not self._stopping:
            if self.reactor.seconds() - slot.started >= STABLE_AFTER:
                slot.delay = INITIAL_DELAY
            _log.warn("Worker {number} (pid {pid}) {how}; restarting it in {delay:g} s",
                      number=slot.number, pid=slot.pid, how=_how(reason), delay=slot.delay)
            self._schedule_restart(slot)
        else:
            _log.info("Worker {number} (pid {pid}) {how}",
                      number=slot.number, pid=slot.pid, how=_how(reason))
        for d in waiters:
            d.callback(None)

    def _schedule_restart(self, slot: _Slot) -> None:
        delay = slot.delay
        slot.delay = min(delay * 2, MAX_DELAY)
        slot.restart = self.reactor.callLater(delay, self._spawn, slot)

    @property
    def pids(self) -> list[int]:
        """The pids of the running workers."""
        return [slot.pid for slot in self._slots
                if slot.transport is not None and slot.pid is not None]

    # -- stopping ----------------------------------------------------------

    def _stop_signal(self, number: int, frame: object) -> None:
        _log.info("Received signal {number}: stopping", number=number)
        self.reactor.callFromThread(self.reactor.stop)

    def stopService(self) -> Deferred[None]:
        """
        Stop every worker (SIGTERM, then SIGKILL after the shutdown
        timeout), then close the shared sockets.

        @return: a C{Deferred} firing once that is done.
        """
        Service.stopService(self)
        self._stopping = True
        for slot in self._slots:
            if slot.restart is not None:
                if slot.restart.active():
                    slot.restart.cancel()
                slot.restart = None
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        running = [slot for slot in self._slots if slot.transport is not None]
        if running:
            _log.info("Stopping {count} workers (SIGTERM; SIGKILL after {timeout:g} s)",
                      count=len(running), timeout=self.shutdown_timeout)
        self._signal(running, "TERM")
        if not await self._all_ended(running, self.shutdown_timeout):
            left = [slot for slot in running if slot.transport is not None]
            for slot in left:
                _log.warn("Worker {number} (pid {pid}) did not stop within {timeout:g} s;"
                          " killing it", number=slot.number, pid=slot.pid,
                          timeout=self.shutdown_timeout)
            self._signal(left, "KILL")
            await self._all_ended(left, KILL_WAIT)
        ports, self.ports = self.ports, []
        self._families = []
        await DeferredList([maybeDeferred(port.stopListening) for port in ports],
                           consumeErrors=True)

    def _signal(self, slots: Sequence[_Slot], name: str) -> None:
        for slot in slots:
            if slot.transport is not None:
                try:
                    slot.transport.signalProcess(name)
                except ProcessExitedAlready:
                    pass

    def _all_ended(self, slots: Sequence[_Slot], timeout: float) -> Deferred[bool]:
        """
        @return: a C{Deferred} firing with C{True} once every one of
            C{slots} has ended, or with C{False} after C{timeout} seconds.
        """
        result: Deferred[bool] = Deferred()
        ended = DeferredList([slot.ended() for slot in slots])

        def expire() -> None:
            if not result.called:
                result.callback(False)

        timer = self.reactor.callLater(timeout, expire)

        def done(_: object) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                result.callback(True)

        ended.addCallback(done)
        return result
