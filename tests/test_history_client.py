"""
The Python client's recovery (C{subscribe(..., recover=True)}) against a
real server over an in-memory network (L{scserver.testing.MemoryNetwork}):
no Redis, no sockets, time on a clock.
"""

from twisted.trial.unittest import SynchronousTestCase

from scserver.errors import InvalidArgumentsError
from scserver.testing import MemoryNetwork, make_server


class ClientRecoveryTests(SynchronousTestCase):
    def setUp(self):
        self.server = make_server(history_channels="h.*=4")
        self.subscriptions = []
        self.server.on("subscription", lambda socket, channel, options:
                       self.subscriptions.append(options.get("data")))
        self.network = MemoryNetwork(self.server)
        self.client = self.network.client(auto_reconnect=False)
        self.successResultOf(self.connect())
        self.got = []
        self.channel = self.client.subscribe("h.a", recover=True, data={"mine": 1})
        self.channel.watch(lambda data: self.got.append((self.channel.offset, data)))
        self.network.flush()
        self.successResultOf(self.channel.when_subscribed())

    def connect(self):
        d = self.client.connect()
        self.network.flush()
        return d

    def publish(self, *values):
        for value in values:
            self.successResultOf(self.server.exchange.publish("h.a", value))
        self.network.flush()

    def away(self, *values):
        """Drop the connection from the server, publish C{values}, reconnect."""
        for socket in list(self.server.clients.values()):
            socket.disconnect(4000)
        self.network.flush()
        self.publish(*values)
        self.successResultOf(self.connect())
        self.network.flush()

    def test_firstSubscribe(self):
        """The first reply gives the position; the subscribe data keeps its own keys."""
        self.assertEqual((self.channel.offset, self.channel.recovered), (0, False))
        self.assertIsInstance(self.channel.epoch, str)
        self.assertEqual(self.subscriptions, [{"mine": 1, "recover": True}])

    def test_resubscribeAsksFromPosition(self):
        self.publish("a")
        self.away()
        self.assertEqual(self.subscriptions[1], {
            "mine": 1, "recover": {"offset": 1, "epoch": self.channel.epoch}})

    def test_recoverAfterDrop(self):
        self.publish("a")
        self.away("b", "c")
        self.assertIs(self.channel.recovered, True)
        self.publish("d")
        self.assertEqual(self.got, [(1, "a"), (2, "b"), (3, "c"), (4, "d")])

    def test_trimmed(self):
        epoch = self.channel.epoch
        self.publish("a")
        self.away(*"bcdef")
        self.assertIs(self.channel.recovered, False)
        self.assertEqual((self.channel.offset, self.channel.epoch), (6, epoch))
        self.publish("g")
        self.assertEqual(self.got, [(1, "a"), (7, "g")])

    def test_dataMustBeADict(self):
        self.assertRaises(InvalidArgumentsError, self.client.subscribe, "h.b", recover=True,
                          data="text")
