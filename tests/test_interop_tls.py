"""
Interop tests over TLS: an L{scserver.SCServer} listening on an C{ssl:}
endpoint of 127.0.0.1 with a self-signed certificate made by the test, and
the official SocketCluster clients (socketcluster-client 14.3.2 and 20.0.2)
connecting with C{wss://}.

The clients are told not to verify the certificate (C{rejectUnauthorized:
false}, the harness's default for C{wss://}); one test checks that with
verification on, the self-signed certificate is refused, which shows the
connection really is TLS.

Needs Node.js and C{npm ci --prefix tests/interop}, and pyOpenSSL for
Twisted's C{ssl:} endpoints.
"""

import datetime
import ipaddress
import os

from twisted.internet import defer
from twisted.internet.endpoints import quoteStringArgument
from twisted.trial import unittest

from tests._node import InteropMixin, check_node

try:
    import OpenSSL  # noqa: F401  (Twisted's ssl: endpoints need it)
except ImportError:  # pragma: no cover
    OpenSSL = None


def make_self_signed(directory):
    """
    Write a new EC P-256 key and a self-signed certificate for 127.0.0.1
    and localhost (valid from yesterday to tomorrow) into C{directory}.

    @return: C{(key_path, cert_path)}.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class _TLSTests(InteropMixin):
    @defer.inlineCallbacks
    def start_tls_server(self, **options):
        """
        Start a server running L{tests.interop_app} on
        C{ssl:0:interface=127.0.0.1} with a fresh self-signed certificate;
        C{self.url} is its C{wss://} URL.
        """
        from twisted.internet import reactor

        from scserver import SCServer

        from tests import interop_app

        if OpenSSL is None:
            raise unittest.SkipTest("pyOpenSSL is needed for ssl: endpoints")
        check_node()
        key_path, cert_path = make_self_signed(self.mktemp())
        server = SCServer(reactor=reactor, **options)
        interop_app.setup(server)
        endpoint = "ssl:0:interface=127.0.0.1:privateKey={}:certKey={}".format(
            quoteStringArgument(key_path), quoteStringArgument(cert_path)
        )
        port = yield server.listen(endpoint)
        self.addCleanup(server.close)
        self.server = server
        self.url = "wss://127.0.0.1:%d/socketcluster/" % (port.getHost().port,)
        return server

    @defer.inlineCallbacks
    def test_handshake(self):
        """
        The client completes the SocketCluster handshake over wss://.
        """
        yield self.start_tls_server()
        r = yield self.scenario("handshake")
        self.assertEqual(len(r["status"]["id"]), 20)
        self.assertIs(r["status"]["isAuthenticated"], False)
        self.assertEqual(r["state"], "open")
        self.assertEqual([s.id for s in self.server.interop_sockets], [r["id"]])

    @defer.inlineCallbacks
    def test_echo(self):
        """
        Emits with and without acknowledgement work over wss://.
        """
        yield self.start_tls_server()
        r = yield self.scenario("emitAck", {"ackTimeout": 800})
        self.assertEqual(r["echo"], {"data": {"msg": "hi", "n": 1}})
        self.assertEqual(r["fail"]["error"]["name"], "CustomError")
        self.assertEqual(r["noackReceived"], {"data": [{"fire": "and forget", "n": 1}]})
        self.assertEqual(r["events"], ["connect"])

    @defer.inlineCallbacks
    def test_certificate_verified_when_asked(self):
        """
        With certificate verification on, the self-signed certificate is
        refused: the connection is TLS with the test's certificate.
        """
        yield self.start_tls_server()
        r = yield self.scenario("connectOutcome", {"rejectUnauthorized": True})
        self.assertEqual(r["outcome"], "connectAbort", r)
        self.assertIs(r["raw"]["opened"], False)
        self.assertTrue(
            any("self-signed" in e or "self signed" in e for e in r["raw"]["errors"]),
            r["raw"]["errors"],
        )
        self.assertEqual(self.server.interop_sockets, [])


class TLSV14Tests(_TLSTests, unittest.TestCase):
    """
    socketcluster-client 14.3.2.
    """

    version = 14


class TLSV20Tests(_TLSTests, unittest.TestCase):
    """
    socketcluster-client 20.0.2 with default options (protocolVersion 2).
    """

    version = 20
