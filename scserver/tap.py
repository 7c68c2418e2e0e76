# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd scserver} command: its options and C{makeService}.

Usage::

    twistd -n scserver [--listen ENDPOINT ...] [--app pkg.module:setup]
                       [--ping-interval 8] [--allow-client-publish false] ...

Every server option of L{scserver.options.OPTIONS} is a flag taking one
value (C{ping_interval} is C{--ping-interval 8}); boolean options take
C{true}/C{false} (also C{yes}/C{no}, C{on}/C{off}, C{1}/C{0}).  C{--listen}
takes a Twisted server endpoint description (C{tcp:8000},
C{tcp:8000:interface=127.0.0.1}, C{ssl:8443:privateKey=key.pem}, C{unix:/run/sc.sock})
and may be repeated; without it the server listens on C{tcp:8000}.

C{--app pkg.module:setup} names a callable that is called with the
L{scserver.server.SCServer} before it listens, to add handlers and
middleware.  If it returns a Deferred or a coroutine, the server starts
listening once that has finished.

C{--workers N} (N > 1) runs N worker processes accepting on the same
sockets: this process binds the endpoints and supervises the workers
(L{scserver._workers.WorkerPool}, made by L{build_pool}), each worker is a
C{twistd scserver} with the same options that adopts the sockets it
inherited (L{scserver._workers.InheritedEndpoint}).  C{--shutdown-timeout}
is how long the workers get to stop before they are killed.

A single process (no C{--workers}) stops gracefully on SIGTERM or SIGINT
(L{GracefulService}): it stops accepting, closes every socket with 1001,
waits up to C{--shutdown-timeout} seconds (default 10) for the closing
handshakes and the broker to stop, and exits with status 0 (twistd would
otherwise re-raise the signal once stopped, ending by signal 15).

The token keys need not be on the command line: C{--auth-key @path} reads
a file (without one trailing newline), C{--auth-key env:NAME} an
environment variable, and without any key option the variable
C{SCSERVER_AUTH_KEY} is read (L{AUTH_KEY_ENV}); the PEM keys take
C{@path} and C{env:NAME}.  Such keys reach the workers in their
environment (L{worker_environment}).  A key shorter than 32 bytes is
accepted, as SocketCluster does, with a warning in the log.

A start-up failure ends the process with exit status 1 and one log line,
without a traceback: an endpoint that cannot be listened on (the parent's
sockets with C{--workers}), a failed C{--app} setup (logged with its
traceback), or a broker not ready within C{--startup-timeout} seconds
(default 60, 0 waits forever).

Everything given on the command line is checked while the options are
parsed (L{Options.postOptions}), so a mistake is reported by twistd as a
usage error, without a traceback.  The reactor and the server module are
imported only by L{makeService}.
"""

import atexit
import inspect
import math
import os
import signal
import socket
import sys
from typing import Any, Callable, Optional, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.endpoints import UNIXServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import InvalidLogLevelError, Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from ._logging import observer as log_observer, set_log_level
from ._endpoints import with_default_backlog
from . import _workers
from . import options as _options
from .errors import InvalidOptionsError
from .options import (
    OPTIONS,
    Option,
    check_broker,
    resolve_broker,
    resolve_codec_engine,
    validate_options,
)

__all__ = [
    "DEFAULT_LISTEN",
    "Options",
    "makeService",
    "build_service",
    "build_pool",
    "worker_arguments",
    "worker_environment",
    "load_object",
    "StartupError",
    "AUTH_KEY_ENV",
    "MIN_AUTH_KEY_BYTES",
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "GracefulService",
]

DEFAULT_LISTEN = "tcp:8000"
"""The endpoint listened on when no C{--listen} is given."""

DEFAULT_SHUTDOWN_TIMEOUT = 10.0
"""
Seconds the connections (or, with C{--workers}, the workers) get to close
when stopping, when C{--shutdown-timeout} is not given.
"""

DEFAULT_STARTUP_TIMEOUT = 60.0
"""
Seconds the broker gets to become ready, when C{--startup-timeout} is not
given.
"""

DEFAULT_LOG_LEVEL = "info"
"""
The C{--log-level} when not given: scserver's debug events (one as a
socket connects, one as it disconnects) are not written.
"""

AUTH_KEY_ENV = "SCSERVER_AUTH_KEY"
"""
The environment variable read as C{--auth-key} when none of C{--auth-key},
C{--auth-private-key} and C{--auth-public-key} is given (and it is set and
not empty).
"""

MIN_AUTH_KEY_BYTES = 32
"""An C{--auth-key} shorter than this (in UTF-8 bytes) is warned about."""

_SECRET_ENV = {
    "auth_key": AUTH_KEY_ENV,
    "auth_private_key": "SCSERVER_AUTH_PRIVATE_KEY",
    "auth_public_key": "SCSERVER_AUTH_PUBLIC_KEY",
    "inspect_token": "SCSERVER_INSPECT_TOKEN",
    "inspect_password": "SCSERVER_INSPECT_PASSWORD",
}
"""
The token keys (and the inspection page's token and password), and the
environment variable through which each reaches the workers when it was
not given on the command line itself.
"""

STARTUP_FAILURE_STATUS = 1
"""The exit status of twistd when the server cannot start."""

USAGE_ERROR_STATUS = 1
"""The exit status of twistd after a usage error (a bad option)."""

_log = Logger(observer=log_observer)


def _help(option: Option) -> str:
    """
    The C{--help} text of one server option.

    @param option: an L{scserver.options.Option}.
    @return: C{str}.
    """
    text = option.doc
    if isinstance(option.default, bool):
        text += " (true/false)"
    if option.default is not None:
        text += " [default: {}]".format(
            str(option.default).lower() if isinstance(option.default, bool) else option.default
        )
    return text


def load_object(spec: str, flag: str = "--app") -> Any:
    """
    Import the object named by C{spec}, C{"pkg.module:name"}.

    The name after the colon may be dotted (C{"pkg.module:App.setup"}).  The
    current directory is appended to C{sys.path} first, so that a module
    beside the command line's working directory can be named, as with
    C{python -m}.

    @param spec: C{str}, C{"pkg.module:name"}.
    @param flag: the command-line flag C{spec} came from, for messages.
    @return: the object.
    @raise usage.UsageError: with a one-line explanation when C{spec} has no
        colon, the module cannot be imported or the name is missing.
    """
    _add_cwd_to_path()
    try:
        return _options.load_object(spec, flag)
    except InvalidOptionsError as e:
        raise usage.UsageError(str(e)) from e


def _add_cwd_to_path() -> None:
    """
    Append the current directory to C{sys.path} (unless it or C{""} is
    there), as C{python -m} would have it, so that C{--app}, C{--codec-engine}
    and C{--broker} can name a module beside the command line's working
    directory.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _load_callable(spec: str, flag: str) -> Callable[..., Any]:
    """
    L{load_object}, checking that the object is callable.

    @raise usage.UsageError: also when the object is not callable.
    """
    obj = load_object(spec, flag)
    if not callable(obj):
        raise usage.UsageError(
            "{} {}: {!r} is not callable (it is a {})".format(
                flag, spec, spec.partition(":")[2].strip(), type(obj).__name__
            )
        )
    return cast(Callable[..., Any], obj)


def _check_endpoint(description: str) -> Any:
    """
    Check an endpoint description without listening on it.

    The description is parsed against a C{MemoryReactor}, which records
    but never binds, so that a typo is a usage error at start-up.

    @return: the endpoint (on the C{MemoryReactor}).
    @raise usage.UsageError: when twisted cannot parse C{description}.
    """
    from twisted.internet.testing import MemoryReactor

    try:
        return serverFromString(MemoryReactor(), description)
    except (IndexError, KeyError) as e:
        if _workers.endpoint_type(description) == "systemd":
            raise usage.UsageError(
                "--listen {}: no such socket was passed by systemd (LISTEN_FDS,"
                " LISTEN_PID and LISTEN_FDNAMES; is the service started with its"
                " .socket unit?)".format(description))
        raise usage.UsageError("--listen {}: {}".format(description, e))
    except Exception as e:
        raise usage.UsageError("--listen {}: {}".format(description, e))


def _is_unix(endpoint: Any) -> bool:
    """Does C{endpoint} (from L{_check_endpoint}) listen on a UNIX socket?"""
    return (isinstance(endpoint, UNIXServerEndpoint)
            or getattr(endpoint, "addressFamily", None) == socket.AF_UNIX)


def _positive(text: str, flag: str, kind: Callable[[str], Any]) -> Any:
    """
    Parse the value of C{--workers} or C{--shutdown-timeout}.

    @raise usage.UsageError: when it is not a positive C{kind}.
    """
    try:
        value = kind(text)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0 < value < math.inf:
        raise usage.UsageError("--{} {}: expected a positive {}".format(
            flag, text, "integer" if kind is int else "number"))
    return value


def _log_level(text: str) -> LogLevel:
    """
    Parse the value of C{--log-level}.

    @raise usage.UsageError: for a name that is not a log level.
    """
    try:
        level: LogLevel = LogLevel.levelWithName(str(text).strip().lower())
    except InvalidLogLevelError:
        raise usage.UsageError(
            "--log-level {}: expected debug, info, warn, error or critical".format(text))
    return level


def _startup_timeout(text: Optional[str]) -> Optional[float]:
    """
    Parse the value of C{--startup-timeout}.

    @return: seconds, or C{None} for C{0} (wait forever).
    @raise usage.UsageError: when it is not a number of seconds, 0 or more.
    """
    if text is None:
        return DEFAULT_STARTUP_TIMEOUT
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value < math.inf:
        raise usage.UsageError(
            "--startup-timeout {}: expected a number of seconds, 0 or more (0: wait"
            " forever)".format(text))
    return value or None


class Options(usage.Options):
    """
    The command-line options of C{twistd scserver}.

    After parsing: C{self["listen"]} is the list of endpoint descriptions,
    C{self["app"]} the C{--app} spec or C{None}, C{self["setup"]} the
    callable it names or C{None}, and C{self["server_options"]} a dict of
    the server options that were given (parsed values; C{codec_engine} is
    a codec engine instance, C{broker} the checked C{--broker} value, made
    into a broker by L{build_service}).  Options that were
    not given are left to the server's defaults.  C{self["workers"]} is the
    number of worker processes (an C{int}, 1 without C{--workers}),
    C{self["shutdown-timeout"]} a C{float} and C{self["startup_timeout"]}
    the C{--startup-timeout} in seconds (a C{float}, or C{None} for 0:
    wait forever).  Without C{--auth-key}, C{--auth-private-key} and
    C{--auth-public-key}, C{--auth-key} is C{env:SCSERVER_AUTH_KEY} when
    that variable (L{AUTH_KEY_ENV}) is set and not empty.

    In a worker process started by L{scserver._workers.WorkerPool},
    C{self["inherited"]} is the list of C{(fd, address family)} read (and
    removed) from the environment variable
    L{scserver._workers.WORKER_FDS_ENV}, one per C{--listen}; elsewhere it
    is C{None}.
    """

    synopsis = "[--listen ENDPOINT]... [--app pkg.module:setup] [server options]"

    longdesc = (
        "Run a SocketCluster server. --listen takes a Twisted endpoint "
        "description (tcp:8000, tcp:8000:interface=127.0.0.1, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/path, "
        "systemd:domain=INET:index=0) and may be "
        "repeated [default: tcp:8000]. --app pkg.module:setup is called with the "
        "server before it listens. Every server option is a flag taking a "
        "value; boolean options take true or false. Durations are seconds."
    )

    optParameters = [
        ["app", None, None,
         "pkg.module:setup, a callable called with the server before it listens"],
        ["workers", None, "1",
         "number of processes accepting on the --listen sockets; above 1 this process"
         " supervises them, and --broker (not memory) and --auth-key (or a key pair)"
         " are required"],
        ["shutdown-timeout", None, str(DEFAULT_SHUTDOWN_TIMEOUT),
         "seconds the connections get to close (1001) when stopping on SIGTERM or"
         " SIGINT, before the process exits without them; with --workers: seconds the"
         " workers get to close their connections, before they are killed"],
        ["startup-timeout", None, None,
         "seconds the broker gets to become ready; past them the process exits with"
         " status 1 (0: wait forever) [default: {:g}]".format(DEFAULT_STARTUP_TIMEOUT)],
        ["log-level", None, DEFAULT_LOG_LEVEL,
         "scserver's log events below this level are dropped before they are written:"
         " debug (every connect and disconnect), info, warn, error or critical"],
    ] + [[option.flag, None, None, _help(option)] for option in OPTIONS]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["setup"] = None
        self["server_options"] = {}
        self["inherited"] = None

    def opt_listen(self, description: str) -> None:
        """
        A server endpoint to listen on (repeatable) [default: tcp:8000]
        """
        self["listen"].append(description)

    def parseOptions(self, options: Optional[list[str]] = None) -> None:
        """
        Parse the command line (C{usage.Options.parseOptions}).  Under
        twistd (these options being its C{scserver} subcommand, with a
        C{parent}), a usage error also makes the process exit with status
        1 once twistd has printed it.  Twisted 25.5 and older (the last
        releases for Python 3.9, so what PyPy 3.9 gets) print a usage
        error and exit with status 0; newer ones exit with status 1
        themselves.

        @param options: the arguments (C{sys.argv[1:]} when C{None}).
        @raise usage.UsageError: for any bad option.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError:
            if getattr(self, "parent", None) is not None:
                _exit_at_end(USAGE_ERROR_STATUS)
            raise

    def postOptions(self) -> None:
        """
        Apply the C{--listen} default, parse and check every server option,
        and import the C{--app} callable and the codec.

        @raise usage.UsageError: for any bad value, with a message naming
            the flag.
        """
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        self["workers"] = _positive(self["workers"], "workers", int)
        self["shutdown-timeout"] = _positive(self["shutdown-timeout"], "shutdown-timeout", float)
        self["startup_timeout"] = _startup_timeout(self["startup-timeout"])
        self["log_level"] = _log_level(self["log-level"])
        if (self["auth-key"] is None and self["auth-private-key"] is None
                and self["auth-public-key"] is None and os.environ.get(AUTH_KEY_ENV)):
            self["auth-key"] = "env:" + AUTH_KEY_ENV
        inherited = os.environ.pop(_workers.WORKER_FDS_ENV, None)
        if inherited is not None:
            self._inherit(inherited)
        else:
            for description in self["listen"]:
                endpoint = _check_endpoint(description)
                if self["workers"] > 1 and _is_unix(endpoint):
                    raise usage.UsageError(
                        "--workers {}: --listen {}: UNIX sockets cannot be shared by"
                        " workers (a stopping worker would remove the socket file); listen"
                        " on tcp:PORT:interface=127.0.0.1 instead".format(
                            self["workers"], description))

        values = {}
        for option in OPTIONS:
            text = self[option.flag]
            if text is None:
                continue
            try:
                values[option.name] = option.parse(text)
            except (ValueError, TypeError) as e:
                raise usage.UsageError("--{} {}: {}".format(option.flag, text, e))
            except OSError as e:
                raise usage.UsageError(
                    "--{} {}: cannot read {}: {}".format(
                        option.flag, text, e.filename, e.strerror
                    )
                )
        try:
            validate_options(values)
        except InvalidOptionsError as e:
            raise usage.UsageError("bad server option: {}".format(e))

        # One resolver per option (scserver.options), shared with SCServer:
        # the codec is made now; the broker is checked now and made by
        # build_service, once the reactor is known.
        codec = values.pop("codec_engine", None)
        broker = values.pop("broker", None)
        if codec is not None or broker is not None:
            _add_cwd_to_path()
        try:
            if codec is not None:
                values["codec_engine"] = resolve_codec_engine(codec, "--codec-engine")
            if broker is not None:
                check_broker(broker, "--broker")
                values["broker"] = broker.strip()
        except InvalidOptionsError as e:
            raise usage.UsageError(str(e)) from e
        self["server_options"] = values
        if self["workers"] > 1:
            self._check_shared(values)

        if self["app"] is not None:
            self["setup"] = _load_callable(self["app"], "--app")

    def _inherit(self, text: str) -> None:
        """
        In a worker: read the inherited sockets, one per C{--listen}.  The
        endpoints are not checked here: the parent did, and a C{systemd:}
        one cannot be parsed again in the worker.
        """
        try:
            inherited = _workers.parse_inherited(text)
        except ValueError as e:
            raise usage.UsageError("{}={}: {}".format(_workers.WORKER_FDS_ENV, text, e))
        if len(inherited) != len(self["listen"]):
            raise usage.UsageError(
                "{}={}: {} socket(s) for {} --listen endpoint(s)".format(
                    _workers.WORKER_FDS_ENV, text, len(inherited), len(self["listen"])))
        if self["workers"] != 1:
            raise usage.UsageError("--workers: a worker process cannot have workers")
        self["inherited"] = inherited

    def _check_shared(self, values: dict[str, Any]) -> None:
        """
        With several workers, the broker and the token keys must be shared
        by the processes.

        @param values: the parsed server options.
        @raise usage.UsageError: with the default in-process broker, or
            without C{--auth-key} or a key pair.
        """
        workers = self["workers"]
        broker = values.get("broker")
        if broker is None or broker.lower() == "memory":
            raise usage.UsageError(
                "--workers {} needs a --broker that connects the processes (a Redis URL or"
                " pkg.module:factory): with the in-process memory broker a publication would"
                " reach the subscribers of one worker only".format(workers))
        if values.get("auth_key") is None and values.get("auth_private_key") is None:
            raise usage.UsageError(
                "--workers {} needs --auth-key (or --auth-private-key and"
                " --auth-public-key): a token signed by one worker must verify in"
                " all".format(workers))


class StartupError(Exception):
    """
    The server cannot start (an endpoint cannot be listened on, the
    workers' sockets cannot be bound): raised while twistd starts the
    service, before the reactor runs, so that twistd exits with status 1.
    The reason has been logged as one line already; under twistd, the
    traceback of this exception is not printed.
    """


_quiet_startup_errors = False


def _quiet_excepthook() -> None:
    """
    Install (once) a C{sys.excepthook} that prints nothing for a
    L{StartupError}, whose one-line reason is in the log already; the
    interpreter still exits with status 1.
    """
    global _quiet_startup_errors
    if _quiet_startup_errors:
        return
    _quiet_startup_errors = True
    previous = sys.excepthook

    def hook(kind: Any, value: Any, tb: Any) -> None:
        if isinstance(value, StartupError):
            return
        previous(kind, value, tb)

    sys.excepthook = hook


def _exit_now(status: int) -> None:
    """
    Flush the standard streams and end the process with C{status} (at
    interpreter exit a C{SystemExit} is ignored, hence C{os._exit}).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


def _exit_at_end(status: int) -> None:
    """
    Make the process exit with C{status} once twistd is done: twistd runs
    the reactor, removes its pid file, stops logging and returns (for an
    exit status of 0); this runs at interpreter exit, after all that.
    Twisted has no other way for a service to set twistd's exit status.
    """
    atexit.register(_exit_now, status)


class _Startup:
    """
    How a failure to start ends the twistd process.

    Before the reactor runs (twistd is starting the services), L{fail}
    raises L{StartupError}, which twistd lets through (its pid file
    removed, the status pipe of a daemon told): exit status 1.  Once the
    reactor runs, L{fail} stops it and asks C{exit} to end the process
    with status 1 afterwards.

    @ivar reactor: the reactor.
    @ivar exit: called with the exit status once the reactor is stopped
        because of a failure (L{_exit_at_end} under twistd); C{None} in
        tests, where the process goes on.
    @ivar failed: whether a start-up failure happened.
    """

    def __init__(self, reactor: Any, exit: Optional[Callable[[int], None]] = None) -> None:
        self.reactor = reactor
        self.exit = exit
        self.failed = False

    def fail(self, message: str) -> None:
        """
        Log C{message} as one line (critical) and end the process with
        status 1; only the first failure is logged.

        @raise StartupError: when the reactor is not running yet.
        """
        first = not self.failed
        if first:
            _log.critical("{message}", message=message)
        if not getattr(self.reactor, "running", False):
            self.failed = True
            raise StartupError(message)
        if first:
            self.stop()

    def stop(self) -> None:
        """
        Stop the reactor (at once, or as soon as it runs) and end the
        process with status 1 afterwards.
        """
        first = not self.failed
        self.failed = True
        if not first:
            return
        if self.exit is not None:
            self.exit(STARTUP_FAILURE_STATUS)
        if getattr(self.reactor, "running", False):
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)


class _Listener(StreamServerEndpointService):
    """
    Listens on one C{--listen} endpoint; when it cannot, the process ends
    with status 1 and one log line (L{_Startup.fail}), instead of
    Twisted's logged traceback and a process that goes on without the
    port.

    @ivar description: the C{--listen} endpoint description.
    @ivar startup: the L{_Startup}.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory,
                 description: str, startup: _Startup) -> None:
        StreamServerEndpointService.__init__(self, endpoint, factory)
        self.description = description
        self.startup = startup

    def privilegedStartService(self) -> None:
        """
        Start listening (before twistd sheds privileges).

        @raise StartupError: when the endpoint fails at once (the port is
            taken, say) before the reactor runs.
        """
        Service.privilegedStartService(self)
        now: list[str] = []
        synchronous = True

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError):
                return None
            message = "Cannot listen on --listen {}: {}; exiting".format(
                self.description, failure.getErrorMessage().rstrip("."))
            if synchronous:
                now.append(message)
            else:
                self.startup.fail(message)
            return None

        self._waitingForPort = self.endpoint.listen(self.factory)
        self._waitingForPort.addErrback(failed)
        synchronous = False
        if now:
            self.startup.fail(now[0])


class _BrokerDeadline(Service):
    """
    Ends the process (status 1, one log line) when the server is not
    ready (its broker not started) C{timeout} seconds after the reactor
    started.

    @ivar reactor: the reactor.
    @ivar server: the L{scserver.server.SCServer} (its C{is_ready}).
    @ivar timeout: seconds.
    @ivar startup: the L{_Startup}.
    """

    name = "startup-timeout"

    def __init__(self, reactor: Any, server: Any, timeout: float, startup: _Startup) -> None:
        self.reactor = reactor
        self.server = server
        self.timeout = timeout
        self.startup = startup
        self._call: Any = None

    def startService(self) -> None:
        Service.startService(self)
        self.reactor.callWhenRunning(self._arm)

    def _arm(self) -> None:
        if self.running and self._call is None:
            self._call = self.reactor.callLater(self.timeout, self._expired)

    def _expired(self) -> None:
        self._call = None
        if self.running and not self.server.is_ready:
            self.startup.fail(
                "The broker did not become ready within {:g} s (--startup-timeout);"
                " exiting".format(self.timeout))

    def stopService(self) -> None:
        Service.stopService(self)
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None


class GracefulService(MultiService):
    """
    The service of a single C{twistd scserver} process: a C{MultiService}
    (the server and its listeners) whose stop is bounded, and, with
    C{handle_signals}, stopped by SIGTERM and SIGINT in an orderly way.

    Stopping stops the listeners (no new connection is accepted) and the
    server (every socket is closed with 1001, then the broker stops).  If
    that has not finished C{shutdown_timeout} seconds later, a warning is
    logged and the stop completes without it: the reactor stops and the
    connections still open end with the process.

    The signal handlers are installed once the reactor runs, over the
    reactor's own (as L{scserver._workers.WorkerPool} does): they log
    C{"Received SIGTERM, shutting down."} and stop the reactor without
    recording the signal, so twistd exits with status 0 instead of
    raising the signal again once stopped.  A second signal while stopping
    is ignored.

    @ivar reactor: the reactor.
    @ivar shutdown_timeout: seconds (C{--shutdown-timeout}).
    @ivar handle_signals: whether SIGTERM and SIGINT are handled.
    """

    def __init__(self, reactor: Any, shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
                 handle_signals: bool = False) -> None:
        MultiService.__init__(self)
        self.reactor = reactor
        self.shutdown_timeout = shutdown_timeout
        self.handle_signals = handle_signals

    def startService(self) -> None:
        MultiService.startService(self)
        if self.handle_signals:
            self.reactor.callWhenRunning(self._install_signal_handlers)

    def _install_signal_handlers(self) -> None:
        for name in ("SIGTERM", "SIGINT"):
            number = getattr(signal, name, None)
            if number is not None:
                signal.signal(number, self._stop_signal)

    def _stop_signal(self, number: int, frame: object) -> None:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        _log.info("Received {name}, shutting down.", name=name)
        self.reactor.callFromThread(self._stop_reactor)

    def _stop_reactor(self) -> None:
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping

    def stopService(self) -> Deferred[None]:
        """
        Stop the listeners and the server, waiting at most
        C{shutdown_timeout} seconds.

        @return: a C{Deferred} firing with C{None} when they have stopped
            or the time is up.
        """
        stopped = MultiService.stopService(self)
        result: Deferred[None] = Deferred()
        timeout = self.shutdown_timeout
        timers: list[Any] = []

        def done(outcome: object) -> None:
            for timer in timers:
                if timer.active():
                    timer.cancel()
            if isinstance(outcome, Failure):
                _log.failure("Error while stopping", outcome)
            if not result.called:
                result.callback(None)

        def expire() -> None:
            if not result.called:
                _log.warn("The server did not close within {timeout:g} s"
                          " (--shutdown-timeout); exiting without waiting for the"
                          " connections still open", timeout=timeout)
                result.callback(None)

        stopped.addBoth(done)
        call_later = getattr(self.reactor, "callLater", None)
        if not result.called and call_later is not None:
            timers.append(call_later(timeout, expire))
        return result


class _StartupGuard(MultiService):
    """
    The parent's service with C{--workers}: an exception while it starts
    (the sockets cannot be bound) becomes one log line and exit status 1
    (L{_Startup.fail}) instead of a traceback.

    @ivar startup: the L{_Startup}.
    """

    def __init__(self, startup: _Startup) -> None:
        MultiService.__init__(self)
        self.startup = startup

    def privilegedStartService(self) -> None:
        self._starting(MultiService.privilegedStartService)

    def startService(self) -> None:
        self._starting(MultiService.startService)

    def _starting(self, start: Callable[[MultiService], None]) -> None:
        try:
            start(self)
        except StartupError:
            raise
        except Exception as e:
            self.startup.fail(
                "Cannot start the workers: {}; exiting".format(str(e).rstrip(".")))


class _SetupGate:
    """
    Holds back listening until the C{--app} setup has finished.

    A failed setup is logged once and the reactor is stopped (a server
    that will never listen should not keep running); the endpoints waiting
    on it are then cancelled rather than failed, so the failure is not
    logged again by each of them.

    @ivar _done: whether the setup has finished.
    @ivar _failed: whether it failed.
    @ivar _waiting: the C{Deferred}s of L{wait} not fired yet.
    """

    def __init__(self, setupDeferred: Deferred[Any], reactor: Any,
                 startup: Optional[_Startup] = None) -> None:
        """
        @param setupDeferred: a C{Deferred} firing when the setup finished.
        @param reactor: the reactor to stop if the setup fails.
        @param startup: the L{_Startup} that stops it (with exit status 1).
        """
        self._reactor = reactor
        self._startup = startup if startup is not None else _Startup(reactor)
        self._done = False
        self._failed = False
        self._waiting: list[Deferred[None]] = []
        setupDeferred.addBoth(self._finished)

    def _finished(self, result: object) -> None:
        self._done = True
        if isinstance(result, Failure):
            self._failed = True
            _log.failure("The --app setup failed; stopping", result)
            self._startup.stop()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self._fire(d)
        return None

    def _fire(self, d: Deferred[None]) -> None:
        if self._failed:
            d.cancel()
        else:
            d.callback(None)

    def wait(self) -> Deferred[None]:
        """
        @return: a C{Deferred} firing with C{None} once the setup has
            succeeded, or cancelled if it failed.
        """
        d: Deferred[None] = Deferred()
        if self._done:
            self._fire(d)
        else:
            self._waiting.append(d)
        return d


@implementer(IStreamServerEndpoint)
class _ListenAfter:
    """
    An endpoint that starts listening only once the application's setup
    has finished.

    @ivar _gate: the L{_SetupGate}.
    @ivar _endpoint: the real C{IStreamServerEndpoint}.
    """

    def __init__(self, gate: _SetupGate, endpoint: IStreamServerEndpoint) -> None:
        self._gate = gate
        self._endpoint = endpoint

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen on the real endpoint once the setup has succeeded.

        @return: a C{Deferred} firing with the listening port; cancelled if
            the setup failed or the service stopped first.
        """
        return self._gate.wait().addCallback(lambda _: self._endpoint.listen(factory))


def _setup_gate(result: object, reactor: Any,
                startup: Optional[_Startup] = None) -> Optional[_SetupGate]:
    """
    Make a L{_SetupGate} when C{setup(server)} returned a C{Deferred} or a
    coroutine; return C{None} when it finished synchronously.
    """
    if inspect.iscoroutine(result):
        result = Deferred.fromCoroutine(result)
    if not isinstance(result, Deferred):
        return None
    return _SetupGate(result, reactor, startup)


def build_service(
    config: usage.Options, reactor: Any, server_factory: Callable[..., Any],
    startup: Optional[_Startup] = None, handle_signals: bool = False,
) -> MultiService:
    """
    Build the C{twistd scserver} service from parsed options.

    @param config: a parsed L{Options}.
    @param reactor: the reactor to run on.
    @param server_factory: called as C{server_factory(reactor=reactor,
        **server_options)} to make the server, normally
        L{scserver.server.SCServer}; it must return a service with a
        C{factory} attribute (the WebSocket factory to listen with).
    @return: a C{MultiService} holding the server, named C{"scserver"}, and
        one C{StreamServerEndpointService} per C{--listen} endpoint, which
        start listening when the service starts (after the C{--app} setup,
        if it returned a Deferred or a coroutine).  An endpoint that cannot
        listen, or a broker not ready within C{--startup-timeout}, ends the
        process with exit status 1 and one log line (C{startup}).
    @param startup: a L{_Startup} (one that does not exit the process by
        default; L{makeService} gives one that does).
    @param handle_signals: whether SIGTERM and SIGINT stop the process
        gracefully, with exit status 0 (L{GracefulService}); L{makeService}
        asks for it in a single process, not in a worker.
    """
    if startup is None:
        startup = _Startup(reactor)
    options = dict(config["server_options"])
    if "broker" in options:
        options["broker"] = resolve_broker(options["broker"], reactor, "--broker")
    server = server_factory(reactor=reactor, **options)
    service = GracefulService(
        reactor, config.get("shutdown-timeout", DEFAULT_SHUTDOWN_TIMEOUT), handle_signals)
    if getattr(server, "name", None) is None:
        server.setName("scserver")
    server.setServiceParent(service)

    gate = None
    if config["setup"] is not None:
        gate = _setup_gate(config["setup"](server), reactor, startup)

    inherited = config.get("inherited")
    for i, description in enumerate(config["listen"]):
        endpoint: IStreamServerEndpoint
        if inherited:
            fd, family = inherited[i]
            endpoint = _workers.InheritedEndpoint(reactor, description, fd, family)
        else:
            endpoint = serverFromString(reactor, with_default_backlog(description))
        if gate is not None:
            endpoint = _ListenAfter(gate, endpoint)
        listener = _Listener(endpoint, server.factory, description, startup)
        listener.setServiceParent(service)
    timeout = config.get("startup_timeout", DEFAULT_STARTUP_TIMEOUT)
    if timeout is not None and hasattr(server, "is_ready"):
        _BrokerDeadline(reactor, server, timeout, startup).setServiceParent(service)
    if inherited:
        _workers.ParentWatch(reactor).setServiceParent(service)
    return service


def worker_arguments(config: usage.Options) -> list[str]:
    """
    The C{twistd scserver} arguments of a worker: every C{--listen}, the
    C{--app}, C{--startup-timeout} if given, C{--log-level}, and every server option that
    was given, as given, except a token key given as C{@path} or
    C{env:NAME} (or read from L{AUTH_KEY_ENV}): that one is passed as
    C{env:SCSERVER_...}, the value being in L{worker_environment}, so that
    no key shows on a worker's command line (and a key file need not be
    readable by the workers).  Not C{--workers} nor C{--shutdown-timeout}.

    @param config: a parsed L{Options}.
    @return: a C{list} of C{str}.
    """
    arguments: list[str] = []
    for description in config["listen"]:
        arguments += ["--listen", description]
    if config["app"] is not None:
        arguments += ["--app", config["app"]]
    if config.get("startup-timeout") is not None:
        arguments += ["--startup-timeout", config["startup-timeout"]]
    if config.get("log-level") is not None:
        arguments += ["--log-level", config["log-level"]]
    indirect = worker_environment(config)
    for option in OPTIONS:
        if config[option.flag] is not None:
            name = _SECRET_ENV.get(option.name)
            if name is not None and name in indirect:
                arguments += ["--" + option.flag, "env:" + name]
            else:
                arguments += ["--" + option.flag, config[option.flag]]
    return arguments


def worker_environment(config: usage.Options) -> dict[str, str]:
    """
    The environment variables a worker gets besides the parent's: the
    token keys that were given as C{@path} or C{env:NAME} (or read from
    L{AUTH_KEY_ENV}), read by the parent, under
    C{SCSERVER_AUTH_KEY}, C{SCSERVER_AUTH_PRIVATE_KEY} and
    C{SCSERVER_AUTH_PUBLIC_KEY} (see L{worker_arguments}).

    @param config: a parsed L{Options}.
    @return: a C{dict}.
    """
    environment: dict[str, str] = {}
    for name, variable in _SECRET_ENV.items():
        text = config[name.replace("_", "-")]
        value = config["server_options"].get(name)
        if (isinstance(text, str) and text.startswith(("@", "env:"))
                and isinstance(value, str)):
            environment[variable] = value
    return environment


def _warn_short_key(config: usage.Options) -> bool:
    """
    Log a warning when C{--auth-key} is shorter than
    L{MIN_AUTH_KEY_BYTES}: SocketCluster accepts any key (its examples use
    C{"testkey"}), so a short key is not refused, but anyone holding one
    token can find such a key by brute force and sign tokens of their own.

    @return: whether it warned.
    """
    key = config["server_options"].get("auth_key")
    if not isinstance(key, (str, bytes)):
        return False
    size = len(key.encode("utf-8") if isinstance(key, str) else key)
    if size >= MIN_AUTH_KEY_BYTES:
        return False
    _log.warn(
        "INSECURE: --auth-key is {size} bytes long, shorter than {minimum}: anyone"
        " holding one token can guess such a key by brute force and forge tokens; use a"
        " random key of {minimum} bytes or more (openssl rand -hex 32), from a file"
        " (--auth-key @path) or the environment (--auth-key env:NAME, {env})",
        size=size, minimum=MIN_AUTH_KEY_BYTES, env=AUTH_KEY_ENV)
    return True


def build_pool(config: usage.Options, reactor: Any,
               executable: Optional[str] = None,
               startup: Optional[_Startup] = None) -> MultiService:
    """
    Build the service of the parent process of C{--workers N}.

    @param config: a parsed L{Options} with C{workers} above 1.
    @param reactor: the reactor to run on.
    @param executable: the Python interpreter of the workers
        (C{sys.executable} by default).
    @return: a C{MultiService} holding the
        L{scserver._workers.WorkerPool}, named C{"workers"}: it binds every
        C{--listen} endpoint when twistd starts it, then runs the workers
        (with the parent's reactor type), each with L{worker_arguments}
        and L{worker_environment}.  When the sockets cannot be bound, the
        process ends with exit status 1 and one log line (C{startup}).
    @param startup: a L{_Startup} (see L{build_service}).
    """
    name = _workers.reactor_name(reactor)
    pool = _workers.WorkerPool(
        reactor, config["listen"], worker_arguments(config), config["workers"],
        shutdown_timeout=config["shutdown-timeout"],
        twistd_arguments=["--reactor", name] if name is not None else [],
        executable=executable if executable is not None else sys.executable,
        handle_signals=True, environment=worker_environment(config))
    service = _StartupGuard(startup if startup is not None else _Startup(reactor))
    pool.setServiceParent(service)
    return service


def makeService(config: usage.Options) -> MultiService:
    """
    The twistd entry point: build the service on the global reactor with
    L{scserver.server.SCServer}, or the parent of the workers with
    C{--workers} above 1.

    @param config: a parsed L{Options}.
    @return: see L{build_service} and L{build_pool}.
    """
    from twisted.internet import reactor

    _quiet_excepthook()
    set_log_level(config.get("log_level", LogLevel.levelWithName(DEFAULT_LOG_LEVEL)))
    startup = _Startup(reactor, _exit_at_end)
    if config.get("inherited") is None:
        _warn_short_key(config)
    if config["workers"] > 1:
        return build_pool(config, reactor, startup=startup)

    from .server import SCServer

    return build_service(config, reactor, SCServer, startup,
                         handle_signals=config.get("inherited") is None)
