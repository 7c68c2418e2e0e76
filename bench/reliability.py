"""
Reliability figures: what abusive clients cost a real server, and what a
normal client sees meanwhile.

Each scenario starts its own C{twistd -n scserver --app
tests.interop_app:setup} on 127.0.0.1 (a free port), runs attackers from this
process (asyncio, raw sockets, a minimal WebSocket client) and a "normal
client" in a second process (C{reliability.py probe PORT SECONDS}): one
connection, past the SocketCluster handshake, invoking C{echo} with one
request in flight and 5 ms between requests; it reports the round-trip
latency p50/p99/max.  The server's RSS is read from C{/proc/PID/status}.

Scenarios (C{--only NAME} to run one, repeatable; all of them by default).
The first six measure the costs the hardening issue asks for:

- C{baseline}: the normal client alone, 5 s.
- C{upgrade}: request heads that never end, 64 KiB/s, for 10 s; one
  connection at a time, reconnecting whenever the server cuts it off.
- C{idle}: 1000 TCP connections that never send a byte and 1000 WebSocket
  connections that never send C{#handshake} (C{--handshake-timeout 2}); when
  and how each is closed.
- C{flood}: a client sending C{echo} requests as fast as it can (reconnecting
  when cut off, for 10 s), then one sending 1800 a second (under the default
  budget of 2000) for 10 s.
- C{shutdown}: 2000 handshaken clients, SIGTERM; the close codes they get and
  the time the process takes to exit.
- C{memory}: RSS with 0 and with N handshaken idle connections
  (C{--connections}, 10000 by default).

The others re-run the attacks of the issue's table (its row numbers), with
C{bench/reliability_app.py} (the interop application plus failing handlers,
a slow C{authenticate} middleware and a publisher) where they need it:

- C{errors} (row 2): handlers that raise an ordinary exception holding a
  database DSN (synchronously, from a coroutine, as a failed Deferred, from
  middleware), and one that passes it to C{respond}; the exact error each
  reply carries, 1000 failures in a row and what the server logs.
- C{auth_async} (row 3): C{authInfo} asked while an asynchronous
  C{authenticate} middleware decides (1 s) on a token sent with
  C{#authenticate}, and on one sent with C{#handshake} (C{authInfo} right
  behind it, with C{--strict-handshake} true and false).
- C{authkey} (row 4): twistd with C{--auth-key @file}, C{env:NAME}, the
  C{SCSERVER_AUTH_KEY} variable and a 10-byte key: the process list, the
  log, whether tokens signed with the key are accepted; an unset variable
  and a missing file (the exit status and message).
- C{port_taken} (row 5): twistd on a port that is taken (its only
  C{--listen}, then its second): exit status, time, log.
- C{channels} (row 6): 20 anonymous sockets each subscribing to 1000
  channels of 4096 characters, then 20 each subscribing to 1001 of 256
  characters (the longest allowed; one more than C{socket_channel_limit});
  the replies, and RSS per socket.
- C{admission} (row 6): 25 connections from each of 127.0.0.1, .2 and .3
  with C{--max-connections 50 --max-connections-per-ip 20}; 2100
  requests left unanswered (C{max_inflight_requests}); 3000 requests in one
  write (C{max_messages_per_second}).
- C{batch} (row 6): a 1 MiB batch of C{echo} requests (closed 4101) and a
  batch of 2000 (the largest allowed), 5 times each, 1 s apart, with the
  normal client running.
- C{slow_reader} (row 8): a subscriber that stops reading while the server
  publishes 64 KiB messages to its channel until it is cut off
  (C{max_outbound_buffer}); the close code the server's socket gets, then
  what the subscriber reads.
- C{backlog} (row 9): 1000 connections opened at once against the default
  C{--listen} (backlog 1024) and one with C{backlog=50}: how many complete
  the SocketCluster handshake within 20 s, and when.
- C{expiry} (row 10): a token without C{exp} (default, and
  C{--auth-require-expiry true}); with C{--auth-leeway 4}, tokens that
  expired 2 and 10 s ago, and one used 2 s past its C{exp} and again 6 s
  past.

Every run is bounded (each scenario under 60 s, the whole, with the default
10,000 connections of C{memory}, under 6 minutes); every process started is
stopped.  Usage::

    .venv/bin/python bench/reliability.py [--only upgrade]... [--skip flood]...
        [--connections 10000]
"""

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTH_KEY = "bench-reliability-auth-key-0123456789abcdef"
TWISTD = "from twisted.scripts.twistd import run; run()"
PATH = "/socketcluster/"


# -- processes ---------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(*extra, app="tests.interop_app:setup", auth=("--auth-key", AUTH_KEY),
                 listen="tcp:{port}:interface=127.0.0.1", env=None, directory=None):
    """
    Start C{twistd -n scserver} on a free port and wait until its health
    check answers.  The process gets C{.directory} (its working directory,
    holding C{twistd.log}) and C{.port}.
    """
    port = free_port()
    directory = directory or tempfile.mkdtemp(prefix="scserver-rel-")
    argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "scserver",
            "--listen", listen.format(port=port), "--app", app] + list(auth) + list(extra)
    env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    log = open(os.path.join(directory, "twistd.log"), "wb")
    server = subprocess.Popen(argv, cwd=directory, env=env, stdout=log, stderr=log,
                              preexec_fn=raise_nofile)
    log.close()  # the child has its own descriptor
    server.directory = directory
    server.port = port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("server exited with {}: {}".format(
                server.returncode, server_log(server)[-500:]))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        stop(server)
        raise RuntimeError("server not ready after 30 s")
    return server, port


def server_log(server):
    """The text twistd wrote so far (its log goes to stdout with -n)."""
    try:
        with open(os.path.join(server.directory, "twistd.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def stop(process, timeout=20):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    directory = getattr(process, "directory", None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def rss_kib(pid):
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_delay_s(pid):
    """
    Seconds the process (its main thread) has spent waiting for a CPU, from
    C{/proc/PID/schedstat}: with other work on the same cores, latency can
    be the scheduler's rather than the server's.
    """
    try:
        with open("/proc/{}/schedstat".format(pid)) as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def start_probe(port, seconds):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "probe", str(port),
                             str(seconds)], stdout=subprocess.PIPE, text=True)


def probe_result(probe, timeout=60):
    try:
        out, _ = probe.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        probe.kill()
        out, _ = probe.communicate()
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": "no result", "out": out[-500:]}


# -- a minimal WebSocket client ------------------------------------------------

def frame(payload, opcode=0x1):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    # XOR as one big integer: fast enough for the megabyte frames of the
    # batch and channels scenarios.
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + masked


async def read_frame(reader):
    """(opcode, payload) of the next server frame (unmasked, unfragmented)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


def close_code(payload):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.connected_at = None
        self.close_code = None
        self.closed_at = None
        self.cid = 1
        self.handshake = None
        self.events = []

    def send(self, text):
        self.writer.write(frame(text))

    async def recv(self):
        """The next text message, answering pings; None once closed."""
        while True:
            try:
                opcode, payload = await read_frame(self.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                self.closed_at = time.monotonic()
                if self.close_code is None:
                    self.close_code = 1006
                return None
            if opcode == 0x8:
                self.close_code = close_code(payload)
                self.closed_at = time.monotonic()
                try:
                    self.writer.write(frame(payload[:2], 0x8))
                except Exception:
                    pass
                return None
            if opcode == 0x9:
                self.writer.write(frame(payload, 0xA))
                continue
            if opcode != 0x1:
                continue
            text = payload.decode("utf-8")
            if text == "#1":
                self.send("#2")
                continue
            if text == "":
                self.send("")
                continue
            return text

    async def pump(self):
        """Read (answering pings) until the connection closes."""
        while await self.recv() is not None:
            pass

    def abort(self):
        try:
            self.writer.transport.abort()
        except Exception:
            pass


class BlockingConn:
    """A WebSocket client on a blocking socket, which reads only when asked to."""

    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def read(self, n):
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError()
            self.buffer += data
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def upgrade(self):
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").format(PATH, key).encode())
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise UpgradeRefused(head.split(b"\r\n", 1)[0].decode("latin-1"))

    def read_frame(self):
        b0, b1 = self.read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.read(8))[0]
        return b0 & 0x0F, self.read(n)

    def request(self, message):
        """Send C{message} and return the reply to its cid (answering pings)."""
        self.sock.sendall(frame(json.dumps(message)))
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                raise ConnectionError("closed {}".format(close_code(payload)))
            text = payload.decode("utf-8")
            if text in ("#1", ""):
                self.sock.sendall(frame("#2" if text == "#1" else ""))
                continue
            reply = json.loads(text)
            if isinstance(reply, dict) and reply.get("rid") == message["cid"]:
                return reply


async def ws_connect(port, handshake=True, timeout=20, token=None, source=None):
    """
    A WebSocket connection to the server, past the SocketCluster handshake
    (C{#handshake} with C{token} as its C{authToken}) unless C{handshake} is
    false; the handshake's reply is C{conn.handshake}.  C{source}: the local
    address to connect from (another 127.0.0.0/8 address).
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, limit=2 ** 20,
        local_addr=None if source is None else (source, 0)), timeout)
    connected_at = time.monotonic()
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").format(PATH, key).encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise UpgradeRefused(head.split(b"\r\n", 1)[0].decode("latin-1"))
    conn = Conn(reader, writer)
    conn.connected_at = connected_at
    if handshake:
        conn.send(json.dumps({"event": "#handshake", "data": {"authToken": token}, "cid": 1}))
        while True:
            text = await asyncio.wait_for(conn.recv(), timeout)
            if text is None:
                raise RuntimeError("closed during handshake ({})".format(conn.close_code))
            if '"rid":1' in text:
                conn.handshake = json.loads(text)
                break
            conn.events.append(json.loads(text))
        conn.cid = 2
    return conn


class UpgradeRefused(Exception):
    """The server answered the upgrade request with another status than 101."""


async def call(conn, event, data=None, timeout=10):
    """
    Send a request and return its reply (a dict), or C{None} when the
    connection closed first; messages that are not the reply go to
    C{conn.events}.
    """
    cid = conn.cid
    conn.cid += 1
    conn.send(json.dumps({"event": event, "data": data, "cid": cid}))
    return await reply_to(conn, cid, timeout)


async def reply_to(conn, cid, timeout=10):
    """The reply to request C{cid} (see L{call})."""
    deadline = time.monotonic() + timeout
    while True:
        text = await asyncio.wait_for(conn.recv(), max(0.01, deadline - time.monotonic()))
        if text is None:
            return None
        message = json.loads(text)
        if isinstance(message, dict) and message.get("rid") == cid:
            return message
        conn.events.append(message)


def sign(claims, key=None):
    """A token signed with HS256 and C{key} (the benchmark's key by default)."""
    import warnings

    import jwt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT's warning about short keys
        return jwt.encode(claims, key or AUTH_KEY, algorithm="HS256")


async def connect_many(port, n, handshake=True, batch=200, pumps=None):
    """
    Open C{n} connections, C{batch} at a time.  With a list as C{pumps},
    each connection starts reading (answering pings) as soon as it is
    connected, and the task doing so is appended to the list: otherwise the
    first connections of a slow run would miss their pings.
    """
    conns, errors = [], []
    for start in range(0, n, batch):
        results = await asyncio.gather(
            *[ws_connect(port, handshake) for _ in range(min(batch, n - start))],
            return_exceptions=True)
        for r in results:
            (errors if isinstance(r, BaseException) else conns).append(r)
            if pumps is not None and not isinstance(r, BaseException):
                pumps.append(asyncio.ensure_future(r.pump()))
    return conns, errors


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def ms(x):
    return None if x is None else round(x * 1000, 2)


# -- the normal client ---------------------------------------------------------

async def probe(port, seconds):
    latencies, errors, slow = [], 0, []
    conn = await ws_connect(port)
    end = time.monotonic() + seconds
    payload = {"n": 0, "text": "x" * 64}
    while time.monotonic() < end:
        payload["n"] += 1
        cid = conn.cid
        conn.cid += 1
        t0 = time.monotonic()
        conn.send(json.dumps({"event": "echo", "data": payload, "cid": cid}))
        try:
            while True:
                text = await asyncio.wait_for(conn.recv(), 5)
                if text is None:
                    raise ConnectionError("closed {}".format(conn.close_code))
                if '"rid":{},'.format(cid) in text or '"rid":{}}}'.format(cid) in text:
                    break
        except (asyncio.TimeoutError, ConnectionError):
            errors += 1
            break
        latencies.append(time.monotonic() - t0)
        if latencies[-1] > 0.02 and len(slow) < 50:
            slow.append([round(t0, 3), ms(latencies[-1])])
        await asyncio.sleep(0.005)
    conn.abort()
    return {"requests": len(latencies), "errors": errors,
            "p50_ms": ms(pct(latencies, 50)), "p99_ms": ms(pct(latencies, 99)),
            "max_ms": ms(max(latencies) if latencies else None),
            "over_20ms": sum(1 for x in latencies if x > 0.02),
            "top5_ms": [ms(x) for x in sorted(latencies)[-5:]],
            # [when it was sent (time.monotonic(), which is system-wide), ms]
            "slow": slow}


# -- scenarios -----------------------------------------------------------------

class RssSampler:
    def __init__(self, pid):
        self.pid, self.samples, self.task = pid, [], None

    async def run(self):
        while True:
            self.samples.append(rss_kib(self.pid))
            await asyncio.sleep(0.1)

    def start(self):
        self.task = asyncio.ensure_future(self.run())

    def stop(self):
        self.task.cancel()
        return max(self.samples) if self.samples else None


async def scenario_upgrade(seconds=10, rate=64 * 1024):
    server, port = start_server()
    try:
        await asyncio.sleep(1)
        rss0 = rss_kib(server.pid)
        sampler = RssSampler(server.pid)
        sampler.start()
        probe = start_probe(port, seconds + 1)
        await asyncio.sleep(0.5)
        chunk = 4096
        interval = chunk / rate
        end = time.monotonic() + seconds
        cuts = []
        while time.monotonic() < end:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t0 = time.monotonic()
            sent = 0
            writer.write(b"GET /socketcluster/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            answer = asyncio.ensure_future(reader.read(200))
            i = 0
            while not answer.done() and time.monotonic() < end:
                line = b"X-Pad-%06d: " % i
                data = line + b"a" * (chunk - len(line) - 2) + b"\r\n"
                try:
                    writer.write(data)
                    await writer.drain()
                except ConnectionError:
                    break
                sent += len(data)
                i += 1
                await asyncio.wait([answer], timeout=interval)
            if not answer.done():
                answer.cancel()
                writer.transport.abort()
                break  # the deadline, not the server, ended this one
            try:
                response = answer.result()
            except ConnectionError:
                response = b""
            cuts.append({"sent": sent, "after_s": round(time.monotonic() - t0, 3),
                         "status": response.split(b"\r\n", 1)[0].decode("latin-1")})
            writer.transport.abort()
        peak = sampler.stop()
        p = probe_result(probe)
        rss1 = rss_kib(server.pid)
        statuses = sorted({c["status"] for c in cuts})
        return {"connections": len(cuts), "statuses": statuses,
                "bytes_sent_before_cut_max": max(c["sent"] for c in cuts),
                "cut_after_s_max": max(c["after_s"] for c in cuts),
                "first": cuts[0], "rss_kib_before": rss0, "rss_kib_peak": peak,
                "rss_kib_after": rss1, "rss_growth_kib_peak": peak - rss0, "probe": p}
    finally:
        stop(server)


async def scenario_idle(n=1000, handshake_timeout=2):
    server, port = start_server("--handshake-timeout", str(handshake_timeout))
    try:
        await asyncio.sleep(1)
        rss0 = rss_kib(server.pid)
        probe = start_probe(port, 12)
        await asyncio.sleep(0.5)

        async def raw():
            t0 = time.monotonic()  # before connecting: an upper bound on the lifetime
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                data = await asyncio.wait_for(reader.read(200), 20)
            except asyncio.TimeoutError:
                data = "still open after 20 s"
            except ConnectionResetError:
                data = "reset"
            else:
                data = data or "closed (FIN)"
            t = time.monotonic() - t0
            writer.transport.abort()
            return t, data

        async def ws():
            t0 = time.monotonic()
            conn = await ws_connect(port, handshake=False)
            try:
                await asyncio.wait_for(conn.pump(), 20)
            except asyncio.TimeoutError:
                pass
            t = (conn.closed_at or time.monotonic()) - t0
            conn.abort()
            return t, conn.close_code

        t_start = time.monotonic()
        cpu0 = cpu_seconds(server.pid)
        waits0 = run_delay_s(server.pid), run_delay_s(probe.pid)
        tasks = []
        for start in range(0, n, 100):
            tasks += [asyncio.ensure_future(raw()) for _ in range(100)]
            tasks += [asyncio.ensure_future(ws()) for _ in range(100)]
            await asyncio.sleep(0.05)
        opened = time.monotonic() - t_start
        await asyncio.sleep(1)
        # The server's CPU time while the connections were opened (and
        # their upgrades answered), as a share of one core.
        cpu_share = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t_start)
        waits = [round(run_delay_s(pid) - w, 3) for pid, w in zip((server.pid, probe.pid), waits0)]
        rss_open = rss_kib(server.pid)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        raws, wss, errors = [], [], []
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                errors.append(repr(r))
            elif (i // 100) % 2 == 0:
                raws.append(r)
            else:
                wss.append(r)
        p = probe_result(probe)
        # When the slow echoes were sent, in seconds from the first connection.
        p["slow"] = [[round(t - t_start, 2), x] for t, x in p.get("slow", [])]
        await asyncio.sleep(0.5)
        rss1 = rss_kib(server.pid)

        def summary(rows):
            times = [t for t, _ in rows] or [float("nan")]
            outcomes = {}
            for _, o in rows:
                key = repr(o[:40]) if isinstance(o, bytes) else repr(o)
                outcomes[key] = outcomes.get(key, 0) + 1
            return {"count": len(rows), "closed_after_s_min": round(min(times), 2),
                    "median": round(statistics.median(times), 2),
                    "max": round(max(times), 2), "outcomes": outcomes}

        return {"opened_in_s": round(opened, 2),
                "server_cpu_share_while_opening": round(cpu_share, 2),
                "runqueue_wait_s_while_opening": {"server": waits[0], "probe": waits[1]},
                "tcp": summary(raws), "ws": summary(wss),
                "errors": errors[:5], "error_count": len(errors), "rss_kib_before": rss0,
                "rss_kib_all_open": rss_open, "rss_kib_after": rss1, "probe": p}
    finally:
        stop(server)


async def scenario_flood(seconds=10):
    server, port = start_server()
    result = {}
    try:
        await asyncio.sleep(1)
        # (a) as fast as possible, reconnecting whenever cut off
        probe = start_probe(port, seconds + 1)
        await asyncio.sleep(0.5)
        end = time.monotonic() + seconds
        cpu0, own0, wall0 = cpu_seconds(server.pid), sum(os.times()[:2]), time.monotonic()
        runs = []
        while time.monotonic() < end:
            conn = await ws_connect(port)
            pump = asyncio.ensure_future(conn.pump())
            t0 = time.monotonic()
            sent = 0
            batch = b"".join(frame(json.dumps({"event": "echo", "data": i, "cid": 10 + i}))
                             for i in range(100))
            while not pump.done() and time.monotonic() < end:
                try:
                    conn.writer.write(batch)
                    await conn.writer.drain()
                except ConnectionError:
                    break
                sent += 100
                await asyncio.sleep(0)
            try:
                await asyncio.wait_for(pump, 5)
            except asyncio.TimeoutError:
                pass
            runs.append({"written_before_close": sent, "code": conn.close_code,
                         "closed_after_s": None if conn.closed_at is None
                         else round(conn.closed_at - t0, 3)})
            conn.abort()
        wall = time.monotonic() - wall0
        result["fast"] = {"connections": len(runs), "first": runs[0], "runs": runs,
                          "server_cpu_share": round((cpu_seconds(server.pid) - cpu0) / wall, 2),
                          "attacker_cpu_share": round((sum(os.times()[:2]) - own0) / wall, 2),
                          "codes": sorted({str(r["code"]) for r in runs}),
                          "probe": probe_result(probe)}
        # (b) 1800 messages a second, under the default budget of 2000
        probe = start_probe(port, seconds + 1)
        await asyncio.sleep(0.5)
        conn = await ws_connect(port)
        pump = asyncio.ensure_future(conn.pump())
        t0 = time.monotonic()
        sent = 0
        while not pump.done() and time.monotonic() - t0 < seconds:
            due = int((time.monotonic() - t0) * 1800)
            if due > sent:
                conn.writer.write(b"".join(
                    frame(json.dumps({"event": "echo", "data": i, "cid": 10 + i}))
                    for i in range(sent, due)))
                sent = due
            await asyncio.sleep(0.01)
        result["steady_1800"] = {"sent": sent, "cut": pump.done(), "code": conn.close_code,
                                 "probe": probe_result(probe)}
        conn.abort()
        return result
    finally:
        stop(server)


async def scenario_shutdown(n=2000):
    server, port = start_server()
    try:
        await asyncio.sleep(1)
        pumps = []
        conns, errors = await connect_many(port, n, pumps=pumps)
        await asyncio.sleep(1)
        alive = sum(1 for p in pumps if not p.done())
        t0 = time.monotonic()
        server.send_signal(signal.SIGTERM)
        exit_s = None
        while time.monotonic() - t0 < 30:
            if server.poll() is not None:
                exit_s = time.monotonic() - t0
                break
            await asyncio.sleep(0.01)
        await asyncio.wait(pumps, timeout=5)
        codes = {}
        for c in conns:
            codes[str(c.close_code)] = codes.get(str(c.close_code), 0) + 1
        close_times = [c.closed_at - t0 for c in conns if c.closed_at]
        for c in conns:
            c.abort()
        return {"connected": len(conns), "connect_errors": len(errors),
                "alive_at_sigterm": alive,
                "exit_s": None if exit_s is None else round(exit_s, 3),
                "returncode": server.returncode, "close_codes": codes,
                "last_close_s": round(max(close_times), 3) if close_times else None}
    finally:
        stop(server)


async def scenario_memory(n=10000):
    server, port = start_server()
    try:
        await asyncio.sleep(2)
        # one connection and back, so that lazy imports are paid for
        c = await ws_connect(port)
        c.abort()
        await asyncio.sleep(1)
        rss0 = rss_kib(server.pid)
        t0 = time.monotonic()
        pumps = []
        conns, errors = await connect_many(port, n, batch=250, pumps=pumps)
        connect_s = time.monotonic() - t0
        await asyncio.sleep(3)
        rss_n = rss_kib(server.pid)
        alive = sum(1 for p in pumps if not p.done())
        for c in conns:
            c.abort()
        await asyncio.sleep(3)
        rss_after = rss_kib(server.pid)
        for p in pumps:
            p.cancel()
        return {"connections": len(conns), "connect_errors": len(errors),
                "errors": sorted({repr(e)[:80] for e in errors})[:3],
                "connect_s": round(connect_s, 1), "alive": alive, "rss_kib_0": rss0,
                "rss_kib_n": rss_n, "rss_kib_after_close": rss_after,
                "kib_per_connection": round((rss_n - rss0) / max(1, len(conns)), 2)}
    finally:
        stop(server)


async def scenario_baseline(seconds=5):
    server, port = start_server()
    try:
        await asyncio.sleep(1)
        return {"probe": probe_result(start_probe(port, seconds))}
    finally:
        stop(server)


# -- the attacks of the hardening issue, re-run ---------------------------------

BENCH_APP = "bench.reliability_app:setup"
SECRET = "hunter2-db-password"  # in bench/reliability_app.DSN


def log_lines(text, *needles):
    """The lines of a log holding one of C{needles}, without the timestamp."""
    return [line.split("] ", 1)[-1] for line in text.splitlines()
            if any(n in line for n in needles)]


async def scenario_errors(failures=1000):
    """Row 2: handlers that raise an ordinary exception (a DSN inside)."""
    server, port = start_server(app=BENCH_APP)
    try:
        conn = await ws_connect(port)
        pump_text = []
        replies = {}
        for event in ["dbFail", "dbFailAsync", "dbFailDeferred", "mwFail"]:
            reply = await call(conn, event)
            replies[event] = reply
            pump_text.append(json.dumps(reply))
        # The application passing the exception to respond() itself.
        replies["dbRespond"] = await call(conn, "dbRespond")
        # Many failures in a row: the log is rate-limited.
        t0 = time.monotonic()
        for i in range(failures):
            conn.send(json.dumps({"event": "dbFail", "cid": 1000 + i}))
        got = 0
        while got < failures:
            text = await asyncio.wait_for(conn.recv(), 20)
            if text is None:
                break
            pump_text.append(text)
            if '"rid"' in text:
                got += 1
        burst_s = time.monotonic() - t0
        echo = await call(conn, "echo", "still open")
        conn.abort()
        await asyncio.sleep(0.5)
        text = server_log(server)
        return {"replies": {e: r.get("error") if r else None for e, r in replies.items()},
                "burst_replies": got, "burst_s": round(burst_s, 2),
                "secret_received_other_than_dbRespond": any(SECRET in t for t in pump_text),
                "socket_open_after": bool(echo and echo.get("data") == "still open"),
                "log_tracebacks": text.count("Traceback"),
                "log_lines_with_secret": sum(1 for line in text.splitlines() if SECRET in line),
                "log_bytes": len(text)}
    finally:
        stop(server)


async def scenario_auth_async(delay=1):
    """Row 3: what the socket reports while an async authenticate middleware decides."""
    server, port = start_server(app=BENCH_APP)
    result = {}

    def view(reply):
        if not reply:
            return None
        data = reply.get("data") or {}
        return {"authState": data.get("authState"), "authToken": data.get("authToken"),
                "signed": data.get("signedAuthToken") is not None}

    now = int(time.time())
    rejected = sign({"username": "mallory", "slow": delay, "reject": True, "iat": now})
    accepted = sign({"username": "alice", "slow": delay, "iat": now})
    try:
        # (a) #authenticate on an open socket, authInfo meanwhile
        for name, token in [("authenticate_rejected", rejected),
                            ("authenticate_accepted", accepted)]:
            conn = await ws_connect(port)
            t0 = time.monotonic()
            auth_cid = conn.cid
            conn.cid += 1
            conn.send(json.dumps({"event": "#authenticate", "data": token, "cid": auth_cid}))
            during = view(await call(conn, "authInfo"))
            during_s = time.monotonic() - t0
            auth_reply = await reply_to(conn, auth_cid, 10)
            decided_s = time.monotonic() - t0
            after = view(await call(conn, "authInfo"))
            result[name] = {
                "during": during, "during_at_s": round(during_s, 3),
                "authenticate_reply": auth_reply, "reply_at_s": round(decided_s, 3),
                "after": after,
                "events_received": [e.get("event") for e in conn.events if isinstance(e, dict)]}
            conn.abort()
    finally:
        stop(server)
    # (b) the token in #handshake, authInfo sent right behind it (before the
    # handshake's reply): by default (strict) and with --strict-handshake false
    for strict in ("true", "false"):
        server, port = start_server("--strict-handshake", strict, app=BENCH_APP)
        try:
            await run_handshake_cases(port, strict, rejected, accepted, view, result)
        finally:
            stop(server)
    return result


async def run_handshake_cases(port, strict, rejected, accepted, view, result):
    """The handshake part of L{scenario_auth_async}, on one server."""
    for name, token in [("handshake_rejected", rejected), ("handshake_accepted", accepted)]:
        name += "_strict_" + strict
        conn = await ws_connect(port, handshake=False)
        t0 = time.monotonic()
        conn.send(json.dumps({"event": "#handshake", "data": {"authToken": token},
                              "cid": 1}))
        conn.send(json.dumps({"event": "authInfo", "cid": 2}))
        order, replies = [], {}
        timed_out = False
        while len(replies) < 2:
            try:
                text = await asyncio.wait_for(conn.recv(), 5)
            except asyncio.TimeoutError:
                timed_out = True
                break
            if text is None:
                break
            message = json.loads(text)
            if message.get("rid") in (1, 2):
                replies[message["rid"]] = message
                order.append((message["rid"], round(time.monotonic() - t0, 3)))
            else:
                conn.events.append(message)
        result[name] = {"handshake_reply": replies.get(1), "close_code": conn.close_code,
                        "authInfo_sent_with_handshake": view(replies.get(2)),
                        "reply_order_s": order, "nothing_more_after_5s": timed_out,
                        "events_received": [e.get("event") for e in conn.events]}
        conn.abort()


async def scenario_expiry():
    """Row 10: tokens without exp, with and without --auth-require-expiry; the leeway."""
    result = {}
    now = int(time.time())
    no_exp = sign({"username": "alice", "iat": now})

    def summary(conn):
        h = conn.handshake or {}
        data = h.get("data") or {}
        return {"isAuthenticated": data.get("isAuthenticated"),
                "authError": data.get("authError"), "error": h.get("error"),
                "events": [e.get("event") for e in conn.events]}

    for name, extra in [("default", ()), ("require_expiry", ("--auth-require-expiry", "true"))]:
        server, port = start_server(*extra)
        try:
            conn = await ws_connect(port, token=no_exp)
            info = await call(conn, "authInfo")
            result["no_exp_" + name] = dict(summary(conn), authState=(
                info or {}).get("data", {}).get("authState"))
            conn.abort()
        finally:
            stop(server)
    leeway = 4
    server, port = start_server("--auth-leeway", str(leeway))
    try:
        now = time.time()
        for name, exp in [("expired_2s_ago", int(now) - 2),
                          ("expired_10s_ago", int(now) - 10)]:
            conn = await ws_connect(port, token=sign({"username": "bob", "exp": exp}))
            result[name + "_leeway_4"] = summary(conn)
            conn.abort()
        # Inbound check: a token expiring in 1 s, used past exp (within the
        # leeway), then past exp + leeway.
        exp = int(time.time()) + 1
        conn = await ws_connect(port, token=sign({"username": "carol", "exp": exp}))
        handshake = summary(conn)
        pump_checks = []
        for wait_until in (exp + 2, exp + leeway + 2):
            await asyncio.sleep(max(0, wait_until - time.time()))
            before = len(conn.events)
            info = await call(conn, "authInfo")
            pump_checks.append({
                "seconds_past_exp": round(time.time() - exp, 2),
                "authState": (info or {}).get("data", {}).get("authState"),
                "events": [e.get("event") for e in conn.events[before:]]})
        result["inbound_leeway_4"] = {"handshake": handshake, "checks": pump_checks}
        conn.abort()
    finally:
        stop(server)
    return result


async def scenario_authkey():
    """Row 4: --auth-key from a file, from the environment; a 10-byte key."""
    result = {}
    directory = tempfile.mkdtemp(prefix="scserver-rel-key-")
    key = "file-key-" + os.urandom(16).hex()
    path = os.path.join(directory, "auth.key")
    with open(path, "w") as f:
        f.write(key + "\n")
    env_key = "env-key-" + os.urandom(16).hex()
    cases = [("file", ("--auth-key", "@" + path), None, key),
             ("env", ("--auth-key", "env:BENCH_SC_KEY"), {"BENCH_SC_KEY": env_key}, env_key),
             ("default_env", (), {"SCSERVER_AUTH_KEY": env_key}, env_key),
             ("short_inline", ("--auth-key", "0123456789"), None, "0123456789")]
    try:
        for name, auth, env, used in cases:
            server, port = start_server(auth=auth, env=env)
            try:
                with open("/proc/{}/cmdline".format(server.pid), "rb") as f:
                    argv = f.read().split(b"\0")
                ps = " ".join(a.decode() for a in argv if a)
                ps = ps.replace(sys.executable, "python").replace(TWISTD, "...")
                conn = await ws_connect(port, token=sign({"username": "k"}, used))
                authed = conn.handshake["data"]["isAuthenticated"]
                conn.abort()
                conn = await ws_connect(port, token=sign({"username": "k"}, "another-key-" + "x" * 32))
                other = conn.handshake["data"].get("authError")
                conn.abort()
                await asyncio.sleep(0.2)
                result[name] = {
                    "ps": ps, "key_in_ps": used in ps, "running": server.poll() is None,
                    "token_signed_with_key_accepted": authed,
                    "token_signed_with_another_key": other,
                    "log_warnings": log_lines(server_log(server), "INSECURE")}
            finally:
                stop(server)
        # Empty / missing sources: the process does not start.
        for name, auth, env in [("env_unset", ("--auth-key", "env:BENCH_SC_UNSET"), None),
                                ("file_missing", ("--auth-key", "@" + path + ".missing"), None)]:
            argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "scserver", "--listen",
                    "tcp:{}:interface=127.0.0.1".format(free_port())] + list(auth)
            process = subprocess.run(argv, cwd=directory, env=dict(os.environ, PYTHONPATH=ROOT),
                                     capture_output=True, text=True, timeout=30)
            out = (process.stdout + process.stderr).strip().splitlines()
            result[name] = {"status": process.returncode, "last_line": out[-1] if out else ""}
        return result
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def scenario_port_taken():
    """Row 5: twistd on a port that is taken (the first or the second --listen)."""
    result = {}
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(5)
    port = taken.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="scserver-rel-port-")
    try:
        for name, listens in [
                ("only_port", ["tcp:{}:interface=127.0.0.1".format(port)]),
                ("second_port", ["tcp:{}:interface=127.0.0.1".format(free_port()),
                                 "tcp:{}:interface=127.0.0.1".format(port)])]:
            argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "scserver",
                    "--auth-key", AUTH_KEY, "--app", "tests.interop_app:setup"]
            for listen in listens:
                argv += ["--listen", listen]
            t0 = time.monotonic()
            process = subprocess.Popen(argv, cwd=directory, env=dict(os.environ, PYTHONPATH=ROOT),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                out, _ = process.communicate(timeout=30)
                status = process.returncode
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
                status = "still running after 30 s (killed)"
            text = out.decode("utf-8", "replace")
            result[name] = {"status": status, "exit_s": round(time.monotonic() - t0, 2),
                            "log": [line.split("] ", 1)[-1] for line in text.splitlines()][:6],
                            "log_line_count": len(text.splitlines())}
        return result
    finally:
        taken.close()
        shutil.rmtree(directory, ignore_errors=True)


async def subscribe_many(conn, names):
    """Send one #subscribe per name in one write; return the replies."""
    first = conn.cid
    conn.writer.write(b"".join(
        frame(json.dumps({"event": "#subscribe", "data": {"channel": name},
                          "cid": first + i})) for i, name in enumerate(names)))
    conn.cid += len(names)
    replies = []
    while len(replies) < len(names):
        text = await asyncio.wait_for(conn.recv(), 30)
        if text is None:
            break
        message = json.loads(text)
        if isinstance(message, dict) and "rid" in message:
            replies.append(message)
    return replies


async def scenario_channels(sockets=20, subscriptions=1000):
    """
    Row 6 (memory): C{sockets} anonymous sockets each trying C{subscriptions}
    4096-character channel names; then as many with 256-character names (the
    longest allowed) and one more than C{socket_channel_limit}.
    """
    result = {}
    for name, length, count in [("names_4096", 4096, subscriptions),
                                ("names_256", 256, subscriptions + 1)]:
        server, port = start_server()
        try:
            c = await ws_connect(port)
            c.abort()
            await asyncio.sleep(1)
            rss0 = rss_kib(server.pid)
            conns, errors = await connect_many(port, sockets)
            await asyncio.sleep(0.5)
            rss_connected = rss_kib(server.pid)
            t0 = time.monotonic()
            outcomes, codes = {}, {}
            for k, conn in enumerate(conns):
                names = ["{:04d}-{:05d}-".format(k, i).ljust(length, "c") for i in range(count)]
                replies = await subscribe_many(conn, names)
                for i, reply in enumerate(replies):
                    error = reply.get("error")
                    key = "ok" if error is None else "{}: {}".format(
                        error.get("name"), re.sub(r"Socket \S+ tried", "Socket ID tried", re.sub(
                            r"the \S+ channel", "the CHANNEL channel", error.get("message"))))
                    if i == subscriptions and length == 256:
                        key = "#{}: {}".format(i + 1, key)
                    outcomes[key] = outcomes.get(key, 0) + 1
                codes[str(conn.close_code)] = codes.get(str(conn.close_code), 0) + 1
            seconds = time.monotonic() - t0
            pumps = [asyncio.ensure_future(c.pump()) for c in conns]
            await asyncio.sleep(1)
            rss1 = rss_kib(server.pid)
            alive = sum(1 for p in pumps if not p.done())
            for c in conns:
                c.abort()
            for p in pumps:
                p.cancel()
            result[name] = {
                "sockets": len(conns), "connect_errors": len(errors),
                "attempts_per_socket": count, "outcomes": outcomes, "alive_after": alive,
                "seconds": round(seconds, 2), "rss_kib_0": rss0,
                "rss_kib_connected": rss_connected, "rss_kib_after": rss1,
                "kib_per_socket_total": round((rss1 - rss0) / max(1, len(conns)), 1),
                "kib_per_socket_subscriptions": round(
                    (rss1 - rss_connected) / max(1, len(conns)), 1)}
        finally:
            stop(server)
    return result


async def scenario_admission():
    """
    Row 6 (caps): connections in total and per address, requests in flight,
    messages per second.
    """
    result = {}
    server, port = start_server("--max-connections", "50", "--max-connections-per-ip", "20")
    try:
        conns = []
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            statuses = {}
            for _ in range(25):
                try:
                    conns.append(await ws_connect(port, source=source))
                    statuses["101"] = statuses.get("101", 0) + 1
                except UpgradeRefused as e:
                    statuses[str(e)] = statuses.get(str(e), 0) + 1
            result["connections_from_" + source] = statuses
        for c in conns:
            c.abort()
        await asyncio.sleep(0.5)
        try:
            c = await ws_connect(port, source="127.0.0.3")
            result["after_closing_all"] = "101"
            c.abort()
        except UpgradeRefused as e:
            result["after_closing_all"] = str(e)
    finally:
        stop(server)
    server, port = start_server()
    try:
        # Requests in flight: noack is never answered (2000 allowed, 10 s ack timeout).
        conn = await ws_connect(port)
        def send_noacks(first, n):
            conn.writer.write(b"".join(frame(json.dumps(
                {"event": "noack", "data": i, "cid": first + i})) for i in range(n)))

        first_sent = time.monotonic()
        send_noacks(100, 1500)
        await asyncio.sleep(1.2)
        send_noacks(2000, 600)
        refused = {}
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            try:
                text = await asyncio.wait_for(conn.recv(), 0.5)
            except asyncio.TimeoutError:
                break
            if text is None:
                break
            message = json.loads(text)
            error = message.get("error") if isinstance(message, dict) else None
            if error:
                key = "{}: {}".format(error.get("name"), error.get("message"))
                refused[key] = refused.get(key, 0) + 1
        echo = await call(conn, "echo", "x")
        # Once ack_timeout (10 s) has passed, the unanswered ones no longer count.
        await asyncio.sleep(max(0, first_sent + 10.5 - time.monotonic()))
        later = await call(conn, "echo", "x")
        result["inflight"] = {"sent": 2100, "refusals": refused,
                              "echo_meanwhile": echo and (echo.get("error") or echo.get("data")),
                              "close_code": conn.close_code,
                              "echo_after_ack_timeout": later and (
                                  later.get("error") or later.get("data"))}
        conn.abort()
        # Messages per second: 3000 echo requests in one write.
        conn = await ws_connect(port)
        conn.writer.write(b"".join(frame(json.dumps({"event": "echo", "data": i, "cid": 10 + i}))
                                   for i in range(3000)))
        t0 = time.monotonic()
        replies = 0
        while True:
            text = await asyncio.wait_for(conn.recv(), 10)
            if text is None:
                break
            replies += 1
        result["burst_3000"] = {"replies_before_close": replies, "close_code": conn.close_code,
                                "closed_after_s": round(conn.closed_at - t0, 3)}
        conn.abort()
        return result
    finally:
        stop(server)


def batch_of(n_events=None, size=None):
    """A JSON batch of echo requests: C{n_events} of them, or as many as fit in C{size}."""
    parts, total, i = [], 2, 0
    while True:
        item = json.dumps({"event": "echo", "data": i, "cid": 10 + i}, separators=(",", ":"))
        if n_events is not None and i >= n_events:
            break
        if size is not None and total + len(item) + 1 > size:
            break
        parts.append(item)
        total += len(item) + 1
        i += 1
    return "[" + ",".join(parts) + "]", i


async def scenario_batch(repeats=5):
    """
    Row 6 (batches): a 1 MiB batch (closed 4101) and a batch of 2000 events
    (the largest allowed), C{repeats} times each, 1 s apart; a normal client
    meanwhile.
    """
    server, port = start_server()
    result = {}
    try:
        await asyncio.sleep(1)
        big, big_n = batch_of(size=1024 * 1024 - 64)
        top, top_n = batch_of(n_events=2000)
        for name, text, n in [("batch_1MiB", big, big_n), ("batch_2000", top, top_n)]:
            probe = start_probe(port, repeats + 1.5)
            await asyncio.sleep(0.75)
            runs = []
            for _ in range(repeats):
                conn = await ws_connect(port)
                t0 = time.monotonic()
                conn.writer.write(frame(text))
                replies = 0
                while replies < n:
                    try:
                        got = await asyncio.wait_for(conn.recv(), 10)
                    except asyncio.TimeoutError:
                        break
                    if got is None:
                        break
                    replies += got.count('"rid"')
                runs.append({"replies": replies, "close_code": conn.close_code,
                             "done_after_ms": ms(time.monotonic() - t0)})
                conn.abort()
                await asyncio.sleep(max(0, 1 - (time.monotonic() - t0)))
            result[name] = {"events": n, "bytes": len(text), "runs": runs,
                            "probe": probe_result(probe)}
        return result
    finally:
        stop(server)


async def scenario_slow_reader(size=64 * 1024, count=600):
    """
    Row 8: a subscriber that stops reading while the server publishes
    messages of C{size} characters to its channel (at most C{count}, 10 at a
    time, until the server cuts it off); then it reads.
    """
    server, port = start_server(app=BENCH_APP)
    try:
        await asyncio.sleep(0.5)
        rss0 = rss_kib(server.pid)
        # The subscriber: a blocking socket with a small receive buffer.
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sub = BlockingConn(sock)
        sub.upgrade()
        sub.request({"event": "#handshake", "data": {"authToken": None}, "cid": 1})
        reply = sub.request({"event": "#subscribe", "data": {"channel": "big"}, "cid": 2})
        assert reply.get("error") is None, reply
        # From here the subscriber reads nothing.
        publisher = await ws_connect(port)
        sampler = RssSampler(server.pid)
        sampler.start()
        t0 = time.monotonic()
        # Publish in steps of 10 messages, 20 ms apart, until the server cuts
        # the subscriber off (so that the server writes what it can meanwhile).
        published, closes = 0, []
        while published < count and not closes:
            await call(publisher, "blast", {"channel": "big", "count": 10, "size": size})
            published += 10
            await asyncio.sleep(0.02)
            closes = (await call(publisher, "serverCloses") or {}).get("data") or []
        cut_s = time.monotonic() - t0
        peak = sampler.stop()
        # Now the subscriber reads what it can.
        sock.settimeout(5)
        messages, nbytes, ending = 0, 0, None
        while True:
            try:
                opcode, payload = sub.read_frame()
            except EOFError:
                ending = "EOF without a close frame (1006)"
                break
            except ConnectionResetError:
                ending = "connection reset (ECONNRESET) without a close frame (1006)"
                break
            except socket.timeout:
                ending = "still open, nothing more after 5 s"
                break
            if opcode == 0x8:
                ending = "close frame {}".format(close_code(payload))
                break
            messages += 1
            nbytes += len(payload)
        sock.close()
        publisher.abort()
        await asyncio.sleep(0.3)
        return {"published": published, "message_chars": size, "server_closes": closes,
                "server_closed_within_s": round(cut_s, 2),
                "subscriber_read_messages": messages, "subscriber_read_bytes": nbytes,
                "subscriber_saw": ending, "rss_kib_before": rss0, "rss_kib_peak": peak,
                "rss_kib_after": rss_kib(server.pid)}
    finally:
        stop(server)


async def scenario_backlog(n=1000, timeout=20):
    """
    Row 9: C{n} connections opened at once against the default C{--listen}
    (backlog 1024) and against an explicit C{backlog=50}; how many complete
    the SocketCluster handshake within C{timeout} seconds, and when.
    """
    result = {}
    for name, listen in [("default", "tcp:{port}:interface=127.0.0.1"),
                         ("backlog_50", "tcp:{port}:interface=127.0.0.1:backlog=50")]:
        server, port = start_server(listen=listen)
        try:
            await asyncio.sleep(0.5)

            async def one():
                t0 = time.monotonic()
                conn = await ws_connect(port, timeout=timeout)
                return time.monotonic() - t0, conn, conn.connected_at - t0

            t0 = time.monotonic()
            tasks = [asyncio.ensure_future(one()) for _ in range(n)]
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            times, tcp, errors = [], [], {}
            for task in done:
                if task.exception() is not None:
                    key = repr(task.exception())[:60]
                    errors[key] = errors.get(key, 0) + 1
                    continue
                t, conn, connect_s = task.result()
                times.append(t)
                tcp.append(connect_s)
                conn.abort()
            over_1s = sum(1 for t in times if t > 1)
            result[name] = {
                "opened": n, "handshaken": len(times), "not_within_s": len(pending),
                "errors": errors, "all_done_s": round(max(times), 2) if times else None,
                "p50_s": round(pct(times, 50), 3) if times else None,
                "p99_s": round(pct(times, 99), 3) if times else None,
                "over_1s": over_1s, "wall_s": round(time.monotonic() - t0, 2),
                "tcp_connect_p50_s": round(pct(tcp, 50), 3) if tcp else None,
                "tcp_connect_max_s": round(max(tcp), 3) if tcp else None,
                "tcp_connect_over_1s": sum(1 for t in tcp if t > 1)}
        finally:
            stop(server)
    return result


SCENARIOS = {"baseline": scenario_baseline, "upgrade": scenario_upgrade,
             "idle": scenario_idle, "flood": scenario_flood, "shutdown": scenario_shutdown,
             "memory": scenario_memory, "errors": scenario_errors,
             "auth_async": scenario_auth_async, "expiry": scenario_expiry,
             "authkey": scenario_authkey, "port_taken": scenario_port_taken,
             "channels": scenario_channels, "admission": scenario_admission,
             "batch": scenario_batch, "slow_reader": scenario_slow_reader,
             "backlog": scenario_backlog}
ORDER = ["baseline", "upgrade", "idle", "flood", "shutdown", "memory", "errors", "auth_async",
         "expiry", "authkey", "port_taken", "channels", "admission", "batch", "slow_reader",
         "backlog"]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        result = asyncio.run(asyncio.wait_for(
            probe(int(sys.argv[2]), float(sys.argv[3])), float(sys.argv[3]) + 30))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--skip", action="append", choices=sorted(SCENARIOS), default=[])
    parser.add_argument("--connections", type=int, default=10000)
    args = parser.parse_args()
    raise_nofile()
    print("date: {} UTC, RLIMIT_NOFILE {}, cpus {}".format(
        time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        resource.getrlimit(resource.RLIMIT_NOFILE), os.cpu_count()), flush=True)
    for name in [n for n in args.only or ORDER if n not in args.skip]:
        t0 = time.monotonic()
        # The machine's load average (1 min) as the scenario starts: others'
        # work on the same cores shows in the latencies.
        load = round(os.getloadavg()[0], 2)
        kwargs = {"n": args.connections} if name == "memory" else {}
        try:
            result = asyncio.run(asyncio.wait_for(SCENARIOS[name](**kwargs), 60))
        except Exception as e:
            result = {"error": repr(e)}
        print(json.dumps({"scenario": name, "seconds": round(time.monotonic() - t0, 1),
                          "load_before": load, "result": result}), flush=True)


if __name__ == "__main__":
    main()
