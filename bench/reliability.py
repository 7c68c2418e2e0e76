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

Scenarios (C{--only NAME} to run one; all of them by default):

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

Every run is bounded (each scenario well under 60 s, the whole under
5 minutes); every process started is stopped.  Usage::

    .venv/bin/python bench/reliability.py [--only upgrade] [--connections 10000]
"""

import argparse
import asyncio
import base64
import json
import os
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


def start_server(*extra):
    port = free_port()
    directory = tempfile.mkdtemp(prefix="scserver-rel-")
    argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "scserver",
            "--listen", "tcp:{}:interface=127.0.0.1".format(port),
            "--app", "tests.interop_app:setup", "--auth-key", AUTH_KEY] + list(extra)
    env = dict(os.environ, PYTHONPATH=ROOT)
    log = open(os.path.join(directory, "twistd.log"), "wb")
    server = subprocess.Popen(argv, cwd=directory, env=env, stdout=log, stderr=log,
                              preexec_fn=raise_nofile)
    log.close()  # the child has its own descriptor
    server.directory = directory
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("server exited with {}".format(server.returncode))
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
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
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
        self.close_code = None
        self.closed_at = None
        self.cid = 1

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


async def ws_connect(port, handshake=True, timeout=20):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, limit=2 ** 20), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").format(PATH, key).encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise RuntimeError("upgrade refused: {!r}".format(head[:40]))
    conn = Conn(reader, writer)
    if handshake:
        conn.send(json.dumps({"event": "#handshake", "data": {"authToken": None}, "cid": 1}))
        while True:
            text = await asyncio.wait_for(conn.recv(), timeout)
            if text is None:
                raise RuntimeError("closed during handshake ({})".format(conn.close_code))
            if '"rid":1' in text:
                break
        conn.cid = 2
    return conn


async def connect_many(port, n, handshake=True, batch=200):
    conns, errors = [], []
    for start in range(0, n, batch):
        results = await asyncio.gather(
            *[ws_connect(port, handshake) for _ in range(min(batch, n - start))],
            return_exceptions=True)
        for r in results:
            (errors if isinstance(r, BaseException) else conns).append(r)
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
    latencies, errors = [], 0
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
        await asyncio.sleep(0.005)
    conn.abort()
    return {"requests": len(latencies), "errors": errors,
            "p50_ms": ms(pct(latencies, 50)), "p99_ms": ms(pct(latencies, 99)),
            "max_ms": ms(max(latencies) if latencies else None)}


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
        tasks = []
        for start in range(0, n, 100):
            tasks += [asyncio.ensure_future(raw()) for _ in range(100)]
            tasks += [asyncio.ensure_future(ws()) for _ in range(100)]
            await asyncio.sleep(0.05)
        opened = time.monotonic() - t_start
        await asyncio.sleep(1)
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

        return {"opened_in_s": round(opened, 2), "tcp": summary(raws), "ws": summary(wss),
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
        conns, errors = await connect_many(port, n)
        pumps = [asyncio.ensure_future(c.pump()) for c in conns]
        await asyncio.sleep(1)
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
        conns, errors = await connect_many(port, n, batch=250)
        connect_s = time.monotonic() - t0
        pumps = [asyncio.ensure_future(c.pump()) for c in conns]
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


SCENARIOS = {"baseline": scenario_baseline, "upgrade": scenario_upgrade, "idle": scenario_idle, "flood": scenario_flood,
             "shutdown": scenario_shutdown, "memory": scenario_memory}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        result = asyncio.run(asyncio.wait_for(
            probe(int(sys.argv[2]), float(sys.argv[3])), float(sys.argv[3]) + 30))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--connections", type=int, default=10000)
    args = parser.parse_args()
    raise_nofile()
    print("date: {} UTC, RLIMIT_NOFILE {}, cpus {}".format(
        time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        resource.getrlimit(resource.RLIMIT_NOFILE), os.cpu_count()), flush=True)
    for name in args.only or ["baseline", "upgrade", "idle", "flood", "shutdown", "memory"]:
        t0 = time.monotonic()
        kwargs = {"n": args.connections} if name == "memory" else {}
        try:
            result = asyncio.run(asyncio.wait_for(SCENARIOS[name](**kwargs), 90))
        except Exception as e:
            result = {"error": repr(e)}
        print(json.dumps({"scenario": name, "seconds": round(time.monotonic() - t0, 1),
                          "result": result}), flush=True)


if __name__ == "__main__":
    main()
