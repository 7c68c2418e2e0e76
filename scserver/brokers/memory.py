"""
The in-process broker: publications reach the subscribers of this process
only, synchronously, in publication order.
"""

from twisted.internet.defer import succeed
from zope.interface import implementer

from ..errors import BrokerError
from ..interfaces import IBroker

__all__ = ["MemoryBroker"]


@implementer(IBroker)
class MemoryBroker:
    """
    An L{IBroker} for a single process.

    Delivery happens inside L{publish}, so the Deferred it returns fires
    after every local subscriber got the publication.
    """

    def __init__(self):
        self.subscriptions = set()
        self._deliver = None

    def start(self, deliver):
        """Start delivering to C{deliver(channel, data)}; ready at once."""
        self._deliver = deliver
        return succeed(None)

    def subscribe(self, channel):
        """Subscribe this process to C{channel}."""
        self.subscriptions.add(channel)
        return succeed(None)

    def unsubscribe(self, channel):
        """Unsubscribe this process from C{channel}."""
        self.subscriptions.discard(channel)
        return succeed(None)

    def publish(self, channel, data):
        """Deliver C{data} to the local subscribers of C{channel}."""
        if self._deliver is None:
            raise BrokerError("The broker is not started")
        if channel in self.subscriptions:
            self._deliver(channel, data)
        return succeed(None)

    def stop(self):
        """Stop delivering."""
        self._deliver = None
        return succeed(None)
