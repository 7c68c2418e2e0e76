"""
Tests for C{scripts/check_private.py}, the lint that keeps every module of
scserver out of the other modules' private names.
"""

import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "scripts", "check_private.py")


class CheckPrivateTests(SynchronousTestCase):
    def package(self, **modules):
        """Write a package of C{modules} (name → source) and return its folder."""
        root = os.path.join(self.mktemp(), "pkg")
        os.makedirs(root)
        modules.setdefault("__init__", "")
        for name, source in modules.items():
            with open(os.path.join(root, name + ".py"), "w") as handle:
                handle.write(textwrap.dedent(source))
        return root

    def check(self, root):
        result = subprocess.run([sys.executable, SCRIPT, root], capture_output=True, text=True)
        return result.returncode, result.stdout

    def test_reads_of_another_modules_private_names(self):
        """An attribute or an import defined in another module is reported with its line."""
        root = self.package(
            engine="class Engine:\n    def _secret(self):\n        return 1\n_HIDDEN = 2\n",
            socket="""\
                from .engine import Engine, _HIDDEN

                class Socket:
                    def __init__(self):
                        self.engine = Engine()

                    def go(self):
                        return self.engine._secret()
                """)
        code, out = self.check(root)
        self.assertEqual(code, 1)
        lines = out.splitlines()
        self.assertIn(os.path.join(root, "socket.py") + ":1: _HIDDEN", lines)
        self.assertIn(os.path.join(root, "socket.py") + ":8: _secret", lines)
        self.assertEqual(lines[-1], "2 read(s) of another module's private names")

    def test_allowed_forms(self):
        """
        Reads on self, friends inside one module, private modules of the
        package and dunder names are allowed.
        """
        root = self.package(
            _engine="def helper():\n    return 1\n",
            socket="""\
                from . import _engine

                class Channel:
                    def __init__(self):
                        self._watchers = []

                class Socket:
                    def __init__(self):
                        self._channel = Channel()

                    def go(self):
                        self._inherited()
                        return self._channel._watchers, _engine.helper(), self.__class__
                """)
        code, out = self.check(root)
        self.assertEqual((code, out.strip()), (0, "no module reads another module's private names"))

    def test_scserver_is_clean(self):
        """The package itself passes (as the test command checks)."""
        root = os.path.join(os.path.dirname(os.path.dirname(SCRIPT)), "scserver")
        self.assertEqual(self.check(root)[0], 0)

    def test_outside_modules(self):
        """The private-looking names of outside modules (C{os._exit}) are not this rule's."""
        root = self.package(app="import os\nimport sys as system\n\n"
                                "def bye():\n    system._getframe()\n    os._exit(1)\n")
        self.assertEqual(self.check(root)[0], 0)
