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

Everything given on the command line is checked while the options are
parsed (L{Options.postOptions}), so a mistake is reported by twistd as a
usage error, without a traceback.  The reactor and the server module are
imported only by L{makeService}.
"""

import importlib
import inspect
import os
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import InvalidOptionsError
from .interfaces import IBroker
from .options import OPTIONS, validate_options

__all__ = [
    "DEFAULT_LISTEN",
    "Options",
    "makeService",
    "build_service",
    "load_object",
    "resolve_codec_engine",
]

DEFAULT_LISTEN = "tcp:8000"
"""The endpoint listened on when no C{--listen} is given."""

_CODEC_NAMES = {
    "json": "JSONCodec",
    "min-bin": "MinBinCodec",
}

_log = Logger()


def _help(option):
    """
    The C{--help} text of one server option.

    @param option: an L{scserver.options.Option}.
    @return: L{str}.
    """
    text = option.doc
    if isinstance(option.default, bool):
        text += " (true/false)"
    if option.default is not None:
        text += " [default: {}]".format(
            str(option.default).lower() if isinstance(option.default, bool) else option.default
        )
    return text


def load_object(spec, flag="--app"):
    """
    Import the object named by C{spec}, C{"pkg.module:name"}.

    The name after the colon may be dotted (C{"pkg.module:App.setup"}).  The
    current directory is appended to C{sys.path} first, so that a module
    beside the command line's working directory can be named, as with
    C{python -m}.

    @param spec: L{str}, C{"pkg.module:name"}.
    @param flag: the command-line flag C{spec} came from, for messages.
    @return: the object.
    @raise usage.UsageError: with a one-line explanation when C{spec} has no
        colon, the module cannot be imported or the name is missing.
    """
    moduleName, sep, attributes = spec.partition(":")
    moduleName = moduleName.strip()
    attributes = attributes.strip()
    if not sep or not moduleName or not attributes:
        raise usage.UsageError(
            "{} expects pkg.module:name, got {!r}".format(flag, spec)
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        obj = importlib.import_module(moduleName)
    except ImportError as e:
        missing = e.name
        if missing is not None and (
            moduleName == missing or moduleName.startswith(missing + ".")
        ):
            raise usage.UsageError(
                "{} {}: no module named {!r}".format(flag, spec, missing)
            )
        raise usage.UsageError(
            "{} {}: importing {!r} failed: {}".format(flag, spec, moduleName, e)
        )
    except Exception as e:
        raise usage.UsageError(
            "{} {}: importing {!r} raised {}: {}".format(
                flag, spec, moduleName, type(e).__name__, e
            )
        )
    path = moduleName
    for attribute in attributes.split("."):
        try:
            obj = getattr(obj, attribute)
        except AttributeError:
            raise usage.UsageError(
                "{} {}: {!r} has no attribute {!r}".format(flag, spec, path, attribute)
            )
        path = path + "." + attribute
    return obj


def _load_callable(spec, flag):
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
    return obj


def resolve_codec_engine(spec):
    """
    Turn the value of C{--codec-engine} into a codec engine instance.

    @param spec: C{"json"}, C{"min-bin"}, or C{"pkg.module:Name"} where
        C{Name} is a codec class (instantiated without arguments), a
        callable returning a codec, or a codec instance.
    @return: an object with C{encode} and C{decode} methods
        (L{scserver.interfaces.ICodecEngine}).
    @raise usage.UsageError: when C{spec} names no usable codec.
    """
    flag = "--codec-engine"
    name = spec.strip()
    if name.lower() in _CODEC_NAMES:
        className = _CODEC_NAMES[name.lower()]
        try:
            codecModule = importlib.import_module("scserver.codec")
            factory = getattr(codecModule, className)
        except (ImportError, AttributeError) as e:
            raise usage.UsageError(
                "{} {}: scserver.codec.{} is unavailable: {}".format(flag, spec, className, e)
            )
    elif ":" in name:
        factory = load_object(name, flag)
    else:
        raise usage.UsageError(
            "{} expects json, min-bin or pkg.module:Name, got {!r}".format(flag, spec)
        )
    if isinstance(factory, type) or not _is_codec(factory):
        if not callable(factory):
            raise usage.UsageError(
                "{} {}: not a codec engine (no encode/decode methods)".format(flag, spec)
            )
        try:
            codec = factory()
        except Exception as e:
            raise usage.UsageError(
                "{} {}: creating the codec raised {}: {}".format(flag, spec, type(e).__name__, e)
            )
    else:
        codec = factory
    if not _is_codec(codec):
        raise usage.UsageError(
            "{} {}: not a codec engine (no encode/decode methods)".format(flag, spec)
        )
    return codec


def _is_codec(obj):
    """
    Does C{obj} look like an L{scserver.interfaces.ICodecEngine} instance?
    """
    return callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None))


def _resolve_broker(spec):
    """
    Check the value of C{--broker}.

    @param spec: C{"memory"} (the in-process broker, the default) or a
        broker URL (anything with C{"://"}, such as
        C{redis://127.0.0.1:6379/0}), passed to the server as it is; or
        C{"pkg.module:name"} naming an L{IBroker} provider or a factory of
        one (see L{_make_broker}).
    @return: the URL string, or the imported object.
    @raise usage.UsageError: when C{spec} is neither.
    """
    spec = spec.strip()
    if "://" in spec or spec.lower() == "memory":
        return spec
    if ":" in spec:
        obj = load_object(spec, "--broker")
        if not IBroker.providedBy(obj) and not callable(obj):
            raise usage.UsageError(
                "--broker {}: neither an IBroker nor a factory of one".format(spec)
            )
        return obj
    raise usage.UsageError(
        "--broker expects memory, a URL (redis://host:port/db) or pkg.module:factory, got {!r}".format(spec)
    )


def _make_broker(broker, reactor):
    """
    Build the broker given to the server from the result of
    L{_resolve_broker}.

    A URL or an L{IBroker} provider is used as it is.  A factory is called,
    with C{reactor=reactor} when its signature accepts a C{reactor}
    argument, and without arguments otherwise.

    @param broker: L{str}, an L{IBroker} provider, or a callable.
    @param reactor: the reactor the server runs on.
    """
    if isinstance(broker, str) or IBroker.providedBy(broker):
        return broker
    try:
        parameters = inspect.signature(broker).parameters
    except (TypeError, ValueError):
        parameters = {}
    takesReactor = "reactor" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    if takesReactor:
        return broker(reactor=reactor)
    return broker()


def _check_endpoint(description):
    """
    Check an endpoint description without listening on it.

    The description is parsed against a L{MemoryReactor}, which records
    but never binds, so that a typo is a usage error at start-up.

    @raise usage.UsageError: when twisted cannot parse C{description}.
    """
    from twisted.internet.testing import MemoryReactor

    try:
        serverFromString(MemoryReactor(), description)
    except Exception as e:
        raise usage.UsageError("--listen {}: {}".format(description, e))


class Options(usage.Options):
    """
    The command-line options of C{twistd scserver}.

    After parsing: C{self["listen"]} is the list of endpoint descriptions,
    C{self["app"]} the C{--app} spec or L{None}, C{self["setup"]} the
    callable it names or L{None}, and C{self["server_options"]} a dict of
    the server options that were given (parsed values; C{codec_engine} is
    an instance, C{broker} a URL or an imported object).  Options that were
    not given are left to the server's defaults.
    """

    synopsis = "[--listen ENDPOINT]... [--app pkg.module:setup] [server options]"

    longdesc = (
        "Run a SocketCluster server. --listen takes a Twisted endpoint "
        "description (tcp:8000, tcp:8000:interface=127.0.0.1, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/path) and may be "
        "repeated [default: tcp:8000]. --app pkg.module:setup is called with the "
        "server before it listens. Every server option is a flag taking a "
        "value; boolean options take true or false. Durations are seconds."
    )

    optParameters = [
        ["app", None, None,
         "pkg.module:setup, a callable called with the server before it listens"],
    ] + [[option.flag, None, None, _help(option)] for option in OPTIONS]

    def __init__(self):
        usage.Options.__init__(self)
        self["listen"] = []
        self["setup"] = None
        self["server_options"] = {}

    def opt_listen(self, description):
        """
        A server endpoint to listen on (repeatable) [default: tcp:8000]
        """
        self["listen"].append(description)

    def postOptions(self):
        """
        Apply the C{--listen} default, parse and check every server option,
        and import the C{--app} callable and the codec.

        @raise usage.UsageError: for any bad value, with a message naming
            the flag.
        """
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        for description in self["listen"]:
            _check_endpoint(description)

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

        if values.get("codec_engine") is not None:
            values["codec_engine"] = resolve_codec_engine(values["codec_engine"])
        else:
            values.pop("codec_engine", None)
        if values.get("broker") is not None:
            values["broker"] = _resolve_broker(values["broker"])
        else:
            values.pop("broker", None)
        self["server_options"] = values

        if self["app"] is not None:
            self["setup"] = _load_callable(self["app"], "--app")


class _SetupGate:
    """
    Holds back listening until the C{--app} setup has finished.

    A failed setup is logged once and the reactor is stopped (a server
    that will never listen should not keep running); the endpoints waiting
    on it are then cancelled rather than failed, so the failure is not
    logged again by each of them.

    @ivar _done: whether the setup has finished.
    @ivar _failed: whether it failed.
    @ivar _waiting: the L{Deferred}s of L{wait} not fired yet.
    """

    def __init__(self, setupDeferred, reactor):
        """
        @param setupDeferred: a L{Deferred} firing when the setup finished.
        @param reactor: the reactor to stop if the setup fails.
        """
        self._reactor = reactor
        self._done = False
        self._failed = False
        self._waiting = []
        setupDeferred.addBoth(self._finished)

    def _finished(self, result):
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

    def _fire(self, d):
        if self._failed:
            d.cancel()
        else:
            d.callback(None)

    def wait(self):
        """
        @return: a L{Deferred} firing with L{None} once the setup has
            succeeded, or cancelled if it failed.
        """
        d = Deferred()
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
    @ivar _endpoint: the real L{IStreamServerEndpoint}.
    """

    def __init__(self, gate, endpoint):
        self._gate = gate
        self._endpoint = endpoint

    def listen(self, factory):
        """
        Listen on the real endpoint once the setup has succeeded.

        @return: a L{Deferred} firing with the listening port; cancelled if
            the setup failed or the service stopped first.
        """
        d = self._gate.wait()
        d.addCallback(lambda _: self._endpoint.listen(factory))
        return d


def _setup_gate(result, reactor):
    """
    Make a L{_SetupGate} when C{setup(server)} returned a L{Deferred} or a
    coroutine; return L{None} when it finished synchronously.
    """
    if inspect.iscoroutine(result):
        result = Deferred.fromCoroutine(result)
    if not isinstance(result, Deferred):
        return None
    return _SetupGate(result, reactor)


def build_service(config, reactor, server_factory):
    """
    Build the C{twistd scserver} service from parsed options.

    @param config: a parsed L{Options}.
    @param reactor: the reactor to run on.
    @param server_factory: called as C{server_factory(reactor=reactor,
        **server_options)} to make the server, normally
        L{scserver.server.SCServer}; it must return a service with a
        C{factory} attribute (the WebSocket factory to listen with).
    @return: a L{MultiService} holding the server, named C{"scserver"}, and
        one L{StreamServerEndpointService} per C{--listen} endpoint, which
        start listening when the service starts (after the C{--app} setup,
        if it returned a Deferred or a coroutine).
    """
    options = dict(config["server_options"])
    if "broker" in options:
        options["broker"] = _make_broker(options["broker"], reactor)
    server = server_factory(reactor=reactor, **options)
    service = MultiService()
    if getattr(server, "name", None) is None:
        server.setName("scserver")
    server.setServiceParent(service)

    gate = None
    if config["setup"] is not None:
        gate = _setup_gate(config["setup"](server), reactor)

    for description in config["listen"]:
        endpoint = serverFromString(reactor, description)
        if gate is not None:
            endpoint = _ListenAfter(gate, endpoint)
        listener = StreamServerEndpointService(endpoint, server.factory)
        listener.setServiceParent(service)
    return service


def makeService(config):
    """
    The twistd entry point: build the service on the global reactor with
    L{scserver.server.SCServer}.

    @param config: a parsed L{Options}.
    @return: see L{build_service}.
    """
    from twisted.internet import reactor

    from .server import SCServer

    return build_service(config, reactor, SCServer)
