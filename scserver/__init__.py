"""
scserver: a SocketCluster server for Python, on Twisted and autobahn.

It speaks the SocketCluster protocol v1 (socketcluster-client 14 and older)
and v2 (client 16 and newer), and offers the SocketCluster v14 server API in
Python idiom.  See the documentation in C{docs/}.
"""

from . import errors, interfaces
from .exchange import SCChannel
from .server import SCServer, listen
from .socket import SCServerSocket

__all__ = ["SCServer", "SCServerSocket", "SCChannel", "listen", "errors", "interfaces"]

__version__ = "0.1.0"
