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

Everything given on the command line is checked while the options are
parsed (L{Options.postOptions}), so a mistake is reported by twistd as a
usage error, without a traceback.  The reactor and the server module are
imported only by L{makeService}.
"""

import inspect
import math
import os
import socket
import sys
from typing import Any, Callable, Optional, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

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
    "load_object",
]

DEFAULT_LISTEN = "tcp:8000"
"""The endpoint listened on when no C{--listen} is given."""

DEFAULT_SHUTDOWN_TIMEOUT = 10.0
"""Seconds the workers get to stop, when C{--shutdown-timeout} is not given."""

_log = Logger()


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
    number of worker processes (an C{int}, 1 without C{--workers}) and
    C{self["shutdown-timeout"]} a C{float}.

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
         "with --workers: seconds the workers get to close their connections when"
         " stopping, before they are killed"],
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

    def __init__(self, setupDeferred: Deferred[Any], reactor: Any) -> None:
        """
        @param setupDeferred: a C{Deferred} firing when the setup finished.
        @param reactor: the reactor to stop if the setup fails.
        """
        self._reactor = reactor
        self._done = False
        self._failed = False
        self._waiting: list[Deferred[None]] = []
        setupDeferred.addBoth(self._finished)

    def _finished(self, result: object) -> None:
        self._done = True
        if isinstance(result, Failure):
            self._failed = True
            _log.failure("The --app setup failed; stopping", result)
            if self._reactor.running:
                self._reactor.stop()
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


def _setup_gate(result: object, reactor: Any) -> Optional[_SetupGate]:
    """
    Make a L{_SetupGate} when C{setup(server)} returned a C{Deferred} or a
    coroutine; return C{None} when it finished synchronously.
    """
    if inspect.iscoroutine(result):
        result = Deferred.fromCoroutine(result)
    if not isinstance(result, Deferred):
        return None
    return _SetupGate(result, reactor)


def build_service(
    config: usage.Options, reactor: Any, server_factory: Callable[..., Any]
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
        if it returned a Deferred or a coroutine).
    """
    options = dict(config["server_options"])
    if "broker" in options:
        options["broker"] = resolve_broker(options["broker"], reactor, "--broker")
    server = server_factory(reactor=reactor, **options)
    service = MultiService()
    if getattr(server, "name", None) is None:
        server.setName("scserver")
    server.setServiceParent(service)

    gate = None
    if config["setup"] is not None:
        gate = _setup_gate(config["setup"](server), reactor)

    inherited = config.get("inherited")
    for i, description in enumerate(config["listen"]):
        endpoint: IStreamServerEndpoint
        if inherited:
            fd, family = inherited[i]
            endpoint = _workers.InheritedEndpoint(reactor, description, fd, family)
        else:
            endpoint = serverFromString(reactor, description)
        if gate is not None:
            endpoint = _ListenAfter(gate, endpoint)
        listener = StreamServerEndpointService(endpoint, server.factory)
        listener.setServiceParent(service)
    if inherited:
        _workers.ParentWatch(reactor).setServiceParent(service)
    return service


def worker_arguments(config: usage.Options) -> list[str]:
    """
    The C{twistd scserver} arguments of a worker: every C{--listen}, the
    C{--app} and every server option that was given, as given (so a
    C{@file} key is read by each worker); not C{--workers} nor
    C{--shutdown-timeout}.

    @param config: a parsed L{Options}.
    @return: a C{list} of C{str}.
    """
    arguments: list[str] = []
    for description in config["listen"]:
        arguments += ["--listen", description]
    if config["app"] is not None:
        arguments += ["--app", config["app"]]
    for option in OPTIONS:
        if config[option.flag] is not None:
            arguments += ["--" + option.flag, config[option.flag]]
    return arguments


def build_pool(config: usage.Options, reactor: Any,
               executable: Optional[str] = None) -> MultiService:
    """
    Build the service of the parent process of C{--workers N}.

    @param config: a parsed L{Options} with C{workers} above 1.
    @param reactor: the reactor to run on.
    @param executable: the Python interpreter of the workers
        (C{sys.executable} by default).
    @return: a C{MultiService} holding the
        L{scserver._workers.WorkerPool}, named C{"workers"}: it binds every
        C{--listen} endpoint when twistd starts it, then runs the workers
        (with the parent's reactor type), each with L{worker_arguments}.
    """
    name = _workers.reactor_name(reactor)
    pool = _workers.WorkerPool(
        reactor, config["listen"], worker_arguments(config), config["workers"],
        shutdown_timeout=config["shutdown-timeout"],
        twistd_arguments=["--reactor", name] if name is not None else [],
        executable=executable if executable is not None else sys.executable,
        handle_signals=True)
    service = MultiService()
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

    if config["workers"] > 1:
        return build_pool(config, reactor)

    from .server import SCServer

    return build_service(config, reactor, SCServer)
