"""
Tests for the option resolvers of L{scserver.options}: C{codec_engine} and
C{broker} accept the same spellings in L{scserver.server.SCServer}
(and its C{set_codec_engine}) and in C{twistd scserver}, and a bad value is
an L{InvalidOptionsError} in the server and a usage error while the
command line is parsed.
"""

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from scserver import tap
from scserver.brokers.memory import MemoryBroker
from scserver.brokers.redis import RedisBroker
from scserver.codec import JSONCodec, MinBinCodec
from scserver.errors import InvalidOptionsError
from scserver.interfaces import IBroker, ICodecEngine
from scserver.options import check_broker, load_object, resolve_broker, resolve_codec_engine
from scserver.server import SCServer

# Objects named by the pkg.module:name specs below.

NOT_CALLABLE = 42


@implementer(ICodecEngine)
class UpperCodec:
    """An L{ICodecEngine} class."""

    def encode(self, obj):
        return str(obj).upper()

    def decode(self, data):
        return data.lower()


UPPER_CODEC = UpperCodec()
"""An L{ICodecEngine} provider."""


class DuckCodec:
    """A codec that does not declare L{ICodecEngine}."""

    def encode(self, obj):
        return str(obj)

    def decode(self, data):
        return data


def makeUpperCodec():
    """A codec factory."""
    return UpperCodec()


class NotACodec:
    """Has neither C{encode} nor C{decode}."""


def makeNothing():
    """A factory that makes no codec and no broker."""
    return NotACodec()


def failingFactory():
    """A factory that raises."""
    raise RuntimeError("no codec today")


class DuckBroker:
    """A broker that does not declare L{IBroker}."""

    subscriptions: frozenset[str] = frozenset()

    def start(self, deliver):
        pass

    def subscribe(self, channel):
        pass

    def unsubscribe(self, channel):
        pass

    def publish(self, channel, data):
        pass

    def stop(self):
        pass


@implementer(IBroker)
class FakeBroker(DuckBroker):
    """An L{IBroker} class taking the reactor."""

    def __init__(self, reactor=None):
        self.reactor = reactor


BROKER = FakeBroker(reactor="module level")
"""An L{IBroker} provider."""


def makeBrokerWithoutReactor():
    """A broker factory taking no argument."""
    return FakeBroker(reactor="none given")


def makeBrokerWithKeywords(**kwargs):
    """A broker factory taking any keyword: it gets C{reactor}."""
    return FakeBroker(**kwargs)


def failingBrokerFactory(reactor):
    """A broker factory that raises."""
    raise RuntimeError("no broker today")


HERE = __name__
"""This module's name, for the specs (C{tests.test_options})."""


def spec(name):
    """C{"tests.test_options:name"}."""
    return "{}:{}".format(HERE, name)


def server(**options):
    """An L{SCServer} on a memory reactor, never started."""
    return SCServer(reactor=MemoryReactorClock(), auth_key="k", **options)


def parse(*args):
    """Parse C{args} as C{twistd scserver} would."""
    config = tap.Options()
    config.parseOptions(list(args))
    return config


def twistdServer(*args):
    """
    Parse C{args} as C{twistd scserver} would and build its service with the
    real L{SCServer} on a memory reactor.

    @return: the server and the reactor.
    """
    reactor = MemoryReactorClock()
    service = tap.build_service(parse("--auth-key", "k", *args), reactor, SCServer)
    return service.getServiceNamed("scserver"), reactor


class CodecEngineTests(SynchronousTestCase):
    """
    Every spelling of C{codec_engine}, through C{SCServer(codec_engine=...)},
    C{SCServer.set_codec_engine(...)} and C{twistd scserver --codec-engine}.
    """

    def assertCodec(self, value, check):
        """
        C{value} gives a codec passing C{check(codec)} in all three places
        (only where it is a string on the command line).
        """
        check(server(codec_engine=value).codec)
        s = server()
        s.set_codec_engine(value)
        check(s.codec)
        if isinstance(value, str):
            check(twistdServer("--codec-engine", value)[0].codec)

    def assertBadCodec(self, value, *fragments):
        """
        C{value} is refused by the server, by C{set_codec_engine} and, as a
        usage error while parsing, by C{twistd scserver}; every message
        holds every one of C{fragments}.
        """
        errors = [
            self.assertRaises(InvalidOptionsError, server, codec_engine=value),
            self.assertRaises(InvalidOptionsError, server().set_codec_engine, value),
        ]
        if isinstance(value, str):
            errors.append(self.assertRaises(usage.UsageError, parse, "--codec-engine", value))
        for error in errors:
            for fragment in fragments:
                self.assertIn(fragment, str(error))
        return errors

    def isA(self, cls):
        return lambda codec: self.assertIsInstance(codec, cls)

    def test_default(self):
        """
        Without the option the codec is a L{JSONCodec}; on the command line
        C{none} means the default.
        """
        self.assertIsInstance(server().codec, JSONCodec)
        self.assertIsInstance(server(codec_engine=None).codec, JSONCodec)
        self.assertIsInstance(twistdServer()[0].codec, JSONCodec)
        self.assertIsInstance(twistdServer("--codec-engine", "none")[0].codec, JSONCodec)

    def test_json(self):
        """
        C{json}, in any case and with spaces around it, is a new
        L{JSONCodec}.
        """
        for value in ("json", "JSON", " json "):
            self.assertCodec(value, self.isA(JSONCodec))

    def test_minBin(self):
        """
        C{min-bin}, C{minbin} and C{msgpack} are a new L{MinBinCodec}.
        C{twistd} refused C{minbin} and C{msgpack} before.
        """
        for value in ("min-bin", "minbin", "msgpack", "Min-Bin", "MSGPACK"):
            self.assertCodec(value, self.isA(MinBinCodec))

    def test_class(self):
        """
        C{pkg.module:Class} is instantiated.  The server refused it before.
        """
        self.assertCodec(spec("UpperCodec"), self.isA(UpperCodec))
        self.assertCodec(spec("DuckCodec"), self.isA(DuckCodec))
        self.assertCodec("scserver.codec:MinBinCodec", self.isA(MinBinCodec))

    def test_factory(self):
        """
        C{pkg.module:function} is called to make the codec.
        """
        self.assertCodec(spec("makeUpperCodec"), self.isA(UpperCodec))

    def test_namedInstance(self):
        """
        C{pkg.module:name} naming a codec instance is used as it is.
        """
        self.assertCodec(spec("UPPER_CODEC"), lambda codec: self.assertIs(codec, UPPER_CODEC))

    def test_instance(self):
        """
        An L{ICodecEngine} provider, or an object with C{encode} and
        C{decode}, is used as it is.
        """
        for codec in (UPPER_CODEC, DuckCodec(), MinBinCodec()):
            self.assertCodec(codec, lambda c, codec=codec: self.assertIs(c, codec))

    def test_unknownName(self):
        """
        A name that is neither a codec nor C{pkg.module:Name} is refused.
        """
        self.assertBadCodec("xml", "json, min-bin or pkg.module:Name", "'xml'")
        self.assertBadCodec("json5", "json, min-bin or pkg.module:Name", "'json5'")
        (_, _, usageError) = self.assertBadCodec("min_bin", "'min_bin'")
        self.assertIn("--codec-engine", str(usageError))

    def test_empty(self):
        """
        The server refuses an empty string; on the command line an empty
        value (like C{none}) means the default.
        """
        self.assertRaises(InvalidOptionsError, server, codec_engine="")
        self.assertRaises(InvalidOptionsError, server().set_codec_engine, "")
        self.assertIsInstance(twistdServer("--codec-engine", "")[0].codec, JSONCodec)

    def test_malformedSpec(self):
        """
        A C{pkg.module:Name} with an empty part is refused.
        """
        self.assertBadCodec(HERE + ":", "expects pkg.module:name")
        self.assertBadCodec(":UpperCodec", "expects pkg.module:name")

    def test_missingModule(self):
        """
        A module that does not exist is refused.
        """
        self.assertBadCodec("no_such_module_xyz:Codec", "no module named 'no_such_module_xyz'")

    def test_missingName(self):
        """
        A name the module does not have is refused.
        """
        self.assertBadCodec(spec("NoSuchCodec"), "has no attribute 'NoSuchCodec'")

    def test_notACodec(self):
        """
        A name for something that neither is nor makes a codec is refused.
        """
        self.assertBadCodec(spec("NOT_CALLABLE"), "not a codec engine")
        self.assertBadCodec(spec("NotACodec"), "not a codec engine", "NotACodec")
        self.assertBadCodec(spec("makeNothing"), "not a codec engine")

    def test_failingFactory(self):
        """
        A factory that raises is refused, with its error.
        """
        self.assertBadCodec(spec("failingFactory"), "RuntimeError: no codec today")

    def test_objectWithoutMethods(self):
        """
        An object without C{encode} and C{decode} is refused.
        """
        self.assertBadCodec(object(), "ICodecEngine")
        self.assertBadCodec(42, "ICodecEngine")

    def test_class_notInstance(self):
        """
        A codec class given as an object (rather than by name) is refused:
        it is not a codec engine.  The server took it before and failed at
        the first message.
        """
        self.assertBadCodec(UpperCodec, "not the class UpperCodec", "UpperCodec()")


class BrokerTests(SynchronousTestCase):
    """
    Every spelling of C{broker}, through C{SCServer(broker=...)} and
    C{twistd scserver --broker}.
    """

    def assertBroker(self, value, check):
        """
        C{value} gives a broker passing C{check(broker, reactor)} in the
        server and (where it is a string) through C{twistd}.
        """
        reactor = MemoryReactorClock()
        s = SCServer(reactor=reactor, auth_key="k", broker=value)
        check(s.broker, reactor)
        if isinstance(value, str):
            s, reactor = twistdServer("--broker", value)
            check(s.broker, reactor)

    def assertBadBroker(self, value, *fragments):
        """
        C{value} is refused by the server and, as a usage error while
        parsing, by C{twistd scserver}; every message holds every one of
        C{fragments}.
        """
        errors = [self.assertRaises(InvalidOptionsError, server, broker=value)]
        if isinstance(value, str):
            errors.append(self.assertRaises(usage.UsageError, parse, "--broker", value))
        for error in errors:
            for fragment in fragments:
                self.assertIn(fragment, str(error))
        return errors

    def assertBadFactory(self, value, *fragments):
        """
        C{value} names a broker factory that fails or makes no broker: the
        server refuses it, and C{twistd scserver} accepts it while parsing
        (a factory may need the reactor, which C{twistd} installs after
        parsing) and refuses it when C{build_service} calls it.
        """
        errors = [self.assertRaises(InvalidOptionsError, server, broker=value)]
        config = parse("--broker", value)
        errors.append(self.assertRaises(InvalidOptionsError, tap.build_service,
                                        config, MemoryReactorClock(), SCServer))
        self.assertTrue(str(errors[-1]).startswith("--broker " + value), str(errors[-1]))
        for error in errors:
            for fragment in fragments:
                self.assertIn(fragment, str(error))
        for error in errors:
            for fragment in fragments:
                self.assertIn(fragment, str(error))
        return errors

    def isA(self, cls):
        return lambda broker, reactor: self.assertIsInstance(broker, cls)

    def test_default(self):
        """
        Without the option the broker is a L{MemoryBroker}.
        """
        self.assertIsInstance(server().broker, MemoryBroker)
        self.assertIsInstance(server(broker=None).broker, MemoryBroker)
        self.assertIsInstance(twistdServer()[0].broker, MemoryBroker)
        self.assertIsInstance(twistdServer("--broker", "none")[0].broker, MemoryBroker)

    def test_memory(self):
        """
        C{memory}, in any case, is a new L{MemoryBroker}.
        """
        for value in ("memory", "MEMORY", " memory "):
            self.assertBroker(value, self.isA(MemoryBroker))

    def test_redisURL(self):
        """
        A C{redis://}, C{rediss://} or C{unix://} URL, or several separated
        by commas, is a L{RedisBroker} on the server's reactor, with the
        server's C{broker_prefix}; nothing connects before the server
        starts.
        """
        def isRedis(addresses, prefix="scserver:"):
            def check(broker, reactor):
                self.assertIsInstance(broker, RedisBroker)
                self.assertIs(broker.reactor, reactor)
                self.assertEqual([str(a) for a in broker.addresses], addresses)
                self.assertEqual(broker.prefix, prefix)
                self.assertEqual(reactor.tcpClients, [])
            return check

        self.assertBroker("redis://127.0.0.1:6379/0", isRedis(["redis://127.0.0.1:6379/0"]))
        self.assertBroker(" REDIS://localhost ", isRedis(["redis://localhost:6379/0"]))
        self.assertBroker("rediss://example.com:6380", isRedis(["rediss://example.com:6380/0"]))
        self.assertBroker("unix:///run/redis.sock?db=2", isRedis(["unix:///run/redis.sock?db=2"]))
        self.assertBroker("redis://:pw@a:1/1,redis://b:2",
                          isRedis(["redis://:***@a:1/1", "redis://b:2/0"]))
        s, reactor = twistdServer("--broker", "redis://a", "--broker-prefix", "app:")
        isRedis(["redis://a:6379/0"], "app:")(s.broker, reactor)
        s = server(broker="redis://a", broker_prefix="")
        self.assertEqual(s.broker.prefix, "")

    def test_malformedRedisURL(self):
        """
        A malformed Redis URL is refused by the server and, while parsing,
        by C{twistd}: a bad scheme, port or db, an empty shard.
        """
        for value, fragment in [
            ("redis://h:port", "bad port 'port'"),
            ("redis://h:99999/0", "bad port"),
            ("redis://h/zero", "db"),
            ("redis://h:6379/0?db=1", "the db is given twice"),
            ("unix:/run/redis.sock", "expected redis://"),
            ("redis://a:6379,,redis://b:6379", "shard 2 of 3 is empty"),
            ("redis://a:6379,", "shard 2 of 2 is empty"),
            ("redis://a:6379,http://b", "expected redis://"),
            ("redis://a:6379,redis://a:6379", "listed twice"),
        ]:
            self.assertBadBroker(value, fragment, value)

    def test_brokerPrefix(self):
        """
        C{broker_prefix} is a string, C{scserver:} by default.
        """
        self.assertEqual(server().options["broker_prefix"], "scserver:")
        self.assertEqual(server(broker_prefix="a:").options["broker_prefix"], "a:")
        self.assertRaises(InvalidOptionsError, server, broker_prefix=3)
        self.assertEqual(parse("--broker-prefix", "b:")["server_options"]["broker_prefix"], "b:")

    def test_unknownURL(self):
        """
        A URL of another scheme is refused.  C{twistd} took it before.
        """
        (serverError, usageError) = self.assertBadBroker(
            "nope://host", "unknown broker URL scheme 'nope'")
        self.assertIn("--broker nope://host", str(usageError))

    def test_unknownName(self):
        """
        A name that is neither C{memory}, a URL nor C{pkg.module:name} is
        refused.
        """
        self.assertBadBroker("redis", "expects memory, a URL", "'redis'")
        self.assertBadBroker("in-memory", "expects memory, a URL", "'in-memory'")

    def test_empty(self):
        """
        The server refuses an empty string; on the command line an empty
        value (like C{none}) means the default.
        """
        self.assertRaises(InvalidOptionsError, server, broker="")
        self.assertIsInstance(twistdServer("--broker", "")[0].broker, MemoryBroker)

    def test_factoryTakingReactor(self):
        """
        C{pkg.module:factory} whose factory takes C{reactor} is called with
        the server's reactor.  The server refused it before.
        """
        def check(broker, reactor):
            self.assertIsInstance(broker, FakeBroker)
            self.assertIs(broker.reactor, reactor)

        self.assertBroker(spec("FakeBroker"), check)
        self.assertBroker(spec("makeBrokerWithKeywords"), check)

    def test_factoryWithoutArguments(self):
        """
        A factory taking no argument is called without one.
        """
        self.assertBroker(
            spec("makeBrokerWithoutReactor"),
            lambda broker, reactor: self.assertEqual(broker.reactor, "none given"))

    def test_namedInstance(self):
        """
        C{pkg.module:name} naming a broker is used as it is.
        """
        self.assertBroker(spec("BROKER"), lambda broker, reactor: self.assertIs(broker, BROKER))

    def test_instance(self):
        """
        An L{IBroker} provider, or an object with its methods, is used as
        it is.
        """
        for broker in (BROKER, DuckBroker(), MemoryBroker()):
            self.assertBroker(broker, lambda b, reactor, broker=broker: self.assertIs(b, broker))

    def test_malformedSpec(self):
        """
        A C{pkg.module:name} with an empty part is refused.
        """
        self.assertBadBroker(HERE + ":", "expects pkg.module:name")

    def test_missingModuleOrName(self):
        """
        A module or a name that does not exist is refused.
        """
        self.assertBadBroker("no_such_module_xyz:broker", "no module named 'no_such_module_xyz'")
        self.assertBadBroker(spec("noSuchBroker"), "has no attribute 'noSuchBroker'")

    def test_notABroker(self):
        """
        A name for something that is neither a broker nor callable is
        refused while parsing.
        """
        self.assertBadBroker(spec("NOT_CALLABLE"), "neither an IBroker nor a factory of one")

    def test_factoryMakesNoBroker(self):
        """
        A factory making something that is not a broker is refused when the
        broker is made: by the server, and by C{build_service} (the factory
        is only called once the reactor is known).
        """
        self.assertBadFactory(spec("makeNothing"), "not a broker", "NotACodec")

    def test_failingFactory(self):
        """
        A factory that raises is refused, with its error.
        """
        self.assertBadFactory(spec("failingBrokerFactory"), "RuntimeError: no broker today")

    def test_objectWithoutMethods(self):
        """
        An object without the methods of L{IBroker} is refused, naming the
        missing ones.
        """
        self.assertBadBroker(object(), "IBroker", "missing start, subscribe")
        self.assertBadBroker(42, "IBroker")

    def test_class_notInstance(self):
        """
        A broker class given as an object (rather than by name) is refused.
        """
        self.assertBadBroker(FakeBroker, "not the class FakeBroker")


class ResolverTests(SynchronousTestCase):
    """
    The resolvers themselves: their C{label} starts the messages, and
    L{check_broker} checks without making.
    """

    def test_codecLabel(self):
        """
        The label given to L{resolve_codec_engine} names the option in its
        messages; the default is C{codec_engine}.
        """
        error = self.assertRaises(InvalidOptionsError, resolve_codec_engine, "xml")
        self.assertTrue(str(error).startswith("codec_engine "), str(error))
        error = self.assertRaises(InvalidOptionsError, resolve_codec_engine, "xml", "--codec")
        self.assertTrue(str(error).startswith("--codec "), str(error))

    def test_brokerLabel(self):
        """
        The label given to L{resolve_broker} and L{check_broker} names the
        option in their messages; the default is C{broker}.
        """
        for call in (lambda *a: check_broker(*a), lambda *a: resolve_broker(a[0], None, *a[1:])):
            error = self.assertRaises(InvalidOptionsError, call, "redis://x:y")
            self.assertTrue(str(error).startswith("broker redis://x:y: "), str(error))
            error = self.assertRaises(InvalidOptionsError, call, "redis://x:y", "--b")
            self.assertTrue(str(error).startswith("--b redis://x:y: "), str(error))

    def test_checkBrokerDoesNotMake(self):
        """
        L{check_broker} imports the named object but does not call it.
        """
        calls = []
        self.patch(FakeBroker, "__init__", lambda self, reactor=None: calls.append(reactor))
        self.assertIsNone(check_broker(spec("FakeBroker")))
        self.assertEqual(calls, [])
        resolve_broker(spec("FakeBroker"), "the reactor")
        self.assertEqual(calls, ["the reactor"])

    def test_loadObject(self):
        """
        L{load_object} imports dotted attributes and raises
        L{InvalidOptionsError} labelled as asked.
        """
        self.assertIs(load_object(spec("FakeBroker.start"), "x"), FakeBroker.start)
        error = self.assertRaises(InvalidOptionsError, load_object, "nocolon", "--thing")
        self.assertEqual(str(error), "--thing expects pkg.module:name, got 'nocolon'")
