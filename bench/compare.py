"""
scserver on CPython, scserver on PyPy and the Node original
(socketcluster-server 14.7.2) under the same load, alternately in one run.

Usually run through C{bash bench/run.sh}, which installs what this needs
first; then, from the repository root (standard library only)::

    .venv/bin/python bench/compare.py [--rounds 3] [--servers cpython,pypy,node]
        [--seconds 4] [--rpc-rate 2000] [--fanout-rate 10] [--pubsub-rate 2000]
    .venv/bin/python bench/compare.py --profile rpc|pubsub-many|fanout|connect

Every round starts each server in turn (the order rotates from round to
round), pinned to one core, with the load generator (C{bench/sc14/gen.js},
Node C{ws}, raw SocketCluster protocol 1 frames) pinned to another; it gives
every server the same warm-up (C{gen.js warmup}, 3 s of handshakes, echo,
subscribe and publish), then runs the scenarios in this order against the same
process, each in a generator process of its own:

- C{connect}: 2000 handshakes, 50 in flight (handshakes/s); the 2000
  connections then stay open and idle for a second and the server's RSS
  growth over its RSS just before, divided by 2000, is the memory per idle
  connection;
- C{rpc}: 50 connections, C{echo} emitted with a cid and acked with the data:
  a fixed rate (open loop, C{--rpc-rate} requests/s in all) for latency, then
  closed loop, one request in flight per connection (acks/s);
- C{fanout}: 1000 subscribers on one channel, one publisher: a fixed rate
  (C{--fanout-rate} publications/s, each 1000 deliveries), then as fast as
  the deliveries come back, at most 20 publications not fully delivered
  (deliveries/s);
- C{pubsub-many}: 1000 channels with one subscriber connection each, 10
  publisher connections publishing round-robin over them: a fixed rate
  (C{--pubsub-rate} messages/s), then at most 2000 messages not yet
  delivered (messages/s).

Each of C{rpc}, C{fanout}, C{pubsub-many} first runs 1 s at full speed,
unmeasured (the scenario's own warm-up, the same for every server), and every
phase is C{--seconds} long and ends by waiting for every ack and delivery:
what is missing is reported as lost, and the run fails loudly if any is.
Latency is measured in the generator from a timestamp in the payload.  The
server's CPU (C{/proc/PID/stat}) is sampled around each measured phase, its
RSS (C{/proc/PID/status}) at the idle point and at its peak.  Besides the
rates per second of wall-clock time, the rates per second of the server's own
CPU time are printed: on a shared machine a server pinned to a core does not
always get the whole core.  Every generator run gives up after 58 s and is
killed after 60 s.

It prints every round, then the medians and a Markdown table of the ratios to
Node with the targets, ready to paste into C{bench/RESULTS.md}.  At its start
it copies C{scserver/} to a temporary directory that the scserver servers
import it from: every round measures the same code even when the checkout is
being edited meanwhile (the printed fingerprint names that code).

scserver runs as C{twistd -n scserver --app bench_app:setup
--protocol-version 1} with the per-socket budgets off
(C{--max-messages-per-second none --max-bytes-per-second none}): a load
generator is exactly the flooder they exist to stop.  Every other option is
at its default; its log goes to a file.

C{--profile SCENARIO} starts only scserver on CPython, warms it up, profiles
the scenario's closed-loop phase (for C{connect}: the handshakes) and prints
where the time went by layer (autobahn, json, scserver engine/socket/exchange,
Twisted reactor, system calls, ...) and the top functions: sampled by
C{py-spy record} when py-spy is installed (C{.venv/bin/pip install py-spy}),
else with cProfile inside the server (C{SCSERVER_BENCH_PROFILE}, see
C{bench_app.py}), which slows it down but keeps the shares readable.
"""

import argparse
import hashlib
import json
import os
import platform
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NODE_DIR = os.path.join(HERE, "sc14")
GEN = os.path.join(NODE_DIR, "gen.js")
NODE_SERVER = os.path.join(NODE_DIR, "server.js")
TWISTD = "from twisted.scripts.twistd import run; run()"
PYTHONS = {
    "cpython": os.path.join(ROOT, ".venv", "bin", "python"),
    "pypy": os.path.join(ROOT, ".venv-pypy", "bin", "python"),
}
LABELS = {"cpython": "scserver, CPython", "pypy": "scserver, PyPy", "node": "socketcluster-server 14.7.2"}
TICK = os.sysconf("SC_CLK_TCK")
GEN_TIMEOUT = 60


# --- processes -------------------------------------------------------------

def cores():
    """The two cores the server and the generator get (None: no pinning)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def pinned(core):
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited with {}".format(process.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on {} after {} s".format(port, timeout))


def server_argv(kind, port):
    if kind == "node":
        return ["node", NODE_SERVER, str(port)]
    return [PYTHONS[kind], "-c", TWISTD, "-n", "--pidfile=", "scserver",
            "--listen", "tcp:{}:interface=127.0.0.1".format(port),
            "--app", "bench_app:setup", "--protocol-version", "1",
            # A load generator is exactly the flooder the per-socket budgets stop.
            "--max-messages-per-second", "none", "--max-bytes-per-second", "none"]


SNAPSHOT = {"path": None}
"""Where L{snapshot} copied C{scserver/}, once it has."""


def snapshot():
    """
    Copy C{scserver/} to a temporary directory that the scserver servers
    import it from, so that every round of a run measures the same code even
    if the checkout changes meanwhile.

    @return: a fingerprint of the copy (SHA-256 of its paths and contents).
    """
    directory = tempfile.mkdtemp(prefix="scserver-snapshot-")
    shutil.copytree(os.path.join(ROOT, "scserver"), os.path.join(directory, "scserver"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha256()
    for path, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(path, name)
            digest.update(os.path.relpath(full, directory).encode())
            with open(full, "rb") as f:
                digest.update(f.read())
    SNAPSHOT["path"] = directory
    return digest.hexdigest()[:12]


def start_server(kind, directory, core, env=None):
    port = free_port()
    log = open(os.path.join(directory, kind + ".log"), "wb")
    path = [HERE, ROOT] if SNAPSHOT["path"] is None else [SNAPSHOT["path"], HERE, ROOT]
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(path), **(env or {}))
    process = subprocess.Popen(server_argv(kind, port), cwd=directory, stdout=log,
                               stderr=subprocess.STDOUT, env=environ, preexec_fn=pinned(core))
    log.close()
    wait_port(port, process)
    return process, "ws://127.0.0.1:{}/socketcluster/".format(port)


def stop(process, timeout=20):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid):
    """User + system CPU time of C{pid}, from C{/proc/PID/stat}."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    """Resident set size of C{pid} in KiB, from C{/proc/PID/status}."""
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for {}".format(pid))


class PeakRSS(threading.Thread):
    """Samples a process's RSS every 50 ms, keeping the peak."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.05):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, RuntimeError):
                return


def generate(scenario, url, options, server, core, on_mark=None):
    """
    Run C{gen.js SCENARIO URL OPTIONS} pinned to C{core}; sample the
    server's CPU around every measured phase.

    @return: the generator's result, with C{cpu} (server CPU in % of one
        core) and C{gen_cpu} (the generator's) for every phase.
    """
    gen = subprocess.Popen(["node", GEN, scenario, url, json.dumps(options)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                           preexec_fn=pinned(core))
    killer = threading.Timer(GEN_TIMEOUT, gen.kill)
    killer.start()
    marks = {}
    cpu = {}
    result = None
    try:
        for line in gen.stdout:
            message = json.loads(line)
            if "error" in message:
                raise RuntimeError("gen.js {}: {}".format(scenario, message["error"]))
            if "result" in message:
                result = message["result"]
            elif message.get("mark") == "start":
                marks[message["phase"]] = (time.monotonic(), cpu_seconds(server.pid),
                                           cpu_seconds(gen.pid))
                if on_mark:
                    on_mark(message["phase"], "start")
            elif message.get("mark") == "end":
                t0, s0, g0 = marks[message["phase"]]
                elapsed = time.monotonic() - t0
                cpu[message["phase"]] = (
                    round(100 * (cpu_seconds(server.pid) - s0) / elapsed, 1),
                    round(100 * (cpu_seconds(gen.pid) - g0) / elapsed, 1))
                if on_mark:
                    on_mark(message["phase"], "end")
        gen.wait()
    finally:
        killer.cancel()
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    if gen.returncode != 0 or result is None:
        raise RuntimeError("gen.js {} failed (exit {})".format(scenario, gen.returncode))
    for phase, (server_cpu, gen_cpu) in cpu.items():
        if isinstance(result.get(phase), dict):
            result[phase]["cpu"] = server_cpu
            result[phase]["gen_cpu"] = gen_cpu
        else:
            result["cpu"], result["gen_cpu"] = server_cpu, gen_cpu
    return result


# --- one server, all scenarios -----------------------------------------------

def run_server(kind, options, server_core, gen_core):
    """Start C{kind}, warm it up, run every scenario; return the figures."""
    directory = tempfile.mkdtemp(prefix="scserver-compare-")
    process = None
    try:
        process, url = start_server(kind, directory, server_core)
        peak = PeakRSS(process.pid)
        peak.start()
        figures = {"rss_start_kib": rss_kib(process.pid)}
        generate("warmup", url, {"seconds": options.warmup}, process, gen_core)
        time.sleep(0.5)
        before = rss_kib(process.pid)
        idle = {}
        connect = generate_connect(url, options, process, gen_core, idle)
        figures["connect"] = connect
        figures["idle_bytes_per_conn"] = (idle["rss_kib"] - before) * 1024 / options.conns
        figures["rss_before_idle_kib"] = before
        figures["rss_idle_kib"] = idle["rss_kib"]
        common = {"seconds": options.seconds, "warmup": 1}
        figures["rpc"] = generate("rpc", url, dict(common, conns=50, rate=options.rpc_rate),
                                  process, gen_core)
        figures["fanout"] = generate("fanout", url, dict(common, subscribers=options.subscribers,
                                                        rate=options.fanout_rate),
                                     process, gen_core)
        figures["pubsub-many"] = generate("pubsub-many", url, dict(
            common, channels=options.channels, publishers=10, rate=options.pubsub_rate),
            process, gen_core)
        peak.done.set()
        figures["rss_peak_kib"] = peak.peak
        if process.poll() is not None:
            raise RuntimeError("{} exited during the run".format(kind))
        return figures
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def generate_connect(url, options, process, gen_core, idle, on_mark=None):
    """The C{connect} scenario; the server's RSS at the idle point in C{idle}."""
    gen = subprocess.Popen(
        ["node", GEN, "connect", url, json.dumps({"conns": options.conns, "concurrency": 50})],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pinned(gen_core))
    killer = threading.Timer(GEN_TIMEOUT, gen.kill)
    killer.start()
    result = None
    try:
        for line in gen.stdout:
            message = json.loads(line)
            if "error" in message:
                raise RuntimeError("gen.js connect: {}".format(message["error"]))
            if "result" in message:
                result = message["result"]
            elif message.get("mark") == "start":
                t0, s0 = time.monotonic(), cpu_seconds(process.pid)
                if on_mark:
                    on_mark(message["phase"], "start")
            elif message.get("mark") == "end":
                cpu = round(100 * (cpu_seconds(process.pid) - s0) / (time.monotonic() - t0), 1)
                if on_mark:
                    on_mark(message["phase"], "end")
            elif message.get("phase") == "idle":
                # Idle for a second: what the connections cost at rest.
                time.sleep(1.0)
                idle["rss_kib"] = rss_kib(process.pid)
                gen.stdin.write("go\n")
                gen.stdin.flush()
        gen.wait()
    finally:
        killer.cancel()
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    if gen.returncode != 0 or result is None or "rss_kib" not in idle:
        raise RuntimeError("gen.js connect failed (exit {})".format(gen.returncode))
    result["cpu"] = cpu
    return result


# --- figures -----------------------------------------------------------------

# (key, label, unit, extract, higher is better, target CPython, target PyPy)
METRICS = [
    ("rpc", "rpc acks/s", "acks/s", lambda f: f["rpc"]["max"]["acks_per_s"], True, 0.5, 1.2),
    ("fanout", "fan-out deliveries/s", "deliveries/s",
     lambda f: f["fanout"]["max"]["per_s"], True, 3.5, 6.0),
    ("pubsub", "pubsub-many msgs/s", "msgs/s",
     lambda f: f["pubsub-many"]["max"]["per_s"], True, 0.6, 1.2),
    ("connect", "handshakes/s", "handshakes/s",
     lambda f: f["connect"]["handshakes_per_s"], True, 1.0, 1.0),
    ("memory", "idle memory per connection", "bytes",
     lambda f: f["idle_bytes_per_conn"], False, 0.5, None),
    ("rpc_p50", "p50 latency, rpc at a fixed rate", "ms",
     lambda f: f["rpc"]["fixed"]["p50"], False, 2.0, 1.5),
    ("fanout_p50", "p50 latency, fan-out at a fixed rate", "ms",
     lambda f: f["fanout"]["fixed"]["p50"], False, 2.0, 1.5),
    ("pubsub_p50", "p50 latency, pubsub-many at a fixed rate", "ms",
     lambda f: f["pubsub-many"]["fixed"]["p50"], False, 2.0, 1.5),
    # The same throughputs per second of the server's own CPU time: on a
    # shared machine the server does not always get its whole core.
    ("rpc_cpu", "rpc acks per server CPU-second", "acks/CPU-s",
     lambda f: per_cpu(f["rpc"]["max"]["acks_per_s"], f["rpc"]["max"]["cpu"]), True, None, None),
    ("fanout_cpu", "fan-out deliveries per server CPU-second", "deliveries/CPU-s",
     lambda f: per_cpu(f["fanout"]["max"]["per_s"], f["fanout"]["max"]["cpu"]), True, None, None),
    ("pubsub_cpu", "pubsub-many msgs per server CPU-second", "msgs/CPU-s",
     lambda f: per_cpu(f["pubsub-many"]["max"]["per_s"], f["pubsub-many"]["max"]["cpu"]),
     True, None, None),
    ("connect_cpu", "handshakes per server CPU-second", "handshakes/CPU-s",
     lambda f: per_cpu(f["connect"]["handshakes_per_s"], f["connect"]["cpu"]), True, None, None),
]


def per_cpu(rate, cpu_percent):
    """C{rate} per second of the server's CPU time (C{cpu_percent} of one core)."""
    return rate / max(cpu_percent, 0.1) * 100

SECONDARY = [
    ("rpc p99 at max (ms)", lambda f: f["rpc"]["max"]["p99"]),
    ("rpc p50 at max (ms)", lambda f: f["rpc"]["max"]["p50"]),
    ("rpc p99 at the fixed rate (ms)", lambda f: f["rpc"]["fixed"]["p99"]),
    ("fan-out p50 at max (ms)", lambda f: f["fanout"]["max"]["p50"]),
    ("fan-out p99 at max (ms)", lambda f: f["fanout"]["max"]["p99"]),
    ("fan-out p99 at the fixed rate (ms)", lambda f: f["fanout"]["fixed"]["p99"]),
    ("pubsub-many p50 at max (ms)", lambda f: f["pubsub-many"]["max"]["p50"]),
    ("pubsub-many p99 at max (ms)", lambda f: f["pubsub-many"]["max"]["p99"]),
    ("pubsub-many p99 at the fixed rate (ms)", lambda f: f["pubsub-many"]["fixed"]["p99"]),
    ("server CPU %, rpc max", lambda f: f["rpc"]["max"]["cpu"]),
    ("generator CPU %, rpc max", lambda f: f["rpc"]["max"]["gen_cpu"]),
    ("server CPU %, fan-out max", lambda f: f["fanout"]["max"]["cpu"]),
    ("generator CPU %, fan-out max", lambda f: f["fanout"]["max"]["gen_cpu"]),
    ("server CPU %, pubsub-many max", lambda f: f["pubsub-many"]["max"]["cpu"]),
    ("generator CPU %, pubsub-many max", lambda f: f["pubsub-many"]["max"]["gen_cpu"]),
    ("server CPU %, rpc fixed rate", lambda f: f["rpc"]["fixed"]["cpu"]),
    ("server CPU %, fan-out fixed rate", lambda f: f["fanout"]["fixed"]["cpu"]),
    ("server CPU %, pubsub-many fixed rate", lambda f: f["pubsub-many"]["fixed"]["cpu"]),
    ("server CPU %, connect", lambda f: f["connect"]["cpu"]),
    ("RSS at start (MiB)", lambda f: f["rss_start_kib"] / 1024),
    ("RSS before the 2000 idle connections (MiB)", lambda f: f["rss_before_idle_kib"] / 1024),
    ("RSS with 2000 idle connections (MiB)", lambda f: f["rss_idle_kib"] / 1024),
    ("peak RSS (MiB)", lambda f: f["rss_peak_kib"] / 1024),
]


def lost(figures):
    """Every lost ack or delivery, unexpected close and error reply of a run."""
    total = figures["connect"]["lost"] + figures["connect"]["errors"]
    for scenario in ("rpc", "fanout", "pubsub-many"):
        r = figures[scenario]
        total += r["errors"] + r["unexpected_closes"]
        total += sum(r[p]["lost"] for p in ("fixed", "max") if p in r)
    return total


def fmt(x):
    if x is None:
        return "n/a"
    if x >= 100:
        return "{:,.0f}".format(x)
    if x >= 10:
        return "{:.1f}".format(x)
    return "{:.2f}".format(x)


def verdict(ratio, target, higher):
    if target is None:
        return "{:.2f}×".format(ratio)
    met = ratio >= target if higher else ratio <= target
    return "{:.2f}× ({} {}×: {})".format(ratio, "≥" if higher else "≤", target,
                                        "met" if met else "**not met**")


def report(results, kinds, options, started):
    medians = {}
    for kind in kinds:
        medians[kind] = {key: statistics.median(extract(f) for f in results[kind])
                         for key, _, _, extract, _, _, _ in METRICS}
        medians[kind].update({label: statistics.median(extract(f) for f in results[kind])
                              for label, extract in SECONDARY})
    print()
    print("## Results ({} rounds, medians; {:.0f} s in all)".format(
        options.rounds, time.monotonic() - started))
    print()
    print("| scenario | " + " | ".join(LABELS[k] for k in kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for key, label, unit, _, _, _, _ in METRICS:
        print("| {} ({}) | {} |".format(label, unit, " | ".join(fmt(medians[k][key]) for k in kinds)))
    for label, _ in SECONDARY:
        print("| {} | {} |".format(label, " | ".join(fmt(medians[k][label]) for k in kinds)))
    if "node" in kinds:
        others = [k for k in kinds if k != "node"]
        print()
        print("Ratios to Node (medians of {} rounds run alternately in one run; "
              "fixed rates: rpc {} requests/s, fan-out {} publications/s × {} subscribers, "
              "pubsub-many {} msgs/s):".format(options.rounds, options.rpc_rate, options.fanout_rate,
                                               options.subscribers, options.pubsub_rate))
        print()
        names = [LABELS[k].split(", ")[1] for k in others]
        print("| scenario | " + " | ".join(
            "{} / Node (target) | {} per round".format(name, name) for name in names) + " |")
        print("|---|" + "---|---|" * len(others))
        for key, label, _, extract, higher, target_c, target_p in METRICS:
            cells = []
            for kind in others:
                target = target_c if kind == "cpython" else target_p
                ratio = medians[kind][key] / medians["node"][key]
                cells.append(verdict(ratio, target, higher))
                # The same round's figures: how far the machine's noise moves the ratio.
                paired = sorted(extract(a) / extract(b)
                                for a, b in zip(results[kind], results["node"]))
                cells.append("{:.2f}–{:.2f}".format(paired[0], paired[-1]))
            print("| {} | {} |".format(label, " | ".join(cells)))
    print()
    losses = {k: [lost(f) for f in results[k]] for k in kinds}
    print("Lost acks/deliveries, unexpected closes and error replies per round: " + "; ".join(
        "{} {}".format(LABELS[k], losses[k]) for k in kinds))
    return 0 if all(n == 0 for v in losses.values() for n in v) else 1


def versions(kinds):
    lines = []
    for kind in kinds:
        if kind == "node":
            continue
        out = subprocess.run([PYTHONS[kind], "-c",
                              "import sys, platform, twisted, autobahn; "
                              "print(platform.python_implementation(), "
                              "sys.version.replace(chr(10), ' ') + ',', "
                              "'Twisted', twisted.__version__ + ',', 'autobahn', autobahn.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
        lines.append("{}: {}".format(LABELS[kind], out))

    def package_version(name):
        with open(os.path.join(NODE_DIR, "node_modules", name, "package.json")) as f:
            return json.load(f)["version"]

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    lines.append("Node {}, socketcluster-server {}, ws {} (generator)".format(
        node, package_version("socketcluster-server"), package_version("ws")))
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "scserver"],
                           capture_output=True, text=True).stdout.strip()
    lines.append("scserver commit {}{}".format(
        commit or "?", " plus uncommitted changes to scserver/" if dirty else ""))
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    lines.append("machine: {}, {} cores ({} usable here), {} {}".format(
        model, os.cpu_count(), len(os.sched_getaffinity(0)), platform.system(), platform.release()))
    server_core, gen_core = cores()
    lines.append("pinning: server on core {}, generator on core {}".format(server_core, gen_core))
    return lines


# --- profile -----------------------------------------------------------------

LAYERS = [
    ("autobahn (WebSocket framing, masking, UTF-8)", ("autobahn/",)),
    ("json (encode/decode)", ("json/", "_json", "orjson", "ujson")),
    ("scserver engine (scserver/_engine.py)", ("scserver/_engine.py",)),
    ("scserver codec (scserver/codec.py)", ("scserver/codec.py",)),
    ("scserver socket (scserver/socket.py)", ("scserver/socket.py",)),
    ("scserver transport (scserver/_transport.py)", ("scserver/_transport.py",)),
    ("scserver exchange/broker/middleware", ("scserver/exchange.py", "scserver/brokers/",
                                             "scserver/middleware.py")),
    ("scserver, other modules", ("scserver/",)),
    ("Twisted logger (twisted/logger)", ("twisted/logger/",)),
    ("Twisted reactor and TCP (twisted/internet, twisted/python)",
     ("twisted/internet/", "twisted/python/")),
    ("Twisted, other", ("twisted/",)),
    ("zope.interface / other packages", ("site-packages/",)),
    ("bench app", ("bench_app.py",)),
    ("pprint (autobahn's debug log of its options, per connection)", ("pprint.py",)),
]
BUILTIN_LAYERS = [
    ("system calls (send/recv/epoll)", ("send", "recv", "epoll", "poll", "'write'", "'read'",
                                        "'modify'", "'register'", "'unregister'")),
    ("json (encode/decode)", ("json", "encode", "decode", "dumps", "loads")),
]


SYSCALL_FRAMES = ("untilConcludes", "EPollReactor.doPoll", "Connection.doRead",
                  "Connection.writeSomeData")
"""Twisted frames whose own samples (py-spy) are the system call they make."""


def layer_of(filename, name):
    if name in SYSCALL_FRAMES:
        return BUILTIN_LAYERS[0][0]
    if filename == "~":
        for layer, needles in BUILTIN_LAYERS:
            if any(n in name for n in needles):
                return layer
        return "other builtins (str, bytes, dict, ...)"
    for layer, needles in LAYERS:
        if any(n in filename for n in needles):
            return layer
    return "Python standard library and other"


def profile(options):
    """Profile scserver on CPython under one scenario; print the layers."""
    scenario = options.profile
    directory = tempfile.mkdtemp(prefix="scserver-profile-")
    stats_path = os.path.join(directory, "profile.pstats")
    samples_path = os.path.join(directory, "py-spy.txt")
    server_core, gen_core = cores()
    sampler = None if options.py_spy in (None, "", "none") else options.py_spy
    process = None
    spy = []
    try:
        env = None if sampler else {"SCSERVER_BENCH_PROFILE": stats_path}
        process, url = start_server("cpython", directory, server_core, env=env)
        generate("warmup", url, {"seconds": options.warmup}, process, gen_core)

        def on_mark(phase, mark):
            if phase not in ("max", "connect"):
                return
            if not sampler:
                process.send_signal(signal.SIGUSR1 if mark == "start" else signal.SIGUSR2)
            elif mark == "start":
                spy.append(subprocess.Popen(
                    [sampler, "record", "--pid", str(process.pid), "--rate", "500",
                     "--duration", str(max(1, int(options.seconds))), "--format", "raw",
                     "--output", samples_path, "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    preexec_fn=pinned(gen_core)))

        args = {"seconds": options.seconds, "warmup": 1}
        if scenario == "rpc":
            args["conns"] = 50
        result = generate_profiled(scenario, url, args, process, gen_core, on_mark)
        if spy:
            spy[0].wait(30)
        deadline = time.monotonic() + 10
        wanted = samples_path if sampler else stats_path
        while not os.path.exists(wanted) and time.monotonic() < deadline:
            time.sleep(0.1)
        if sampler:
            costs, unit = read_py_spy(samples_path), "samples of the server's busy time"
        else:
            costs, unit = read_cprofile(stats_path), "own time (tottime)"
    finally:
        if process is not None:
            stop(process)
        for proc in spy:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
    total = sum(costs.values()) or 1
    layers = {}
    for (filename, line, name), cost in costs.items():
        layer = layer_of(filename, name)
        layers[layer] = layers.get(layer, 0) + cost
    print("{} of scserver on CPython, {} ({}): {}".format(
        "py-spy" if sampler else "cProfile (it slows the server down: read the shares)",
        scenario, "2000 handshakes" if scenario == "connect" else
        "closed-loop phase, {:.0f} s".format(options.seconds), json.dumps(result.get("max", result))))
    print()
    print("| layer | share of {} |".format(unit))
    print("|---|---|")
    for layer, cost in sorted(layers.items(), key=lambda kv: -kv[1]):
        print("| {} | {:.1f} % |".format(layer, 100 * cost / total))
    print()
    print("Top functions ({}):".format(unit))
    print()
    print("| function | share |")
    print("|---|---|")
    functions = {}
    for (filename, _, name), cost in costs.items():
        functions[filename, name] = functions.get((filename, name), 0) + cost
    for (filename, name), cost in sorted(functions.items(), key=lambda kv: -kv[1])[:20]:
        where = filename.split("site-packages/")[-1].replace(ROOT + "/", "")
        print("| `{}` ({}) | {:.1f} % |".format(name, where, 100 * cost / total))
    return 0


def read_cprofile(path):
    """C{{(filename, line, function): own seconds}} from a pstats file."""
    stats = pstats.Stats(path)
    return {key: value[2] for key, value in stats.stats.items()}


def read_py_spy(path):
    """
    C{{(filename, line, function): samples}} of the innermost Python frame,
    from C{py-spy record --format raw} (collapsed stacks; time spent in C
    code counts for the Python function that called it).
    """
    costs = {}
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            leaf = stack.split(";")[-1]
            name, _, where = leaf.partition(" (")
            name = name or "(a frame py-spy could not name)"
            filename, _, number = where.rstrip(")").rpartition(":")
            key = (filename, number, name)
            costs[key] = costs.get(key, 0) + int(count)
    return costs


def generate_profiled(scenario, url, args, process, gen_core, on_mark):
    if scenario == "connect":
        return generate_connect(url, argparse.Namespace(conns=2000), process, gen_core, {},
                                on_mark=on_mark)
    return generate(scenario, url, args, process, gen_core, on_mark=on_mark)


# --- main --------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", default="cpython,pypy,node")
    parser.add_argument("--seconds", type=float, default=4,
                        help="length of every measured phase")
    parser.add_argument("--warmup", type=float, default=3,
                        help="seconds of the warm-up every server gets first")
    parser.add_argument("--conns", type=int, default=2000, help="connect: handshakes")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--rpc-rate", type=int, default=2000)
    parser.add_argument("--fanout-rate", type=int, default=10)
    parser.add_argument("--pubsub-rate", type=int, default=2000)
    parser.add_argument("--profile", choices=("rpc", "fanout", "pubsub-many", "connect"),
                        help="profile scserver on CPython under this scenario")
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    parser.add_argument("--py-spy", metavar="PATH",
                        default=shutil.which("py-spy") or (beside if os.path.exists(beside) else None),
                        help="with --profile: sample with this py-spy (default: py-spy on PATH "
                             "or beside this Python) instead of cProfile; none: cProfile")
    options = parser.parse_args()
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")):
        sys.exit("first: npm ci --prefix bench/sc14 (or bash bench/run.sh)")
    fingerprint = snapshot()
    try:
        if options.profile:
            print("scserver/ as of this start (fingerprint {})".format(fingerprint))
            return profile(options)
        return compare(options, fingerprint)
    finally:
        shutil.rmtree(SNAPSHOT["path"], ignore_errors=True)


def compare(options, fingerprint):
    """Run the rounds and print the figures; 1 if anything was lost."""
    kinds = options.servers.split(",")
    for kind in kinds:
        if kind not in LABELS:
            sys.exit("unknown server {!r}: cpython, pypy or node".format(kind))
        if kind in PYTHONS and not os.path.exists(PYTHONS[kind]):
            sys.exit("{} is missing (bash bench/run.sh creates it)".format(PYTHONS[kind]))
    started = time.monotonic()
    for line in versions(kinds):
        print("- " + line)
    print("- scserver/ copied at the start (fingerprint {}): every round runs that copy".format(
        fingerprint))
    print("- rounds {}, {} s per measured phase, {} s warm-up per server; "
          "fixed rates: rpc {}/s, fan-out {} publications/s, pubsub-many {} msgs/s".format(
              options.rounds, options.seconds, options.warmup, options.rpc_rate,
              options.fanout_rate, options.pubsub_rate), flush=True)
    server_core, gen_core = cores()
    results = {kind: [] for kind in kinds}
    for round_ in range(options.rounds):
        order = kinds[round_ % len(kinds):] + kinds[:round_ % len(kinds)]
        for kind in order:
            t0 = time.monotonic()
            figures = run_server(kind, options, server_core, gen_core)
            results[kind].append(figures)
            print("round {} {} ({:.0f} s): handshakes/s {}, idle {:.0f} B/conn, "
                  "rpc {} acks/s (p50 {} ms at {}/s), fan-out {} deliveries/s (p50 {} ms at {}/s), "
                  "pubsub-many {} msgs/s (p50 {} ms at {}/s), lost {}".format(
                      round_ + 1, kind, time.monotonic() - t0,
                      figures["connect"]["handshakes_per_s"], figures["idle_bytes_per_conn"],
                      figures["rpc"]["max"]["acks_per_s"], figures["rpc"]["fixed"]["p50"],
                      options.rpc_rate, figures["fanout"]["max"]["per_s"],
                      figures["fanout"]["fixed"]["p50"], options.fanout_rate,
                      figures["pubsub-many"]["max"]["per_s"], figures["pubsub-many"]["fixed"]["p50"],
                      options.pubsub_rate, lost(figures)), flush=True)
            print("  raw: " + json.dumps(figures), flush=True)
    return report(results, kinds, options, started)


if __name__ == "__main__":
    sys.exit(main())
