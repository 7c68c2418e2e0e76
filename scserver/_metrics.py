"""
The counters of one server, and their Prometheus exposition.

The hot paths (every message in and out) only add to plain C{int}
attributes of a L{ServerStats}; L{ServerCollector} reads them, and counts
the sockets and their subscriptions, when C{/metrics} is scraped.  Each
server has a C{CollectorRegistry} of its own (L{server_registry}), never
prometheus_client's global one, so that several servers in one process (or
in the tests) do not clash.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from .server import SCServer

__all__ = [
    "LATENCY_BUCKETS",
    "LATENCY_SAMPLE",
    "LATENCY_SAMPLE_MASK",
    "MAX_LABEL_VALUES",
    "METRICS_CONTENT_TYPE",
    "ServerStats",
    "ServerCollector",
    "server_registry",
    "render",
]

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the request latency histogram's buckets."""

LATENCY_SAMPLE = 8
"""
One client request in this many (the first, the ninth, ...) is timed for
the latency histogram: timing costs two clock reads and a closure, about
8% of an echo round trip when every request is timed.  The sum and count
of the histogram are those of the sample; C{scserver_requests_total} counts
every request.  A power of two (see L{LATENCY_SAMPLE_MASK}).
"""

LATENCY_SAMPLE_MASK = LATENCY_SAMPLE - 1
"""C{requests & LATENCY_SAMPLE_MASK == 1}: this request is timed."""

MAX_LABEL_VALUES = 64
"""
Distinct values one labelled counter keeps (close codes, error names);
further values are counted under C{"other"}, so that clients cannot grow
the number of series without bound.
"""

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""
The content type of the Prometheus text format, in the version every
Prometheus reads (every name here is a legacy one, so the body is the same
in the later text formats).
"""


class ServerStats:
    """
    Plain counters of one server, incremented where things happen.

    @ivar connections: WebSocket connections accepted (sockets made).
    @ivar handshakes: SocketCluster handshakes completed.
    @ivar messages_in: messages received from clients.
    @ivar bytes_in: their bytes (UTF-8 for text).
    @ivar messages_out: messages written to clients (publications too).
    @ivar bytes_out: their payload bytes.
    @ivar requests: client events that asked for a reply and had handlers.
    @ivar publishes: client publications accepted by the broker.
    @ivar broker_errors: broker failures (start, subscribe, publish).
    @ivar slow_consumers: clients cut off by C{max_outbound_buffer}.
    @ivar closes: close code (as a string) → sockets closed with it.
    @ivar refused: HTTP status (as a string) → WebSocket upgrades refused
        with it (bad path or origin, C{handshakeWS} middleware, connection
        limits, request heads too large).
    @ivar errors: error class name → errors reported on sockets.
    @ivar latency_counts: per bucket of L{LATENCY_BUCKETS} (and +Inf), the
        replies to client requests that took that long.
    @ivar latency_sum: the seconds of all those replies.
    """

    __slots__ = (
        "connections", "handshakes", "requests", "messages_in", "bytes_in", "messages_out", "bytes_out",
        "publishes", "broker_errors", "slow_consumers", "closes", "refused", "errors",
        "latency_counts", "latency_sum",
    )

    def __init__(self) -> None:
        self.connections = 0
        self.handshakes = 0
        self.requests = 0
        self.messages_in = 0
        self.bytes_in = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.publishes = 0
        self.broker_errors = 0
        self.slow_consumers = 0
        self.closes: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    @staticmethod
    def count(table: dict[str, int], key: str) -> None:
        """Add one to C{table[key]} (or to C{table["other"]} once it is full)."""
        if key not in table and len(table) >= MAX_LABEL_VALUES:
            key = "other"
        table[key] = table.get(key, 0) + 1

    def closed(self, code: int) -> None:
        """A socket closed with C{code}."""
        self.count(self.closes, str(code))

    def error(self, error: object) -> None:
        """An error was reported on a socket."""
        self.count(self.errors, type(error).__name__)

    def observe_latency(self, seconds: float) -> None:
        """A client request was answered after C{seconds}."""
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def timed(self, now: Callable[[], float],
              respond: Callable[..., object]) -> Callable[..., object]:
        """
        C{respond(cid, error, data)}, observing the seconds from now (read
        with C{now}) until it is called: the request latency histogram.
        The socket counts every request in L{requests} and times one in
        L{LATENCY_SAMPLE}.
        """
        start = now()
        counts = self.latency_counts

        def send(cid: Any, error: Any, data: Any) -> object:
            elapsed = now() - start
            counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
            self.latency_sum += elapsed
            return respond(cid, error, data)

        return send


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled_counter(name: str, doc: str, label: str,
                      values: Iterable[tuple[str, float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in values:
        family.add_metric([key], value)
    return family


class ServerCollector(Collector):
    """Reads a server's L{ServerStats} and sockets when scraped."""

    def __init__(self, server: "SCServer") -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        stats = server.stats
        ready = GaugeMetricFamily("scserver_ready", "1 once the broker is ready, else 0",
                                  value=1 if server.is_ready else 0)
        yield ready
        connections = GaugeMetricFamily(
            "scserver_connections", "Sockets by state: open (past the handshake) or pending",
            labels=["state"])
        connections.add_metric(["open"], len(server.clients))
        connections.add_metric(["pending"], len(server.pending_clients))
        yield connections
        subscriptions = 0
        channels: set[str] = set()
        for socket in server.clients.values():
            names = socket.subscriptions()
            subscriptions += len(names)
            channels.update(names)
        yield GaugeMetricFamily("scserver_subscriptions",
                                "Channel subscriptions of the connected sockets",
                                value=subscriptions)
        yield GaugeMetricFamily("scserver_channels",
                                "Channels with at least one local subscriber", value=len(channels))
        yield _counter("scserver_connections_accepted", "WebSocket connections accepted",
                       stats.connections)
        yield _counter("scserver_handshakes", "SocketCluster handshakes completed",
                       stats.handshakes)
        yield _labelled_counter("scserver_messages", "WebSocket messages, by direction",
                                "direction", [("in", stats.messages_in),
                                              ("out", stats.messages_out)])
        yield _labelled_counter("scserver_bytes", "Message payload bytes, by direction",
                                "direction", [("in", stats.bytes_in), ("out", stats.bytes_out)])
        yield _counter("scserver_requests",
                       "Client events that asked for a reply (invoke), with handlers",
                       stats.requests)
        yield _counter("scserver_publishes", "Client publications accepted by the broker",
                       stats.publishes)
        yield _labelled_counter("scserver_middleware_blocks",
                                "Actions blocked by middleware, by middleware type", "type",
                                sorted(server.middleware.blocks.items()))
        yield _labelled_counter("scserver_errors", "Errors reported on sockets, by class name",
                                "name", sorted(stats.errors.items()))
        yield _labelled_counter("scserver_disconnects", "Sockets closed, by close code", "code",
                                sorted(stats.closes.items()))
        yield _labelled_counter("scserver_upgrades_refused",
                                "WebSocket upgrades refused, by HTTP status", "status",
                                sorted(stats.refused.items()))
        yield _counter("scserver_slow_consumer_disconnects",
                       "Clients cut off for not reading (max_outbound_buffer)",
                       stats.slow_consumers)
        yield _counter("scserver_broker_errors", "Broker failures (start, subscribe, publish)",
                       stats.broker_errors)
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip(LATENCY_BUCKETS, stats.latency_counts):
            total += count
            buckets.append((repr(bound), total))
        total += stats.latency_counts[-1]
        buckets.append(("+Inf", total))
        yield HistogramMetricFamily(
            "scserver_request_duration_seconds",
            "Seconds from a client event that asks for a reply to the reply (one request"
            " in {} is timed)".format(LATENCY_SAMPLE),
            buckets=buckets, sum_value=stats.latency_sum)


def server_registry(server: "SCServer") -> CollectorRegistry:
    """A new registry holding the L{ServerCollector} of C{server}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of C{registry}."""
    return generate_latest(registry)
