"""
Scale-out end to end: real C{twistd scserver} processes sharing a real
C{redis-server}, driven by the official SocketCluster clients (both
versions) through the scenarios of C{tests/interop/scenarios/scale.js}; the
server side runs L{tests.scale_app}.

 - two single-process servers on one Redis: a publication reaches the
   subscribers of both processes, in order per publisher, and the watchers
   of both exchanges;
 - C{--workers 2} on Redis: a worker killed with SIGKILL is respawned, its
   clients reconnect and subscribe again on their own, and publications
   reach every client; SIGTERM to the parent closes every client with 1001
   and the parent exits 0.

Needs Node.js with C{npm ci --prefix tests/interop}, and C{redis-server}
(the README's test command installs it when it can; without it these tests
are skipped, saying so).
"""

import re

from twisted.internet import defer, error
from twisted.trial import unittest

from tests._node import check_node, run_node
from tests._redis import RedisServer, skip_reason
from tests.test_twistd import PORT_LINE, TwistdProcessMixin
from tests.test_workers import BOUND, WORKER_LISTENING

AUTH_KEY = "scale-test-auth-key-0123456789abcdefghijkl"

APP = ["--app", "tests.scale_app:setup", "--auth-key", AUTH_KEY]


class ScaleOutTests(TwistdProcessMixin, unittest.TestCase):
    """Several server processes on one Redis, with the npm clients."""

    skip = skip_reason
    timeout = 120

    @defer.inlineCallbacks
    def redis(self):
        from twisted.internet import reactor

        check_node()
        redis = RedisServer(reactor)
        self.addCleanup(redis.cleanup)
        yield redis.start()
        return redis

    @defer.inlineCallbacks
    def server(self, redis, *args):
        """A twistd process on C{redis}; fires with C{(process, url)}."""
        process, transport = self.spawn(
            "--listen", "tcp:0:interface=127.0.0.1", "--broker", redis.url, *(APP + list(args)))
        match = yield process.wait_for(BOUND if "--workers" in args else PORT_LINE, 30)
        if "--workers" in args:
            # Both workers listening: connections then go to either.
            yield process.wait_for(re.compile(
                "(?s)" + WORKER_LISTENING.pattern + ".*" + WORKER_LISTENING.pattern), 30)
        return process, transport, "ws://127.0.0.1:{}/socketcluster/".format(match.group(1))

    @defer.inlineCallbacks
    def test_two_processes_share_redis(self):
        """
        A client of process A publishes 20 messages and process B publishes
        one from the server side: every subscriber of both client versions
        on both processes gets all 21, in order; each process's exchange
        watcher sees them too; every publish is acknowledged.
        """
        redis = yield self.redis()
        _a, _, url_a = yield self.server(redis)
        _b, _, url_b = yield self.server(redis)
        result = yield run_node("scaleFanout", 20, url_a,
                                params={"urls": [url_a, url_b], "count": 20}, timeout=60)
        expected = [{"seq": n, "from": "client"} for n in range(20)]
        expected.append({"seq": 20, "from": "server"})
        self.assertEqual([a.get("error") for a in result["acks"]], [None] * 20)
        self.assertEqual(result["serverPublish"], {"data": "published"})
        received = result["received"]
        self.assertEqual([(r["url"], r["version"]) for r in received],
                         [(url_a, 14), (url_a, 20), (url_b, 14), (url_b, 20)])
        pids = {r["url"]: r["pid"] for r in received}
        self.assertNotEqual(pids[url_a], pids[url_b])
        for r in received:
            self.assertEqual(r["messages"], expected, (r["url"], r["version"]))
        self.assertEqual(result["watched"], [expected, expected])
        channels = yield redis.command("PUBSUB", "CHANNELS", "*")
        self.assertIn("scserver:scale", channels)

    @defer.inlineCallbacks
    def failover(self, version):
        redis = yield self.redis()
        process, _, url = yield self.server(redis, "--workers", "2")
        result = yield run_node("workerFailover", version, url, params={"maxClients": 60},
                                timeout=60)
        victim = result["victimPid"]
        self.assertEqual(len(set(result["pidsBefore"])), 2)
        self.assertGreaterEqual(result["victims"], 1)
        self.assertNotIn(victim, result["pidsAfter"])
        self.assertNotIn("error", result["ack"])
        self.assertEqual(result["got"], [True] * len(result["pidsBefore"]))
        yield process.wait_for(re.compile(
            r"Worker \d \(pid {}\) was killed by signal 9; restarting it".format(victim)), 10)

    def test_worker_killed_v14(self):
        """
        C{--workers 2}: a worker killed with SIGKILL is restarted; its
        socketcluster-client 14 clients reconnect and subscribe again on
        their own, and a publication reaches every client.
        """
        return self.failover(14)

    def test_worker_killed_v20(self):
        """The same with socketcluster-client 20."""
        return self.failover(20)

    @defer.inlineCallbacks
    def test_parent_sigterm(self):
        """
        SIGTERM to the C{--workers} parent: every client of both workers
        gets a close frame with 1001 and the parent exits with status 0.
        """
        redis = yield self.redis()
        process, _, url = yield self.server(redis, "--workers", "2")
        result = yield run_node("parentShutdown", 20, url, params={"maxClients": 60},
                                timeout=60)
        self.assertEqual(result["workers"], 2)
        self.assertEqual(result["closes"], [1001] * result["clients"])
        reason = yield process.wait_ended(20)
        self.assertIsInstance(reason, error.ProcessDone, process.text)

    @defer.inlineCallbacks
    def test_min_bin_binary_across_processes(self):
        """
        Two processes with the min-bin codec on one Redis: binary data
        published by a client of one reaches a client of the other intact.
        """
        from twisted.internet import reactor

        from scserver.client import connect
        from scserver.codec import MinBinCodec

        redis = yield self.redis()
        a, _, url_a = yield self.server(redis, "--codec-engine", "min-bin", "--log-level", "debug")
        b, _, url_b = yield self.server(redis, "--codec-engine", "min-bin", "--log-level", "debug")
        clients = []
        for url in (url_a, url_b):
            client = yield connect(url, reactor=reactor, codec_engine=MinBinCodec(),
                                   auto_reconnect=False)
            self.addCleanup(client.disconnect)
            clients.append(client)
        got = defer.Deferred()
        channel = clients[1].subscribe("binary")
        channel.watch(lambda data: got.called or got.callback(data))
        yield channel.when_subscribed()
        payload = {"blob": bytes(range(256)), "nested": [b"\x00\xff", {"n": -(2 ** 40)}]}
        yield clients[0].publish("binary", payload)
        try:
            received = yield got.addTimeout(10, reactor)
        except defer.TimeoutError:
            # What both processes logged, to tell where the publication stopped.
            self.fail("not delivered within 10 s\n--- A:\n{}\n--- B:\n{}".format(
                a.text[-4000:], b.text[-4000:]))
        self.assertEqual(received, payload)
