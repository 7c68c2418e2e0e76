"""
The application scserver serves in C{bench/compare.py}: what
C{bench/sc14/server.js} serves on the Node original, no more.

- C{echo} (anything): acked with the data.
- Client publishing is allowed (the server's default).

Run by the driver as::

    twistd -n --pidfile= scserver --listen tcp:PORT:interface=127.0.0.1
        --app bench_app:setup --protocol-version 1
        --max-messages-per-second none --max-bytes-per-second none

with C{bench/} on C{PYTHONPATH}.

Profiling: with C{SCSERVER_BENCH_PROFILE=FILE} in the environment, the
process profiles itself with C{cProfile} between a C{SIGUSR1} (start) and a
C{SIGUSR2} (stop, and write the C{pstats} data to C{FILE}), which the driver
sends around the phase it profiles (C{bench/compare.py --profile}).
"""

import os
import signal


def setup(server):
    """
    Install the benchmark application on C{server} (an C{SCServer}).
    """

    def echo(data, respond):
        respond(None, data)

    def on_connection(socket, status):
        socket.on("echo", echo)

    server.on("connection", on_connection)

    path = os.environ.get("SCSERVER_BENCH_PROFILE")
    if path:
        _install_profiler(path)


def _install_profiler(path):
    """
    Profile between C{SIGUSR1} and C{SIGUSR2}; write the statistics to
    C{path} on C{SIGUSR2}.
    """
    import cProfile

    profiler = cProfile.Profile()

    def start(signum, frame):
        profiler.enable()

    def stop(signum, frame):
        profiler.disable()
        profiler.dump_stats(path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
