"""
Tests for L{scserver.tap}, the C{twistd scserver} command.
"""

import os
import socket
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from scserver import _workers, tap
from scserver._logging import log_level, set_log_level
from scserver.options import OPTIONS

from tests._helpers import running
# Named as tests.test_tap:NAME by the flags below.
from tests.test_options import (  # noqa: F401
    UPPER_CODEC,
    FakeBroker,
    NotACodec,
    UpperCodec,
    makeUpperCodec,
)

# Objects named by the --app, --codec-engine and --broker specs below.

NOT_CALLABLE = 42
"""Named by a bad C{--app}."""

SETUP_CALLS = []
"""Every server L{recordingSetup} was called with."""


def recordingSetup(server):
    """An C{--app} setup that records its server."""
    SETUP_CALLS.append(server)


class Namespace:
    """A class holding a setup, for a dotted C{--app} attribute."""

    @staticmethod
    def setup(server):
        SETUP_CALLS.append(("Namespace.setup", server))


BROKER = FakeBroker()
"""An IBroker provider, named as it is."""


def makeBrokerWithoutReactor():
    """A broker factory that takes no arguments."""
    return FakeBroker(reactor="none given")


class FakeServer(Service):
    """
    Stands in for L{scserver.server.SCServer} where L{tap.build_service} is
    tested on its own: a service with a C{factory}, recording its options.
    """

    def __init__(self, reactor=None, **options):
        self.reactor = reactor
        self.options = options
        self.factory = Factory()


def parse(*args):
    """Parse C{args} as C{twistd scserver} would."""
    config = tap.Options()
    config.parseOptions(list(args))
    return config


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options} parses every server option and checks it.
    """

    def assertUsageError(self, args, *fragments):
        """
        Parsing C{args} raises L{usage.UsageError} whose message contains
        every one of C{fragments}.
        """
        error = self.assertRaises(usage.UsageError, parse, *args)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return error

    def test_everyOptionHasAFlag(self):
        """
        Every option of L{OPTIONS} is a C{--flag} in the help text and is
        accepted with its default's string form.
        """
        helpText = str(tap.Options())
        for option in OPTIONS:
            self.assertIn("--" + option.flag, helpText)
            if option.default is None or option.name == "codec_engine":
                continue
            config = parse("--" + option.flag, str(option.default))
            self.assertIn(option.name, config["server_options"])

    def test_defaults(self):
        """
        Without arguments the server listens on tcp:8000 and no server
        option is passed, so the server's own defaults apply.
        """
        config = parse()
        self.assertEqual(config["listen"], ["tcp:8000"])
        self.assertEqual(config["server_options"], {})
        self.assertIsNone(config["app"])
        self.assertIsNone(config["setup"])

    def test_valuesParsed(self):
        """
        Values are converted by each option's parser.
        """
        config = parse(
            "--path", "/sc/",
            "--protocol-version", "2",
            "--ping-interval", "5",
            "--ack-timeout", "0.5",
            "--allow-client-publish", "false",
            "--per-message-deflate", "yes",
            "--origins", "example.com:*,localhost:8080",
            "--socket-channel-limit", "none",
            "--max-payload", "2048",
            "--auth-key", "s3cret",
            "--pub-sub-batch-duration", "0.1",
            "--broker", "memory",
        )
        self.assertEqual(config["server_options"], {
            "path": "/sc/",
            "protocol_version": 2,
            "ping_interval": 5.0,
            "ack_timeout": 0.5,
            "allow_client_publish": False,
            "per_message_deflate": True,
            "origins": ["example.com:*", "localhost:8080"],
            "socket_channel_limit": None,
            "max_payload": 2048,
            "auth_key": "s3cret",
            "pub_sub_batch_duration": 0.1,
            "broker": "memory",
        })

    def test_booleanForms(self):
        """
        Boolean options take true/false, yes/no, on/off and 1/0, also in the
        C{--flag=value} form.
        """
        for text, value in [("true", True), ("False", False), ("on", True),
                            ("no", False), ("1", True), ("0", False)]:
            config = parse("--allow-client-publish=" + text)
            self.assertIs(config["server_options"]["allow_client_publish"], value)

    def test_keyFromFile(self):
        """
        C{--auth-private-key @path} reads the key from a file.
        """
        private = FilePath(self.mktemp())
        private.setContent(b"PRIVATE")
        public = FilePath(self.mktemp())
        public.setContent(b"PUBLIC")
        config = parse("--auth-private-key", "@" + private.path,
                       "--auth-public-key", "@" + public.path,
                       "--auth-algorithm", "RS256")
        self.assertEqual(config["server_options"]["auth_private_key"], "PRIVATE")
        self.assertEqual(config["server_options"]["auth_public_key"], "PUBLIC")

    def test_missingKeyFile(self):
        """
        An unreadable C{@path} key is a usage error naming the flag.
        """
        self.assertUsageError(
            ["--auth-private-key", "@/nonexistent/key.pem",
             "--auth-public-key", "x"],
            "--auth-private-key", "/nonexistent/key.pem")

    def test_keysTogether(self):
        """
        A private key without a public key is a usage error.
        """
        self.assertUsageError(["--auth-private-key", "x"], "auth_public_key")

    def test_listenRepeatable(self):
        """
        C{--listen} may be given many times, in order.
        """
        config = parse("--listen", "tcp:8001", "--listen",
                       "tcp:8002:interface=127.0.0.1")
        self.assertEqual(config["listen"],
                         ["tcp:8001", "tcp:8002:interface=127.0.0.1"])

    def test_badListen(self):
        """
        An endpoint description twisted cannot parse is a usage error.
        """
        self.assertUsageError(["--listen", "tcp:notaport"], "--listen tcp:notaport")
        self.assertUsageError(["--listen", "nosuchtype:1"], "--listen nosuchtype:1")

    def test_badValues(self):
        """
        A value the option's parser rejects is a usage error naming the flag
        and the value.
        """
        self.assertUsageError(["--ping-interval", "often"], "--ping-interval often")
        self.assertUsageError(["--allow-client-publish", "maybe"],
                              "--allow-client-publish maybe")
        self.assertUsageError(["--protocol-version", "3"], "--protocol-version 3")
        self.assertUsageError(["--max-payload", "1.5"], "--max-payload 1.5")

    def test_invalidValues(self):
        """
        A value that parses but that the server would refuse is a usage
        error too.
        """
        self.assertUsageError(["--ping-interval", "-1"], "ping_interval must be positive")
        self.assertUsageError(["--max-payload", "0"], "max_payload must be positive")

    def test_unknownFlag(self):
        """
        An unknown flag is a usage error.
        """
        self.assertUsageError(["--no-such-option", "1"], "no-such-option")

    def test_parametersNeedAValue(self):
        """
        A server option given last without a value is a usage error.
        """
        self.assertUsageError(["--ping-interval"], "ping-interval")

    def test_usageErrorExitStatusUnderTwistd(self):
        """
        A usage error met as twistd's C{scserver} subcommand asks for exit
        status 1 at the end (twistd of Twisted 25.5 and older would exit
        with 0); parsed on their own, or without an error, the options ask
        for no exit status.
        """
        from twisted.scripts.twistd import ServerOptions

        statuses = []
        self.patch(tap, "_exit_at_end", statuses.append)
        self.assertRaises(usage.UsageError, parse, "--no-such-option", "1")
        self.assertEqual(statuses, [])
        ServerOptions().parseOptions(["scserver", "--listen", "tcp:0"])
        self.assertEqual(statuses, [])
        for args in (["--no-such-option", "1"], ["--workers", "0"]):
            self.assertRaises(usage.UsageError, ServerOptions().parseOptions,
                              ["scserver"] + args)
        self.assertEqual(statuses, [tap.USAGE_ERROR_STATUS] * 2)
        self.assertEqual(tap.USAGE_ERROR_STATUS, 1)


class CodecOptionTests(SynchronousTestCase):
    """
    C{--codec-engine} is resolved to a codec instance while parsing.
    """

    def test_json(self):
        """
        C{json} is L{scserver.codec.JSONCodec}.
        """
        from scserver.codec import JSONCodec

        codec = parse("--codec-engine", "json")["server_options"]["codec_engine"]
        self.assertIsInstance(codec, JSONCodec)

    def test_minBin(self):
        """
        C{min-bin} is L{scserver.codec.MinBinCodec}.
        """
        from scserver.codec import MinBinCodec

        codec = parse("--codec-engine", "min-bin")["server_options"]["codec_engine"]
        self.assertIsInstance(codec, MinBinCodec)

    def test_class(self):
        """
        C{pkg.module:Class} is instantiated.
        """
        codec = parse("--codec-engine", "tests.test_tap:UpperCodec")[
            "server_options"]["codec_engine"]
        self.assertIsInstance(codec, UpperCodec)

    def test_instance(self):
        """
        C{pkg.module:name} naming a codec instance is used as it is.
        """
        codec = parse("--codec-engine", "tests.test_tap:UPPER_CODEC")[
            "server_options"]["codec_engine"]
        self.assertIs(codec, UPPER_CODEC)

    def test_factory(self):
        """
        C{pkg.module:function} is called to make the codec.
        """
        codec = parse("--codec-engine", "tests.test_tap:makeUpperCodec")[
            "server_options"]["codec_engine"]
        self.assertIsInstance(codec, UpperCodec)

    def test_bad(self):
        """
        An unknown name, or an object that is no codec, is a usage error.
        """
        error = self.assertRaises(usage.UsageError, parse, "--codec-engine", "xml")
        self.assertIn("json, min-bin or pkg.module:Name", str(error))
        error = self.assertRaises(usage.UsageError, parse, "--codec-engine",
                                  "tests.test_tap:NotACodec")
        self.assertIn("not a codec engine", str(error))
        error = self.assertRaises(usage.UsageError, parse, "--codec-engine",
                                  "tests.test_tap:NOT_CALLABLE")
        self.assertIn("not a codec engine", str(error))


class BrokerOptionTests(SynchronousTestCase):
    """
    C{--broker} is a URL, or names a broker or a factory of one.
    """

    def test_url(self):
        """
        A Redis URL is checked while parsing and passed to the server as
        it is (the broker connects once the server starts); a malformed
        one is a usage error.
        """
        url = "redis://localhost:6379/0,redis://other:6380"
        self.assertEqual(parse("--broker", url)["server_options"]["broker"], url)
        error = self.assertRaises(usage.UsageError, parse, "--broker", "redis://localhost:x/0")
        self.assertIn("--broker redis://localhost:x/0: ", str(error))
        self.assertIn("bad port", str(error))
        error = self.assertRaises(usage.UsageError, parse, "--broker", "redis://a,,redis://b")
        self.assertIn("shard 2 of 3 is empty", str(error))

    def test_memory(self):
        """
        C{memory}, the in-process broker, is passed to the server as it is.
        """
        self.assertEqual(parse("--broker", "memory")["server_options"]["broker"], "memory")

    def test_bad(self):
        """
        Neither a URL nor an import spec: a usage error.
        """
        error = self.assertRaises(usage.UsageError, parse, "--broker", "redis")
        self.assertIn("--broker expects memory, a URL", str(error))
        error = self.assertRaises(usage.UsageError, parse, "--broker",
                                  "tests.test_tap:NOT_CALLABLE")
        self.assertIn("neither an IBroker nor a factory", str(error))

    def test_provider(self):
        """
        An L{IBroker} provider is given to the server as it is.
        """
        config = parse("--broker", "tests.test_tap:BROKER")
        reactor = MemoryReactor()
        service = tap.build_service(config, reactor, FakeServer)
        server = service.getServiceNamed("scserver")
        self.assertIs(server.options["broker"], BROKER)

    def test_factoryWithReactor(self):
        """
        A factory taking C{reactor} is called with the reactor.
        """
        config = parse("--broker", "tests.test_tap:FakeBroker")
        reactor = MemoryReactor()
        server = tap.build_service(config, reactor, FakeServer).getServiceNamed("scserver")
        self.assertIsInstance(server.options["broker"], FakeBroker)
        self.assertIs(server.options["broker"].reactor, reactor)

    def test_factoryWithoutArguments(self):
        """
        A factory taking no argument is called without one.
        """
        config = parse("--broker", "tests.test_tap:makeBrokerWithoutReactor")
        server = tap.build_service(config, MemoryReactor(), FakeServer).getServiceNamed(
            "scserver")
        self.assertEqual(server.options["broker"].reactor, "none given")


class AppOptionTests(SynchronousTestCase):
    """
    C{--app pkg.module:setup} names the application's setup callable; every
    way of naming it wrongly is a clear usage error.
    """

    def assertAppError(self, spec, *fragments):
        error = self.assertRaises(usage.UsageError, parse, "--app", spec)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return error

    def makeModule(self, name, source):
        """
        Write a module C{name} into a fresh directory on C{sys.path}, to be
        removed again after the test.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child(name + ".py").setContent(source.encode("utf-8"))
        sys.path.insert(0, directory.path)
        self.addCleanup(sys.path.remove, directory.path)
        self.addCleanup(sys.modules.pop, name, None)

    def test_resolved(self):
        """
        A good spec resolves to the callable.
        """
        self.assertIs(parse("--app", "tests.test_tap:recordingSetup")["setup"],
                      recordingSetup)

    def test_dottedAttribute(self):
        """
        The attribute may be dotted.
        """
        self.assertEqual(parse("--app", "tests.test_tap:Namespace.setup")["setup"],
                         Namespace.setup)

    def test_noColon(self):
        """
        A spec without a colon.
        """
        self.assertAppError("tests.test_tap.recordingSetup",
                            "--app expects pkg.module:name",
                            "'tests.test_tap.recordingSetup'")

    def test_emptyParts(self):
        """
        A spec with an empty module or attribute.
        """
        self.assertAppError(":setup", "--app expects pkg.module:name")
        self.assertAppError("tests.test_tap:", "--app expects pkg.module:name")

    def test_moduleNotFound(self):
        """
        A module that does not exist.
        """
        self.assertAppError("no_such_module_xyz.app:setup",
                            "no module named 'no_such_module_xyz'")

    def test_moduleImportsSomethingMissing(self):
        """
        A module that exists but fails to import one of its own imports is
        told apart from a missing module.
        """
        self.makeModule("scserver_tap_test_dep",
                        "import no_such_dependency_xyz\n")
        self.assertAppError("scserver_tap_test_dep:setup",
                            "importing 'scserver_tap_test_dep' failed",
                            "no_such_dependency_xyz")

    def test_moduleRaises(self):
        """
        A module whose import raises.
        """
        self.makeModule("scserver_tap_test_raises",
                        "raise RuntimeError('broken app')\n")
        self.assertAppError("scserver_tap_test_raises:setup",
                            "RuntimeError: broken app")

    def test_attributeMissing(self):
        """
        A module without the named attribute.
        """
        self.assertAppError("tests.test_tap:noSuchSetup",
                            "'tests.test_tap' has no attribute 'noSuchSetup'")

    def test_notCallable(self):
        """
        An attribute that is not callable.
        """
        self.assertAppError("tests.test_tap:NOT_CALLABLE",
                            "'NOT_CALLABLE' is not callable")

    def test_currentDirectory(self):
        """
        A module in the current directory can be named, as with
        C{python -m}.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("scserver_tap_test_cwd.py").setContent(
            b"def setup(server):\n    pass\n")
        self.addCleanup(os.chdir, os.getcwd())
        self.addCleanup(sys.modules.pop, "scserver_tap_test_cwd", None)
        self.patch(sys, "path", [p for p in sys.path if p not in ("", ".")])
        os.chdir(directory.path)
        config = parse("--app", "scserver_tap_test_cwd:setup")
        self.assertEqual(config["setup"].__module__, "scserver_tap_test_cwd")


class BuildServiceTests(SynchronousTestCase):
    """
    L{tap.build_service} makes the server, runs the app setup, and listens
    on every endpoint when started.  A L{FakeServer} is injected here; the
    real server is in L{MakeServiceTests}.
    """

    def setUp(self):
        self.reactor = MemoryReactor()
        del SETUP_CALLS[:]

    def build(self, *args):
        return tap.build_service(parse(*args), self.reactor, FakeServer)

    def test_structure(self):
        """
        The service is a L{MultiService} holding the server, named
        C{scserver}, and one L{StreamServerEndpointService} per endpoint,
        listening with the server's factory.
        """
        service = self.build("--listen", "tcp:8001", "--listen", "tcp:8002",
                             "--ping-interval", "3")
        self.assertIsInstance(service, MultiService)
        server = service.getServiceNamed("scserver")
        self.assertIsInstance(server, FakeServer)
        self.assertIs(server.reactor, self.reactor)
        self.assertEqual(server.options, {"ping_interval": 3.0})
        listeners = [s for s in service if isinstance(s, StreamServerEndpointService)]
        self.assertEqual(len(listeners), 2)
        for listener in listeners:
            self.assertIs(listener.factory, server.factory)

    def test_listensWhenStarted(self):
        """
        Nothing listens until the service starts; then every endpoint does,
        with the server's factory.
        """
        service = self.build("--listen", "tcp:8001",
                             "--listen", "tcp:8002:interface=127.0.0.1")
        self.assertEqual(self.reactor.tcpServers, [])
        service.startService()
        server = service.getServiceNamed("scserver")
        self.assertTrue(server.running)
        self.assertEqual(
            [(port, factory, interface)
             for port, factory, backlog, interface in self.reactor.tcpServers],
            [(8001, server.factory, ""), (8002, server.factory, "127.0.0.1")])
        service.stopService()
        self.assertFalse(server.running)

    def test_defaultListen(self):
        """
        Without C{--listen}, the server listens on port 8000.
        """
        service = self.build()
        service.startService()
        self.assertEqual([s[0] for s in self.reactor.tcpServers], [8000])

    def test_setupCalledWithServerBeforeListening(self):
        """
        The C{--app} setup is called with the server, before anything
        listens.
        """
        listening = []

        def setup(server):
            listening.append(list(self.reactor.tcpServers))
            SETUP_CALLS.append(server)

        config = parse()
        config["setup"] = setup
        service = tap.build_service(config, self.reactor, FakeServer)
        self.assertEqual(SETUP_CALLS, [service.getServiceNamed("scserver")])
        self.assertEqual(listening, [[]])

    def test_setupFromSpec(self):
        """
        The callable named by C{--app} is the one called.
        """
        service = self.build("--app", "tests.test_tap:recordingSetup")
        self.assertEqual(SETUP_CALLS, [service.getServiceNamed("scserver")])

    def test_asynchronousSetup(self):
        """
        When the setup returns a Deferred, listening begins once it fires.
        """
        ready = Deferred()
        config = parse("--listen", "tcp:8001", "--listen", "tcp:8002")
        config["setup"] = lambda server: ready
        service = tap.build_service(config, self.reactor, FakeServer)
        service.startService()
        self.assertEqual(self.reactor.tcpServers, [])
        ready.callback(None)
        self.assertEqual([s[0] for s in self.reactor.tcpServers], [8001, 8002])

    def test_coroutineSetup(self):
        """
        When the setup is a coroutine function, listening begins once the
        coroutine has finished.
        """
        ready = Deferred()
        calls = []

        async def setup(server):
            calls.append(server)
            await ready

        config = parse()
        config["setup"] = setup
        service = tap.build_service(config, self.reactor, FakeServer)
        self.assertEqual(calls, [service.getServiceNamed("scserver")])
        service.startService()
        self.assertEqual(self.reactor.tcpServers, [])
        ready.callback(None)
        self.assertEqual([s[0] for s in self.reactor.tcpServers], [8000])

    def test_setupFailure(self):
        """
        When the setup's Deferred fails, the failure is logged once, nothing
        listens and the reactor is stopped.
        """
        ready = Deferred()
        config = parse("--listen", "tcp:8001", "--listen", "tcp:8002")
        config["setup"] = lambda server: ready
        service = tap.build_service(config, self.reactor, FakeServer)
        running(self.reactor)
        service.startService()
        ready.errback(RuntimeError("no database"))
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        service.stopService()

    def test_stopBeforeSetupFinished(self):
        """
        Stopping the service while the setup is still running cancels the
        listening; the setup finishing later listens nowhere.
        """
        ready = Deferred()
        config = parse()
        config["setup"] = lambda server: ready
        service = tap.build_service(config, self.reactor, FakeServer)
        service.startService()
        stopped = service.stopService()
        self.successResultOf(stopped)
        ready.callback(None)
        self.assertEqual(self.reactor.tcpServers, [])


class MakeServiceTests(SynchronousTestCase):
    """
    The service with the real L{scserver.server.SCServer}.
    """

    def test_realServer(self):
        """
        L{tap.build_service} with L{SCServer}: the options reach the server
        and it listens with its WebSocket factory.
        """
        from scserver.server import SCServer

        reactor = MemoryReactor()
        config = parse("--listen", "tcp:8001", "--ping-interval", "3",
                       "--allow-client-publish", "false", "--auth-key", "k",
                       "--app", "tests.test_tap:recordingSetup")
        del SETUP_CALLS[:]
        service = tap.build_service(config, reactor, SCServer)
        server = service.getServiceNamed("scserver")
        self.assertIsInstance(server, SCServer)
        self.assertEqual(SETUP_CALLS, [server])
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([(s[0], s[1]) for s in reactor.tcpServers],
                         [(8001, server.factory)])

    def test_makeService(self):
        """
        L{tap.makeService} builds the same service on the global reactor
        (not started here).
        """
        from scserver.server import SCServer

        self.addCleanup(set_log_level, log_level())
        service = tap.makeService(parse("--listen", "tcp:0"))
        self.assertIsInstance(service.getServiceNamed("scserver"), SCServer)


class LogLevelTests(SynchronousTestCase):
    """
    C{--log-level}: scserver's events below it are dropped before any
    observer sees them (C{info} by default under twistd); embedded, none
    are dropped.
    """

    def setUp(self):
        self.addCleanup(set_log_level, log_level())
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def emitted(self):
        """Emit one debug and one warning event from an scserver logger."""
        from scserver._logging import observer

        del self.events[:]
        log = Logger(namespace="scserver.socket.SCServerSocket", observer=observer)
        log.debug("a debug event")
        log.warn("a warning")
        return [event["log_format"] for event in self.events
                if event.get("log_namespace", "").startswith("scserver.")]

    def test_embeddedKeepsAll(self):
        set_log_level(LogLevel.debug)
        self.assertEqual(self.emitted(), ["a debug event", "a warning"])

    def test_default(self):
        config = parse()
        self.assertEqual(config["log_level"], LogLevel.info)
        tap.makeService(config)
        self.assertEqual(log_level(), LogLevel.info)
        self.assertEqual(self.emitted(), ["a warning"])

    def test_flag(self):
        tap.makeService(parse("--log-level", "ERROR"))
        self.assertEqual(self.emitted(), [])
        tap.makeService(parse("--log-level", "debug"))
        self.assertEqual(self.emitted(), ["a debug event", "a warning"])
        self.assertRaises(usage.UsageError, parse, "--log-level", "loud")

    def test_workers(self):
        """The workers get the parent's --log-level."""
        config = parse("--workers", "2", "--log-level", "warn", *WorkersOptionTests.SHARED)
        arguments = tap.worker_arguments(config)
        index = arguments.index("--log-level")
        self.assertEqual(arguments[index + 1], "warn")

    def test_everyLoggerFiltered(self):
        """Every module of scserver logs through the filtered observer."""
        import pkgutil
        import importlib

        import scserver
        from scserver._logging import observer

        names = [info.name for info in pkgutil.walk_packages(scserver.__path__, "scserver.")]
        loggers = []
        for name in names:
            module = importlib.import_module(name)
            for value in list(vars(module).values()) + [
                    attribute for cls in vars(module).values() if isinstance(cls, type)
                    for attribute in vars(cls).values()]:
                if isinstance(value, Logger):
                    loggers.append((name, value))
        self.assertGreater(len(loggers), 10)
        for name, logger in loggers:
            self.assertIs(logger.observer, observer, name)


class PluginTests(SynchronousTestCase):
    """
    The C{twisted/plugins/scserver_plugin.py} drop-in.
    """

    def test_plugin(self):
        """
        twistd finds a service maker named C{scserver} whose options and
        C{makeService} are those of L{scserver.tap}.
        """
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("scserver", makers)
        maker = makers["scserver"]
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)


class DocumentationTests(SynchronousTestCase):
    """
    Every option is documented in the README's option table.
    """

    def test_readmeOptionTable(self):
        """
        README.md has a row for every option of L{OPTIONS}, with its flag.
        """
        readme = FilePath(__file__).parent().parent().child("README.md")
        if not readme.exists():
            raise SkipTest("README.md is not beside the tests (installed copy)")
        text = readme.getContent().decode("utf-8")
        for option in OPTIONS:
            self.assertIn("| `{}` | `--{}` |".format(option.name, option.flag), text)


class WorkersOptionTests(SynchronousTestCase):
    """
    C{--workers} and C{--shutdown-timeout}, and what a worker process reads
    from its environment (see L{scserver._workers}).
    """

    SHARED = ("--broker", "tests.test_tap:FakeBroker", "--auth-key", "k")

    def setUp(self):
        self.patch(os, "environ", dict(os.environ))
        os.environ.pop(_workers.WORKER_FDS_ENV, None)

    def assertUsageError(self, args, *fragments):
        error = self.assertRaises(usage.UsageError, parse, *args)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        self.assertNotIn("\n", str(error))
        return error

    def test_defaults(self):
        """
        One process (no workers), a 10 second shutdown timeout, nothing
        inherited.
        """
        config = parse()
        self.assertEqual(config["workers"], 1)
        self.assertEqual(config["shutdown-timeout"], 10.0)
        self.assertIsNone(config["inherited"])
        helpText = str(tap.Options())
        self.assertIn("--workers", helpText)
        self.assertIn("--shutdown-timeout", helpText)

    def test_values(self):
        """
        C{--workers} is a positive integer, C{--shutdown-timeout} a positive
        number.
        """
        config = parse("--workers", "3", "--shutdown-timeout", "2.5", *self.SHARED)
        self.assertEqual(config["workers"], 3)
        self.assertEqual(config["shutdown-timeout"], 2.5)
        self.assertEqual(parse("--workers=1")["workers"], 1)

    def test_badValues(self):
        """
        Anything else is a usage error naming the flag and the value.
        """
        for value in ("0", "-2", "two", "1.5"):
            self.assertUsageError(["--workers", value], "--workers " + value,
                                  "expected a positive integer")
        for value in ("0", "-1", "soon", "nan", "inf"):
            self.assertUsageError(["--shutdown-timeout", value], "--shutdown-timeout " + value,
                                  "expected a positive number")

    def test_inProcessBroker(self):
        """
        Several workers with the default in-process broker (not given, or
        C{memory}): a usage error.
        """
        for broker in ([], ["--broker", "memory"], ["--broker", " MEMORY "]):
            self.assertUsageError(
                ["--workers", "2", "--auth-key", "k"] + broker,
                "--workers 2 needs a --broker that connects the processes")

    def test_noAuthKey(self):
        """
        Several workers without a shared token key: a usage error; a key
        pair will do.
        """
        self.assertUsageError(
            ["--workers", "2", "--broker", "tests.test_tap:FakeBroker"],
            "--workers 2 needs --auth-key (or --auth-private-key and --auth-public-key)")
        self.assertUsageError(
            ["--workers", "2", "--broker", "tests.test_tap:FakeBroker", "--auth-key", "none"],
            "--workers 2 needs --auth-key")
        config = parse("--workers", "2", "--broker", "tests.test_tap:FakeBroker",
                       "--auth-private-key", "PRIVATE", "--auth-public-key", "PUBLIC",
                       "--auth-algorithm", "RS256")
        self.assertEqual(config["workers"], 2)

    def test_unixSocket(self):
        """
        A UNIX socket cannot be shared by workers (a worker that stops
        removes the socket file): a usage error.  With one process it is
        fine.
        """
        path = self.mktemp()
        self.assertUsageError(["--workers", "2", "--listen", "unix:" + path] + list(self.SHARED),
                              "--listen unix:" + path, "UNIX sockets cannot be shared")
        self.assertEqual(parse("--listen", "unix:" + path)["listen"], ["unix:" + path])

    def test_systemdNotPassed(self):
        """
        A C{systemd:} endpoint when systemd passed no socket: a usage error
        saying so.
        """
        self.assertUsageError(["--listen", "systemd:domain=INET:index=0"],
                              "--listen systemd:domain=INET:index=0",
                              "no such socket was passed by systemd")

    def test_workerArguments(self):
        """
        A worker gets every --listen, the --app and the server options as
        they were given, and neither --workers nor --shutdown-timeout.
        """
        config = parse("--workers", "2", "--listen", "tcp:8001", "--listen", "tcp6:8002",
                       "--app", "tests.test_tap:recordingSetup", "--ping-interval", "3",
                       "--shutdown-timeout", "4", *self.SHARED)
        self.assertEqual(tap.worker_arguments(config), [
            "--listen", "tcp:8001", "--listen", "tcp6:8002",
            "--app", "tests.test_tap:recordingSetup", "--log-level", "info",
            "--ping-interval", "3", "--auth-key", "k",
            "--broker", "tests.test_tap:FakeBroker",
        ])
        self.assertEqual(tap.worker_arguments(parse()),
                         ["--listen", "tcp:8000", "--log-level", "info"])

    def test_buildPool(self):
        """
        With several workers the service is the parent's
        L{_workers.WorkerPool}: no server, the --app is not called, nothing
        listens before it starts.
        """
        del SETUP_CALLS[:]
        config = parse("--workers", "3", "--listen", "tcp:8001", "--shutdown-timeout", "4",
                       "--app", "tests.test_tap:recordingSetup", *self.SHARED)
        reactor = MemoryReactor()
        service = tap.build_pool(config, reactor, executable="/usr/bin/python3")
        pool = service.getServiceNamed("workers")
        self.assertIsInstance(pool, _workers.WorkerPool)
        self.assertEqual(len(list(service)), 1)
        self.assertEqual((pool.listen, pool.workers, pool.shutdown_timeout, pool.executable),
                         (["tcp:8001"], 3, 4.0, "/usr/bin/python3"))
        self.assertEqual(pool.arguments, tap.worker_arguments(config))
        self.assertEqual(pool.twistd_arguments, [])  # MemoryReactor has no twistd name
        self.assertEqual(pool.command()[-len(pool.arguments) - 1:],
                         ["scserver"] + pool.arguments)
        self.assertEqual(SETUP_CALLS, [])
        self.assertEqual(reactor.tcpServers, [])

    def test_makeServicePool(self):
        """
        L{tap.makeService} makes the pool when C{--workers} is above 1,
        with the twistd name of the running reactor for the workers.
        """
        from twisted.internet import reactor

        self.addCleanup(set_log_level, log_level())
        pool = tap.makeService(parse("--workers", "2", *self.SHARED)).getServiceNamed("workers")
        self.assertIsInstance(pool, _workers.WorkerPool)
        self.assertEqual(pool.twistd_arguments[:1], ["--reactor"])
        self.assertEqual(pool.twistd_arguments[1:], [_workers.reactor_name(reactor)])

    def test_inherited(self):
        """
        In a worker, the sockets listed in the environment are read, one
        per --listen, and the variable is removed; the endpoints are not
        parsed (a systemd: one could not be, in the worker).
        """
        os.environ[_workers.WORKER_FDS_ENV] = "3:INET,4:INET6"
        config = parse("--listen", "tcp:8001", "--listen", "systemd:domain=INET6:index=0")
        self.assertEqual(config["inherited"], [(3, socket.AF_INET), (4, socket.AF_INET6)])
        self.assertNotIn(_workers.WORKER_FDS_ENV, os.environ)

    def test_inheritedMismatch(self):
        """
        A bad variable, or one that does not match the --listen count, is
        a usage error.
        """
        os.environ[_workers.WORKER_FDS_ENV] = "3:INET"
        self.assertUsageError(["--listen", "tcp:1", "--listen", "tcp:2"],
                              "1 socket(s) for 2 --listen endpoint(s)")
        os.environ[_workers.WORKER_FDS_ENV] = "3:IPX"
        self.assertUsageError([], "expected fd:INET, fd:INET6 or fd:UNIX, got '3:IPX'")
        os.environ[_workers.WORKER_FDS_ENV] = "3:INET"
        self.assertUsageError(["--workers", "2"] + list(self.SHARED),
                              "a worker process cannot have workers")

    def test_workerService(self):
        """
        A worker's service listens on L{_workers.InheritedEndpoint}s and
        watches its parent; it adopts each inherited socket with the
        server's factory.
        """
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(5)
        fd = os.dup(listening.fileno())
        os.environ[_workers.WORKER_FDS_ENV] = "%d:INET" % (fd,)
        config = parse("--listen", "tcp:8001", "--app", "tests.test_tap:recordingSetup")
        reactor = MemoryReactor()
        service = tap.build_service(config, reactor, FakeServer)
        server = service.getServiceNamed("scserver")
        self.assertIsInstance(service.getServiceNamed("parent-watch"), _workers.ParentWatch)
        listener = [s for s in service if isinstance(s, StreamServerEndpointService)][0]
        self.assertIsInstance(listener.endpoint, _workers.InheritedEndpoint)
        self.assertEqual((listener.endpoint.fileno, listener.endpoint.family),
                         (fd, socket.AF_INET))
        self.assertTrue(self.successResultOf(listener.endpoint.listen(server.factory)))
        self.assertEqual(reactor.adoptedPorts, [(fd, socket.AF_INET, server.factory)])
        self.assertRaises(OSError, os.fstat, fd)  # closed once adopted
