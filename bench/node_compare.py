"""
scserver against the Node original, socketcluster-server, on one process
each: requests per second (rpc) and deliveries per second (fan-out),
measured by the same load generator (C{bench/load.js}, the official
socketcluster-client 20) over loopback.

Setup, once (not part of the test command)::

    npm install --prefix bench/node socketcluster-server@19

Then::

    .venv/bin/python bench/node_compare.py [--rounds 3] [--connections 32]
        [--seconds 4] [--subscribers 200] [--publications 500]

Each round starts each server in turn (alternating which goes first), runs
C{load.js rpc} then C{load.js fanout} against it, and stops it; the
medians and the ratio scserver/Node are printed.  scserver runs
C{twistd -n scserver --app tests.interop_app:setup} with the in-process
broker and the admission limits at their defaults; the machine's cores are
shared by the server and the load generator: read the ratio.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import ROOT, TWISTD, free_port, load, stop, wait_port  # noqa: E402

NODE_SERVER = os.path.join(ROOT, "bench", "node", "server.js")
AUTH_KEY = "bench-node-compare-auth-key-0123456789ab"


def start(kind, directory):
    port = free_port()
    if kind == "node":
        argv = ["node", NODE_SERVER, str(port)]
    else:
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "scserver",
                "--listen", "tcp:{}:interface=127.0.0.1".format(port),
                "--app", "tests.interop_app:setup", "--auth-key", AUTH_KEY,
            # A load generator is the flooder the per-socket budget stops.
            "--max-messages-per-second", "none", "--max-bytes-per-second", "none"]
    log = open(os.path.join(directory, kind + ".log"), "wb")
    process = subprocess.Popen(argv, cwd=directory, stdout=log, stderr=log,
                               env=dict(os.environ, PYTHONPATH=ROOT))
    wait_port(port, process)
    return process, "ws://127.0.0.1:{}/socketcluster/".format(port)


def run(kind, options):
    directory = tempfile.mkdtemp(prefix="scserver-bench-")
    process = None
    try:
        process, url = start(kind, directory)
        load("rpc", url, 2, 1)
        rpc = load("rpc", url, options.connections, options.seconds)
        fanout = load("fanout", url, options.subscribers, options.publications)
        return rpc["requests"] / rpc["seconds"], fanout["deliveries"] / fanout["seconds"]
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--publications", type=int, default=500)
    options = parser.parse_args()
    if not os.path.isdir(os.path.join(ROOT, "bench", "node", "node_modules",
                                      "socketcluster-server")):
        sys.exit("first: npm install --prefix bench/node socketcluster-server@19")
    results = {"scserver": [], "node": []}
    for round_ in range(options.rounds):
        order = ("scserver", "node") if round_ % 2 == 0 else ("node", "scserver")
        for kind in order:
            rpc, fanout = run(kind, options)
            results[kind].append((rpc, fanout))
            print("round {} {}: rpc {:.0f} requests/s, fan-out {:.0f} deliveries/s".format(
                round_ + 1, kind, rpc, fanout), flush=True)
    medians = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
               for k, v in results.items()}
    for kind in ("scserver", "node"):
        print("median, {}: rpc {:.0f} requests/s, fan-out {:.0f} deliveries/s".format(
            kind, *medians[kind]))
    print("ratio scserver/node: rpc {:.2f}, fan-out {:.2f}".format(
        medians["scserver"][0] / medians["node"][0], medians["scserver"][1] / medians["node"][1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
