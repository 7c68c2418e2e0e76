"""
Fan-out over real sockets on 127.0.0.1: 1000 subscribers on one channel get
every publication, none lost, in order per publisher.
"""

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from scserver import SCServer
from scserver.client import connect

SUBSCRIBERS = 1000
PUBLISHERS = 3
MESSAGES = 20


class ThousandSubscribersTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.server = SCServer(reactor=reactor, auth_key="fanout-test",
                               ping_interval=30, ping_timeout=60)
        port = yield self.server.listen("tcp:0:interface=127.0.0.1:backlog=1024")
        self.url = "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port)
        self.clients = []
        self.addCleanup(self._close_all)

    @defer.inlineCallbacks
    def _close_all(self):
        yield defer.DeferredList(
            [client.disconnect() for client in self.clients if client.state != "closed"],
            consumeErrors=True)
        yield self.server.close()

    @defer.inlineCallbacks
    def _connect_many(self, count, batch=100):
        for start in range(0, count, batch):
            batch_clients = yield defer.gatherResults(
                [connect(self.url, reactor=reactor) for _ in range(min(batch, count - start))],
                consumeErrors=True)
            self.clients.extend(batch_clients)

    @defer.inlineCallbacks
    def test_everyPublicationReachesEverySubscriber(self):
        yield self._connect_many(SUBSCRIBERS)
        received = [[] for _ in range(SUBSCRIBERS)]
        channels = []
        for index, client in enumerate(self.clients):
            channel = client.subscribe("crowd")
            channel.watch(received[index].append)
            channels.append(channel)
        yield defer.gatherResults([c.when_subscribed() for c in channels], consumeErrors=True)
        self.assertEqual(len(self.server.clients), SUBSCRIBERS)
        self.assertEqual(set(self.server.exchange._sockets["crowd"]),
                         set(self.server.clients.values()))

        publishers = self.clients[:PUBLISHERS]
        acks = []
        for n in range(MESSAGES):
            for p, publisher in enumerate(publishers):
                acks.append(publisher.publish("crowd", {"p": p, "n": n}))
        acks.append(self.server.exchange.publish("crowd", {"p": "server", "n": 0}))
        yield defer.gatherResults(acks, consumeErrors=True)

        expected_total = PUBLISHERS * MESSAGES + 1
        for _ in range(600):
            if all(len(r) == expected_total for r in received):
                break
            yield deferLater(reactor, 0.05, lambda: None)
        for index, messages in enumerate(received):
            self.assertEqual(len(messages), expected_total, "subscriber {}".format(index))
            for p in range(PUBLISHERS):
                self.assertEqual([m["n"] for m in messages if m["p"] == p], list(range(MESSAGES)),
                                 "subscriber {} publisher {}".format(index, p))
