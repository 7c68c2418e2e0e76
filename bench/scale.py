"""
One process against C{--workers 2}, both on the same Redis: requests per
second (rpc) and deliveries per second (fan-out), measured by the official
socketcluster-client (C{bench/load.js}, Node) on loopback.

For every round, for each configuration in turn (alternating which goes
first), it starts a C{redis-server} (free port, its own temporary
directory, no persistence) and C{twistd -n scserver --broker redis://...
--app tests.interop_app:setup [--workers 2]}, runs C{load.js rpc} then
C{load.js fanout}, and stops both.  It prints the medians and the ratio
workers/single.  Everything is bounded: each load run gives up after
120 s, each process is killed if it does not stop.

Usage (from the repository root, after C{bash scripts/test.sh} installed
everything)::

    .venv/bin/python bench/scale.py [--rounds 3] [--connections 32]
        [--seconds 5] [--subscribers 200] [--publications 500]

The machine the figures come from has 2 cores, shared by the servers, Redis
and the load generator: read the ratio, not the absolute numbers.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOAD = os.path.join(ROOT, "bench", "load.js")
AUTH_KEY = "bench-scale-auth-key-0123456789abcdefghij"
TWISTD = "from twisted.scripts.twistd import run; run()"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("process exited with {}".format(process.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on {} after {} s".format(port, timeout))


def stop(process, timeout=20):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_redis(directory):
    port = free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, redis)
    return redis, port


def start_server(redis_port, workers, directory):
    port = free_port()
    argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "scserver",
            "--listen", "tcp:{}:interface=127.0.0.1".format(port),
            "--broker", "redis://127.0.0.1:{}/0".format(redis_port),
            "--app", "tests.interop_app:setup", "--auth-key", AUTH_KEY,
            # A load generator is the flooder the per-socket budget stops.
            "--max-messages-per-second", "none", "--max-bytes-per-second", "none"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    log = open(os.path.join(directory, "twistd.log"), "wb")
    server = subprocess.Popen(argv, cwd=directory, env=env, stdout=log, stderr=log)
    wait_port(port, server)
    return server, "ws://127.0.0.1:{}/socketcluster/".format(port)


def load(*args):
    out = subprocess.run(["node", LOAD] + [str(a) for a in args], capture_output=True,
                         text=True, timeout=130)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "error" in result:
        raise RuntimeError("load.js {}: {}".format(args[0], result["error"]))
    return result


def run(workers, options):
    directory = tempfile.mkdtemp(prefix="scserver-bench-")
    redis = server = None
    try:
        redis, redis_port = start_redis(directory)
        server, url = start_server(redis_port, workers, directory)
        # Let every worker get to listening before the load starts.
        load("rpc", url, 2, 1)
        rpc = load("rpc", url, options.connections, options.seconds)
        fanout = load("fanout", url, options.subscribers, options.publications)
        return rpc["requests"] / rpc["seconds"], fanout["deliveries"] / fanout["seconds"]
    finally:
        if server is not None:
            stop(server)
        if redis is not None:
            stop(redis)
        shutil.rmtree(directory, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--publications", type=int, default=500)
    options = parser.parse_args()
    results = {1: [], 2: []}
    for round_ in range(options.rounds):
        order = (1, 2) if round_ % 2 == 0 else (2, 1)
        for workers in order:
            rpc, fanout = run(workers, options)
            results[workers].append((rpc, fanout))
            print("round {} workers={}: rpc {:.0f} requests/s, fan-out {:.0f} deliveries/s"
                  .format(round_ + 1, workers, rpc, fanout), flush=True)
    medians = {w: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
               for w, rs in results.items()}
    print("median, 1 process: rpc {:.0f} requests/s, fan-out {:.0f} deliveries/s".format(
        *medians[1]))
    print("median, --workers 2: rpc {:.0f} requests/s, fan-out {:.0f} deliveries/s".format(
        *medians[2]))
    print("ratio workers/single: rpc {:.2f}, fan-out {:.2f}".format(
        medians[2][0] / medians[1][0], medians[2][1] / medians[1][1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
