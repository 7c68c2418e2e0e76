"""
Recovery with the official npm clients (socketcluster-client 14.3.2 and
20.0.2) and the helper C{js/scserver-recovery.mjs}: two real C{twistd
scserver} processes (C{--history-channels}) on one real C{redis-server}.
The client on process A is dropped by the server, publications go on
through process B while it is away, its own automatic reconnection
subscribes again and it gets every missed publication once, in order; when
more were missed than the history holds it is told to resynchronise.

Needs Node.js with C{npm ci --prefix tests/interop}, and C{redis-server}.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests._node import check_node, run_node
from tests._redis import RedisServer, skip_reason
from tests.history_app import DROP_CODE
from tests.test_twistd import PORT_LINE, TwistdProcessMixin

SIZE = 10


class RecoveryInteropTests(TwistdProcessMixin, unittest.TestCase):
    """Two processes on one Redis, with the npm clients and the helper."""

    skip = skip_reason
    timeout = 120

    @defer.inlineCallbacks
    def servers(self):
        from twisted.internet import reactor

        check_node()
        redis = RedisServer(reactor)
        self.addCleanup(redis.cleanup)
        yield redis.start()
        urls = []
        for _ in range(2):
            process, _transport = self.spawn(
                "--listen", "tcp:0:interface=127.0.0.1", "--broker", redis.url,
                "--history-channels", "h.*={}/60".format(SIZE),
                "--app", "tests.history_app:setup")
            match = yield process.wait_for(PORT_LINE, 30)
            urls.append("ws://127.0.0.1:{}/socketcluster/".format(match.group(1)))
        return urls

    def recover(self, urls, version, missed, channel):
        d = run_node("recoverAfterDrop", version, urls[0], params={
            "urls": urls, "channel": channel, "before": 2, "missed": missed, "after": 2,
            "delay": 1000, "timeout": 40}, timeout=60)

        def check(result):
            # The client that did not opt in got today's frames: channel
            # and data only, every publication.
            self.assertEqual(result["plainFrames"], [
                '{{"event":"#publish","data":{{"channel":"{}","data":{{"seq":{}}}}}}}'.format(
                    channel, n) for n in range(result["published"])])
            self.assertEqual(result["disconnectCode"], DROP_CODE)
            # The publications were all made while the client was away.
            self.assertTrue(result["missedWhileAway"], result)
            return result

        return d.addCallback(check)

    def check_recovered(self, result):
        self.assertEqual(result["received"], [{"seq": n} for n in range(9)])
        self.assertEqual(result["firstPosition"]["offset"], 0)
        self.assertEqual(result["position"], {"offset": 9,
                                              "epoch": result["firstPosition"]["epoch"]})
        self.assertEqual(result["resyncs"], [])

    def check_trimmed(self, result, channel, missed):
        total = 2 + missed + 2
        # Before the drop, then nothing of the missed ones, then the live ones.
        self.assertEqual(result["received"],
                         [{"seq": n} for n in (0, 1, total - 2, total - 1)])
        epoch = result["firstPosition"]["epoch"]
        self.assertEqual(result["resyncs"], [
            {"channel": channel, "position": {"offset": 2 + missed, "epoch": epoch}}])
        self.assertEqual(result["position"], {"offset": total, "epoch": epoch})

    @defer.inlineCallbacks
    def test_recover(self):
        """
        Both client versions at once, each on its own channel: with 5
        publications missed, every one arrives once, in order, between the
        ones before and after; with more missed than the history holds
        (C{SIZE + 3}), none is replayed and the helper calls C{onResync}
        with the new position.
        """
        urls = yield self.servers()
        trimmed = SIZE + 3
        results = yield defer.gatherResults([
            self.recover(urls, 14, 5, "h.r14"),
            self.recover(urls, 20, 5, "h.r20"),
            self.recover(urls, 14, trimmed, "h.t14"),
            self.recover(urls, 20, trimmed, "h.t20"),
        ], consumeErrors=True)
        self.check_recovered(results[0])
        self.check_recovered(results[1])
        self.check_trimmed(results[2], "h.t14", trimmed)
        self.check_trimmed(results[3], "h.t20", trimmed)
