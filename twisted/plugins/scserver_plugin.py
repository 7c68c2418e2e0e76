"""
The C{twistd scserver} drop-in.

This module only names L{scserver.tap}, where the command-line options and
C{makeService} live, so that listing twistd's plugins stays cheap and never
imports the server itself.

There is deliberately no C{__init__.py} in C{twisted/} or
C{twisted/plugins/}: this directory is a portion of Twisted's plugin
package, installed beside Twisted's own plugins.
"""

from twisted.application.service import ServiceMaker

SCServer = ServiceMaker(
    "scserver",
    "scserver.tap",
    "A SocketCluster server (protocol v1 and v2) on Twisted and autobahn.",
    "scserver",
)
