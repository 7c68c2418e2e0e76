"""
A real C{redis-server} for the tests of the Redis broker.

L{RedisServer} starts C{redis-server} on a free loopback port with its own
configuration file and temporary data directory (no persistence), waits
until it says it is ready and answers C{PING}, and stops it.  It can be
killed and started again on the same port, to play an outage.

L{skip_reason} is C{None} when C{redis-server} can be found, else the
reason to skip (C{scripts/test.sh} installs it with apt-get when it can).
"""

import os
import shutil
import socket
import tempfile

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

__all__ = ["REDIS_SERVER", "RedisServer", "free_port", "skip_reason", "redis_command"]


def _find_redis_server():
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server",
                      "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


REDIS_SERVER = _find_redis_server()
"""The path of C{redis-server}, or C{None}."""

skip_reason = (None if REDIS_SERVER else
               "redis-server not found (install it: apt-get install redis-server;"
               " scripts/test.sh does when run as root)")
"""Why the Redis tests are skipped, or C{None}."""

START_TIMEOUT = 10
"""Seconds for redis-server to get ready."""


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (at this moment)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Process(protocol.ProcessProtocol):
    """Watches redis-server's output for its ready line and its end."""

    def __init__(self):
        self.output = b""
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data
        if not self.ready.called and b"Ready to accept connections" in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(RuntimeError(
                "redis-server exited before it was ready:\n"
                + self.output.decode("utf-8", "replace")))
        self.ended.callback(None)


@defer.inlineCallbacks
def redis_command(reactor, port, *args, password=None):
    """
    Run one Redis command on 127.0.0.1:C{port} over a new connection, and
    close it.

    @return: a Deferred firing with the reply (C{str}, C{int}, a list...).
    """
    import txredisapi

    proto = txredisapi.BaseRedisProtocol(charset="utf-8", convertNumbers=False)
    proto.callLater = reactor.callLater
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), proto)
    closed = proto.whenDisconnected()
    try:
        if password is not None:
            yield proto.execute_command("AUTH", password)
        reply = yield proto.execute_command(*args)
    finally:
        proto.transport.loseConnection()
        yield closed
    return reply


class RedisServer:
    """
    A C{redis-server} process for one test.

    @ivar port: its TCP port on 127.0.0.1.
    @ivar tls_port: its TLS port on 127.0.0.1 when started with C{tls}
        (C{(key_path, cert_path)}; clients are not asked for certificates).
    @ivar unix_socket: the path of its UNIX socket.
    @ivar directory: its configuration and data directory.
    """

    def __init__(self, reactor, password=None, tls=None):
        self.reactor = reactor
        self.password = password
        self.tls = tls
        self.tls_port = None
        self.directory = tempfile.mkdtemp(prefix="scserver-redis-")
        self.unix_socket = os.path.join(self.directory, "redis.sock")
        self.port = None
        self._process = None

    @property
    def url(self):
        """C{redis://127.0.0.1:PORT} (with the password, if any)."""
        auth = ":{}@".format(self.password) if self.password else ""
        return "redis://{}127.0.0.1:{}".format(auth, self.port)

    def _write_config(self):
        path = os.path.join(self.directory, "redis.conf")
        lines = [
            'logfile ""',
            "daemonize no",
            "unixsocket " + self.unix_socket,
            "unixsocketperm 700",
            "databases 16",
        ]
        if self.password:
            lines.append("requirepass " + self.password)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    @defer.inlineCallbacks
    def start(self):
        """
        Start redis-server (on the port it had before, if it ran before) and
        wait until it answers PING.

        @return: a Deferred firing with this server.
        """
        config = self._write_config()
        attempts = 1 if self.port is not None else 3
        for attempt in range(attempts):
            if self.port is None or attempt:
                self.port = free_port()
            process = _Process()
            argv = [REDIS_SERVER, config, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", self.directory]
            if self.tls is not None:
                if self.tls_port is None or attempt:
                    self.tls_port = free_port()
                key, cert = (os.path.abspath(path) for path in self.tls)
                argv += ["--tls-port", str(self.tls_port), "--tls-key-file", key,
                         "--tls-cert-file", cert, "--tls-ca-cert-file", cert,
                         "--tls-auth-clients", "no"]
            self.reactor.spawnProcess(process, REDIS_SERVER, argv, env={}, path=self.directory)
            self._process = process
            try:
                yield process.ready.addTimeout(START_TIMEOUT, self.reactor)
            except defer.TimeoutError:
                yield self.stop()
                raise
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                continue  # the port was taken meanwhile: another one
            break
        reply = yield redis_command(self.reactor, self.port, "PING", password=self.password)
        if reply != "PONG":
            raise RuntimeError("redis-server answered PING with {!r}".format(reply))
        return self

    def stop(self, kill=False):
        """
        Stop redis-server (SIGTERM, or SIGKILL with C{kill}).

        @return: a Deferred firing once it exited.
        """
        process, self._process = self._process, None
        if process is None or process.ended.called:
            return defer.succeed(None)
        try:
            process.transport.signalProcess("KILL" if kill else "TERM")
        except Exception:
            pass
        return process.ended.addTimeout(START_TIMEOUT, self.reactor)

    def kill(self):
        """Kill redis-server at once (SIGKILL): an outage."""
        return self.stop(kill=True)

    def command(self, *args):
        """Run one command on this server (see L{redis_command})."""
        return redis_command(self.reactor, self.port, *args, password=self.password)

    @defer.inlineCallbacks
    def cleanup(self):
        """Stop the server and remove its directory."""
        yield self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
