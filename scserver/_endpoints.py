"""
The listen backlog of the server endpoints scserver binds.

Twisted listens with a backlog of 50 unless the endpoint description names
one: under a burst of connections the kernel's accept queue overflows and
clients wait for SYN retransmissions (seconds) or give up.  L{SCServer.listen
<scserver.server.SCServer.listen>} and the parent of C{twistd scserver
--workers} (L{scserver._workers.WorkerPool}) listen with
L{with_default_backlog} applied to every description, so C{tcp:}, C{tcp6:}
and C{ssl:} endpoints get L{DEFAULT_BACKLOG} unless they say otherwise
(C{tcp:8000:backlog=128}).  The kernel caps the value
(C{net.core.somaxconn} on Linux, 4096 by default since Linux 5.4).
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_BACKLOG", "with_default_backlog"]

DEFAULT_BACKLOG = 1024
"""The listen backlog of C{tcp:}, C{tcp6:} and C{ssl:} endpoints that name none."""

_BACKLOG_POSITION = {"tcp": 2, "tcp6": 2, "ssl": 5}
"""Endpoint type → the position of C{backlog} among its positional arguments
(after the type): C{tcp:PORT:INTERFACE:BACKLOG},
C{ssl:PORT:PRIVATEKEY:CERTKEY:SSLMETHOD:INTERFACE:BACKLOG}."""


_KEYWORD = re.compile(r"((?:[^=\\]|\\.)*)=")
"""The name of a keyword argument: what comes before its first unescaped C{=}."""


def _arguments(description: str) -> list[str]:
    """
    Split an endpoint description at its unescaped colons (a backslash
    escapes the character after it, as in Twisted's parser).
    """
    parts = [""]
    escaped = False
    for char in description:
        if escaped:
            parts[-1] += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("")
        else:
            parts[-1] += char
    return parts


def with_default_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    Add C{:backlog=N} to a C{tcp:}, C{tcp6:} or C{ssl:} endpoint description
    that does not give a backlog (as a keyword or a positional argument).

    Other descriptions (C{unix:}, C{systemd:}, a plugin's) are returned
    unchanged: a UNIX socket's backlog is left to the caller, a systemd
    socket was bound by systemd (C{Backlog=} of the C{.socket} unit).

    @param description: a Twisted server endpoint description.
    @param backlog: the backlog to add.
    @return: the description, with the backlog when it applies.
    """
    arguments = _arguments(description)
    position = _BACKLOG_POSITION.get(arguments[0].strip().lower())
    if position is None:
        return description
    positional = 0
    for argument in arguments[1:]:
        keyword = _KEYWORD.match(argument)
        if keyword is None:
            positional += 1
        elif keyword.group(1).strip() == "backlog":
            return description
    if positional > position:
        return description
    return "{}:backlog={}".format(description, backlog)
