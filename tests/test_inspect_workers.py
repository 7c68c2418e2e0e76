"""
The inspection page with C{twistd scserver --workers 2} on a real
C{redis-server}: whichever worker answers C{state.json}, it shows both
workers once the page has been looked at; the token given as C{env:NAME}
reaches the workers through their environment.
"""

import json
import os
import re

from twisted.internet import defer, task
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from tests._redis import RedisServer, skip_reason
from tests.test_twistd import TwistdProcessMixin

AUTH_KEY = "inspect-workers-auth-key-0123456789abcdef"
TOKEN = "inspect-workers-token-0123456789abcdef"
BOUND = re.compile(r"bound on 127\.0\.0\.1:(\d+), shared by (\d+) workers")


class WorkersPageTests(TwistdProcessMixin, unittest.TestCase):
    skip = skip_reason
    timeout = 60

    @defer.inlineCallbacks
    def get(self, agent, url, token=TOKEN):
        headers = Headers({b"Authorization": [b"Bearer " + token.encode()]})
        response = yield agent.request(b"GET", url.encode(), headers)
        body = yield readBody(response)
        return response.code, body

    @defer.inlineCallbacks
    def test_bothWorkers(self):
        from twisted.internet import reactor

        redis = RedisServer(reactor)
        self.addCleanup(redis.cleanup)
        yield redis.start()
        self.patch(os, "environ", dict(os.environ, SC_INSPECT_WORKERS_TOKEN=TOKEN))
        process, transport = self.spawn(
            "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
            "--app", "tests.workers_app:setup", "--broker", redis.url,
            "--auth-key", AUTH_KEY, "--inspect-path", "/inspect",
            "--inspect-token", "env:SC_INSPECT_WORKERS_TOKEN")
        match = yield process.wait_for(BOUND, 15)
        url = "http://127.0.0.1:{}/inspect/state.json".format(match.group(1))
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, pool=pool)
        code, body = yield self.get(agent, url, token="wrong")
        self.assertEqual((code, body), (401, b"Unauthorized\n"))
        pids = set()
        seen = 0
        for _ in range(100):
            try:
                code, body = yield self.get(agent, url)
            except Exception:
                code = None  # a worker not listening yet
            if code == 200:
                state = json.loads(body)
                pids.add(state["processes"][0]["pid"])
                seen = max(seen, len(state["processes"]))
                if seen == 2 and len(pids) == 2:
                    break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual((seen, len(pids)), (2, 2), process.text)
        self.assertNotIn(TOKEN, process.text)
