"""
The in-process broker: publications reach the subscribers of this process
only, synchronously, in publication order.
"""

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..errors import BrokerError
from ..interfaces import IBroker, IPresenceBroker, IPresenceStore

__all__ = ["MemoryBroker"]


@implementer(IBroker, IPresenceBroker)
class MemoryBroker:
    """
    An L{IBroker} for a single process.

    Delivery happens inside L{publish}, so the Deferred it returns fires
    after every local subscriber got the publication.
    """

    def __init__(self) -> None:
        self.subscriptions: set[str] = set()
        self._deliver: Optional[Callable[[str, Any], object]] = None

    def start(self, deliver: Callable[[str, Any], object]) -> Deferred[None]:
        """Start delivering to C{deliver(channel, data)}; ready at once."""
        self._deliver = deliver
        return succeed(None)

    def subscribe(self, channel: str) -> Deferred[None]:
        """Subscribe this process to C{channel}."""
        self.subscriptions.add(channel)
        return succeed(None)

    def unsubscribe(self, channel: str) -> Deferred[None]:
        """Unsubscribe this process from C{channel}."""
        self.subscriptions.discard(channel)
        return succeed(None)

    def publish(self, channel: str, data: Any) -> Deferred[None]:
        """Deliver C{data} to the local subscribers of C{channel}."""
        if self._deliver is None:
            raise BrokerError("The broker is not started")
        if channel in self.subscriptions:
            self._deliver(channel, data)
        return succeed(None)

    def presence_store(self, clock: Any, expiry: float) -> IPresenceStore:
        """A table (L{scserver._presence.MemoryPresenceStore}): nothing expires."""
        from .._presence import MemoryPresenceStore

        return MemoryPresenceStore()

    def stop(self) -> Deferred[None]:
        """Stop delivering."""
        self._deliver = None
        return succeed(None)
