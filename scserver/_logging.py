"""
The observer scserver's loggers write to: the global log publisher, behind
a level filter.

Every module of scserver logs through a C{twisted.logger.Logger} made with
C{Logger(observer=observer)}, so that one setting, L{set_log_level} (the
C{--log-level} option of C{twistd scserver}), drops scserver's events
below a level before any observer formats them: under twistd, a debug
event (one as a socket connects, one as it disconnects) otherwise costs a
formatted line in the log file, some 18 microseconds each.  By default
nothing is dropped, as with any Twisted logger: an application embedding
scserver decides with its own observers.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

__all__ = ["NAMESPACE", "observer", "set_log_level", "log_level"]

NAMESPACE = "scserver"
"""The namespace every scserver logger's namespace starts with."""

_levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug)

observer = FilteringLogObserver(globalLogPublisher, [_levels])
"""The observer of scserver's loggers: C{globalLogPublisher}, filtered."""


def set_log_level(level: LogLevel) -> None:
    """
    Drop scserver's log events below C{level} (C{LogLevel.debug}: none).

    @param level: a C{twisted.logger.LogLevel}.
    """
    _levels.setLogLevelForNamespace(NAMESPACE, level)


def log_level() -> LogLevel:
    """The lowest level of scserver's log events that are kept."""
    level: LogLevel = _levels.logLevelForNamespace(NAMESPACE)
    return level
