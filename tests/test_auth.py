"""
Tests for L{scserver.auth}: the JWT engine, the auth configuration and the
expiry helper.
"""

import base64
import json

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from scserver.auth import (
    MAX_TOKEN_LENGTH,
    AuthConfig,
    JWTAuthEngine,
    is_token_expired,
    iso_date,
    unverified_claims,
)
from scserver.errors import (
    AuthTokenError,
    AuthTokenExpiredError,
    AuthTokenInvalidError,
    AuthTokenNotBeforeError,
    InvalidArgumentsError,
    InvalidOptionsError,
)
from scserver.interfaces import IAuthEngine
from tests._helpers import NOW, b64url, ec_pair, hs256_token, pem_pair

KEY = "test-secret-key-that-is-long-enough-for-hs512-0123456789abcdef-0123456789"
OTHER_KEY = "another-secret-key-that-is-long-enough-for-hs512-0123456789abcdef-01234"
HS256 = {"algorithms": ["HS256"]}


_RSA = []


def rsa_pair():
    """An RSA key pair (generated once per test run; 2048 bits is slow)."""
    if not _RSA:
        _RSA.append(pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    return _RSA[0]


def ed25519_pair():
    """A fresh Ed25519 key pair."""
    return pem_pair(ed25519.Ed25519PrivateKey.generate())


def segment(token, index):
    """Decode segment C{index} of C{token} as JSON."""
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class EngineTestMixin:
    """An engine on a deterministic clock set to L{NOW}."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.engine = JWTAuthEngine(now=self.clock.seconds)

    def sign(self, payload, key=KEY, **options):
        options.setdefault("algorithm", "HS256")
        return self.engine.sign_token(payload, key, options)

    def verify(self, token, key=KEY, **options):
        options.setdefault("algorithms", ["HS256"])
        return self.engine.verify_token(token, key, options)

    def assertFails(self, cls, message, token, key=KEY, **options):
        error = self.assertRaises(cls, self.verify, token, key, **options)
        self.assertIs(type(error), cls)
        self.assertEqual(error.message, message)
        return error


class SignTests(EngineTestMixin, SynchronousTestCase):
    """L{JWTAuthEngine.sign_token}."""

    def test_provides(self):
        """The engine provides L{IAuthEngine}."""
        self.assertTrue(verifyObject(IAuthEngine, self.engine))

    def test_jsonwebtoken_layout(self):
        """
        Header and claims are laid out as jsonwebtoken does: the header is
        C{{"alg":"HS256","typ":"JWT"}}, C{iat} and C{exp} follow the payload
        and an integral float expiry is written as an integer.
        """
        token = self.sign({"username": "alice"}, expires_in=86400.0)
        header, payload, _ = token.split(".")
        self.assertEqual(header, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9")
        self.assertEqual(
            payload, "eyJ1c2VybmFtZSI6ImFsaWNlIiwiaWF0IjoxNzk1NjM5Njg4LCJleHAiOjE3OTU3MjYwODh9")
        self.assertEqual(self.verify(token),
                         {"username": "alice", "iat": NOW, "exp": NOW + 86400})

    def test_iat_is_whole_seconds(self):
        """C{iat} is the current time rounded down."""
        self.clock.advance(0.75)
        self.assertEqual(segment(self.sign({}), 1), {"iat": NOW})

    def test_payload_copied(self):
        """The caller's payload is not modified."""
        payload = {"username": "alice", "nested": {"a": 1}}
        self.sign(payload, expires_in=10)
        self.assertEqual(payload, {"username": "alice", "nested": {"a": 1}})

    def test_no_expiry(self):
        """Without C{expires_in} there is no C{exp}."""
        self.assertEqual(segment(self.sign({"a": 1}, expires_in=None), 1), {"a": 1, "iat": NOW})

    def test_no_timestamp(self):
        """C{no_timestamp} leaves out C{iat} (C{exp} is still relative to now)."""
        claims = segment(self.sign({"a": 1}, expires_in=5, no_timestamp=True), 1)
        self.assertEqual(claims, {"a": 1, "exp": NOW + 5})

    def test_payload_exp_wins(self):
        """A payload C{exp} wins over C{expires_in}."""
        claims = segment(self.sign({"exp": NOW + 7}, expires_in=3600), 1)
        self.assertEqual(claims["exp"], NOW + 7)

    def test_payload_iat_is_base(self):
        """C{exp} and C{nbf} are relative to a payload C{iat}."""
        claims = segment(self.sign({"iat": 1000}, expires_in=10, not_before=5), 1)
        self.assertEqual(claims, {"iat": 1000, "nbf": 1005, "exp": 1010})

    def test_claim_options(self):
        """
        C{audience}, C{issuer}, C{subject}, C{jwtid} become claims; C{keyid}
        and C{headers} go to the header.
        """
        token = self.sign({}, audience=["a", "b"], issuer="me", subject="you",
                          jwtid="j1", keyid="k1", headers={"x": 1})
        self.assertEqual(segment(token, 1),
                         {"iat": NOW, "aud": ["a", "b"], "iss": "me", "sub": "you", "jti": "j1"})
        self.assertEqual(segment(token, 0),
                         {"alg": "HS256", "typ": "JWT", "kid": "k1", "x": 1})

    def test_camel_case_aliases(self):
        """jsonwebtoken's option spellings are accepted."""
        claims = segment(self.sign({}, expiresIn=10, notBefore=2), 1)
        self.assertEqual(claims, {"iat": NOW, "nbf": NOW + 2, "exp": NOW + 10})

    def test_claim_conflict(self):
        """A claim option whose claim the payload has is an error."""
        for option, claim in [("issuer", "iss"), ("audience", "aud"),
                              ("subject", "sub"), ("jwtid", "jti")]:
            error = self.assertRaises(
                InvalidArgumentsError, self.sign, {claim: "x"}, **{option: "y"})
            self.assertEqual(
                error.message,
                'Bad "options.{}" option. The payload already has an "{}" property.'
                .format(option, claim))

    def test_not_before_conflict(self):
        """C{not_before} with a payload C{nbf} is an error."""
        self.assertRaises(InvalidArgumentsError, self.sign, {"nbf": 1}, not_before=5)

    def test_bad_arguments(self):
        """Bad payloads, options and keys raise L{InvalidArgumentsError}."""
        cases = [
            ("not a dict", KEY, {}),
            ({}, KEY, {"algorithm": "none"}),
            ({}, KEY, {"algorithm": "XS256"}),
            ({}, KEY, {"unknown": 1}),
            ({}, KEY, {"expires_in": "2h"}),
            ({}, KEY, {"expires_in": True}),
            ({}, KEY, {"issuer": 5}),
            ({}, KEY, {"headers": {"alg": "none"}}),
            ({}, KEY, {"headers": {"b64": False}}),
            ({"exp": "soon"}, KEY, {}),
            ({"x": object()}, KEY, {}),
            ({"x": float("nan")}, KEY, {}),
            ({}, None, {}),
            ({}, "", {}),
            ({}, rsa_pair()[1], {"algorithm": "HS256"}),
            ({}, KEY, {"algorithm": "RS256"}),
        ]
        for payload, key, options in cases:
            self.assertRaises(InvalidArgumentsError, self.engine.sign_token,
                              payload, key, options)


class VerifyTests(EngineTestMixin, SynchronousTestCase):
    """L{JWTAuthEngine.verify_token}: the error matrix."""

    def test_valid(self):
        """A valid token gives its claims."""
        token = self.sign({"username": "carol"}, expires_in=3600)
        self.assertEqual(self.verify(token),
                         {"username": "carol", "iat": NOW, "exp": NOW + 3600})

    def test_expired(self):
        """
        A token is expired once now reaches C{exp}; the error's C{expiry} is
        the ISO date of C{exp}.
        """
        token = self.sign({"username": "alice", "iat": 1795632489}, expires_in=3600)
        self.assertEqual(segment(token, 1)["exp"], 1795636089)
        self.clock.advance(1795636089 - 1 - NOW)
        self.assertEqual(self.verify(token)["username"], "alice")
        self.clock.advance(1)
        error = self.assertFails(AuthTokenExpiredError, "jwt expired", token)
        self.assertEqual(error.expiry, "2026-11-25T19:48:09.000Z")

    def test_expired_default_clock(self):
        """Without C{now} the engine uses the wall clock."""
        engine = JWTAuthEngine()
        token = engine.sign_token({"exp": 1000}, KEY, {"algorithm": "HS256"})
        self.assertRaises(AuthTokenExpiredError, engine.verify_token, token, KEY, HS256)

    def test_not_before(self):
        """A token before its C{nbf} fails with the ISO date of C{nbf}."""
        token = self.sign({"username": "bob"}, not_before=3600, expires_in=7200)
        error = self.assertFails(AuthTokenNotBeforeError, "jwt not active", token)
        self.assertEqual(error.date, "2026-11-25T21:48:08.000Z")
        self.clock.advance(3600)
        self.assertEqual(self.verify(token)["username"], "bob")

    def test_leeway(self):
        """C{leeway} allows clock skew on C{exp} and C{nbf}."""
        token = self.sign({}, expires_in=10)
        self.clock.advance(14)
        self.assertEqual(self.verify(token, leeway=5)["exp"], NOW + 10)
        self.clock.advance(1)
        self.assertFails(AuthTokenExpiredError, "jwt expired", token, leeway=5)
        early = self.sign({}, not_before=10)
        self.assertEqual(self.verify(early, leeway=10)["nbf"], NOW + 25)
        self.assertFails(AuthTokenNotBeforeError, "jwt not active", early, leeway=9)

    def test_bad_claim_types(self):
        """Non-numeric C{exp} or C{nbf} are invalid."""
        self.assertFails(AuthTokenInvalidError, "invalid exp value",
                         hs256_token({"alg": "HS256"}, {"exp": "x"}, KEY))
        self.assertFails(AuthTokenInvalidError, "invalid nbf value",
                         hs256_token({"alg": "HS256"}, {"nbf": None}, KEY))

    def test_wrong_key(self):
        """A token signed with another key has an invalid signature."""
        token = self.sign({"username": "mallory"}, key=OTHER_KEY)
        self.assertFails(AuthTokenInvalidError, "invalid signature", token)

    def test_tampered(self):
        """A changed payload has an invalid signature."""
        header, _, signature = self.sign({"admin": False}).split(".")
        token = ".".join([header, b64url({"admin": True}), signature])
        self.assertFails(AuthTokenInvalidError, "invalid signature", token)

    def test_malformed(self):
        """A string that is not three dot-separated parts is malformed."""
        for token in ["garbage-token", "a.b", "a.b.c.d", "."]:
            self.assertFails(AuthTokenInvalidError, "jwt malformed", token)

    def test_invalid_token(self):
        """Three parts that do not decode make an invalid token."""
        header = b64url({"alg": "HS256", "typ": "JWT"})
        for token in ["a.b.c", "this.is.not-a-jwt", "..", header + "..sig",
                      header + "." + b64url(b"not json") + ".sig",
                      header + "." + b64url([1, 2]) + ".sig",
                      header + "." + b64url(b'{"exp": NaN}') + ".sig",
                      b64url([]) + "." + b64url({}) + ".sig",
                      header + "=." + b64url({}) + ".sig",
                      header + "." + b64url({}) + ".s+g"]:
            self.assertFails(AuthTokenInvalidError, "invalid token", token)

    def test_missing(self):
        """C{None} and C{""} are "jwt must be provided"."""
        self.assertFails(AuthTokenInvalidError, "jwt must be provided", None)
        self.assertFails(AuthTokenInvalidError, "jwt must be provided", "")

    def test_not_a_string(self):
        """A token that is not a string is a format error."""
        for token in [123, b"a.b.c", {"token": 1}, ["a"]]:
            self.assertFails(AuthTokenError,
                             "Invalid token format - Token must be a string", token)

    def test_no_key(self):
        """Verifying without a key fails."""
        token = self.sign({})
        self.assertFails(AuthTokenInvalidError, "secret or public key must be provided",
                         token, key=None)

    def test_algorithm_not_allowed(self):
        """A token whose C{alg} is not in C{algorithms} is refused."""
        token = self.sign({}, algorithm="HS512")
        self.assertFails(AuthTokenInvalidError, "invalid algorithm", token)
        self.assertEqual(self.verify(token, algorithms=["HS256", "HS512"]), {"iat": NOW})
        no_alg = hs256_token({"typ": "JWT"}, {}, KEY)
        self.assertFails(AuthTokenInvalidError, "invalid algorithm", no_alg)

    def test_alg_none(self):
        """
        An unsigned C{alg: none} token never verifies, even when C{none} is
        in C{algorithms}.
        """
        unsigned = b64url({"alg": "none", "typ": "JWT"}) + "." + b64url({"admin": True}) + "."
        for algorithms in (["HS256"], ["none", "HS256"], ["none"], ["NONE"]):
            self.assertRaises(AuthTokenInvalidError, self.verify, unsigned,
                              algorithms=algorithms)
        self.assertFails(AuthTokenInvalidError, "jwt signature is required", unsigned,
                         algorithms=["none"])
        faked = unsigned + "c2lnbmF0dXJl"
        self.assertFails(AuthTokenInvalidError, "invalid algorithm", faked,
                         algorithms=["none", "HS256"])

    def test_hs_rs_confusion(self):
        """
        An HS256 token whose HMAC key is the server's PEM public key is
        refused, whatever the algorithm list says.
        """
        private, public = rsa_pair()
        forged = hs256_token({"alg": "HS256", "typ": "JWT"}, {"admin": True}, public)
        self.assertFails(AuthTokenInvalidError, "invalid algorithm", forged,
                         key=public, algorithms=["RS256"])
        self.assertFails(AuthTokenInvalidError, "invalid algorithm", forged,
                         key=public, algorithms=["RS256", "HS256"])
        self.assertFails(AuthTokenInvalidError, "invalid algorithm", forged,
                         key=public.encode("ascii"), algorithms=["HS256"])
        config = AuthConfig.from_options({"auth_private_key": private,
                                          "auth_public_key": public,
                                          "auth_algorithm": "RS256"})
        error = self.assertRaises(AuthTokenInvalidError, self.engine.verify_token,
                                  forged, config.verification_key, config.verify_options())
        self.assertEqual(error.message, "invalid algorithm")

    def test_oversize(self):
        """
        Tokens over 8 KiB are refused before decoding: even a malformed one
        gets the size error; a token of exactly the limit is decoded.
        """
        self.assertEqual(MAX_TOKEN_LENGTH, 8192)
        message = "jwt too long: a token may be at most 8192 bytes"
        self.assertFails(AuthTokenInvalidError, message, "x" * 8193)
        self.assertFails(AuthTokenInvalidError, "jwt malformed", "x" * 8192)
        self.assertFails(AuthTokenInvalidError, message, "\u00e9" * 5000)
        big = self.sign({"blob": "y" * 7000})
        self.assertGreater(len(big), 8192)
        self.assertFails(AuthTokenInvalidError, message, big)

    def test_oversize_not_decoded(self):
        """An oversize token never reaches the decoders."""
        import scserver.auth

        def explode(*args, **kwargs):
            raise AssertionError("decoded an oversize token")

        self.patch(scserver.auth, "_decode_compact", explode)
        self.patch(self.engine._jws, "decode_complete", explode)
        big = self.sign({"blob": "y" * 7000})
        self.assertRaises(AuthTokenInvalidError, self.verify, big)

    def test_oversize_configurable(self):
        """The limit is the engine's C{max_token_length}."""
        engine = JWTAuthEngine(now=self.clock.seconds, max_token_length=20000)
        big = self.sign({"blob": "y" * 7000})
        self.assertEqual(engine.verify_token(big, KEY, HS256)["blob"], "y" * 7000)

    def test_options_checked(self):
        """A missing C{algorithms} list or a bad leeway is a programming error."""
        token = self.sign({})
        self.assertRaises(InvalidArgumentsError, self.engine.verify_token, token, KEY, {})
        self.assertRaises(InvalidArgumentsError, self.engine.verify_token, token, KEY, None)
        self.assertRaises(InvalidArgumentsError, self.verify, token, leeway=-1)
        self.assertEqual(self.verify(token, algorithms="HS256", socket=object()),
                         {"iat": NOW})

    def test_other_errors(self):
        """Other failures (an unusable key) become L{AuthTokenError}."""
        _, public = rsa_pair()
        token = self.engine.sign_token({}, rsa_pair()[0], {"algorithm": "RS256"})
        error = self.assertRaises(AuthTokenError, self.verify, token, key=KEY,
                                  algorithms=["RS256"])
        self.assertIs(type(error), AuthTokenError)
        self.assertEqual(self.verify(token, key=public, algorithms=["RS256"]), {"iat": NOW})


class AsymmetricTests(EngineTestMixin, SynchronousTestCase):
    """Asymmetric algorithms with key pairs made by C{cryptography}."""

    def roundtrip(self, algorithm, pair, other_pair):
        """Sign and verify with C{pair}; C{other_pair}'s key must not verify."""
        private, public = pair
        now = int(self.clock.seconds())
        token = self.engine.sign_token({"u": 1}, private,
                                       {"algorithm": algorithm, "expires_in": 60})
        self.assertEqual(segment(token, 0)["alg"], algorithm)
        options = {"algorithms": [algorithm]}
        self.assertEqual(self.engine.verify_token(token, public, options),
                         {"u": 1, "iat": now, "exp": now + 60})
        error = self.assertRaises(AuthTokenInvalidError, self.engine.verify_token,
                                  token, other_pair[1], options)
        self.assertEqual(error.message, "invalid signature")
        self.clock.advance(60)
        self.assertRaises(AuthTokenExpiredError, self.engine.verify_token,
                          token, public, options)

    def test_rs256(self):
        """RS256 and PS256 with an RSA key pair."""
        other = pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.roundtrip("RS256", rsa_pair(), other)
        self.roundtrip("PS256", rsa_pair(), other)

    def test_es256(self):
        """ES256 with a P-256 key pair."""
        self.roundtrip("ES256", ec_pair(), ec_pair())

    def test_eddsa(self):
        """EdDSA with an Ed25519 key pair."""
        self.roundtrip("EdDSA", ed25519_pair(), ed25519_pair())

    def test_family_pinned(self):
        """A token of another asymmetric algorithm is refused."""
        private, public = rsa_pair()
        token = self.engine.sign_token({}, private, {"algorithm": "RS512"})
        error = self.assertRaises(AuthTokenInvalidError, self.engine.verify_token,
                                  token, public, {"algorithms": ["RS256"]})
        self.assertEqual(error.message, "invalid algorithm")


class AuthConfigTests(SynchronousTestCase):
    """L{AuthConfig.from_options}."""

    def assertInvalid(self, options, fragment):
        """C{options} raise L{InvalidOptionsError} mentioning C{fragment}."""
        error = self.assertRaises(InvalidOptionsError, AuthConfig.from_options, options)
        self.assertIn(fragment, error.message)
        return error

    def test_hmac(self):
        """With C{auth_key}, both keys are it and HS256 is the default."""
        config = AuthConfig.from_options({"auth_key": KEY})
        self.assertEqual(
            (config.signature_key, config.verification_key, config.algorithm,
             config.verify_algorithms, config.default_expiry, config.leeway,
             config.random_key),
            (KEY, KEY, "HS256", ["HS256"], 86400.0, 0.0, False))

    def test_options_applied(self):
        """The other auth options are carried over."""
        config = AuthConfig.from_options({
            "auth_key": KEY, "auth_algorithm": "HS512",
            "auth_verify_algorithms": "HS512, HS256",
            "auth_default_expiry": 60.0, "auth_leeway": 2.0})
        self.assertEqual(
            (config.algorithm, config.verify_algorithms, config.default_expiry, config.leeway),
            ("HS512", ["HS512", "HS256"], 60.0, 2.0))

    def test_random_key(self):
        """
        Without any key a random 32-byte hex key is made and a warning says
        tokens will not survive restarts or work across processes.
        """
        events = []
        log = Logger(observer=events.append)
        config = AuthConfig.from_options({}, log=log)
        self.assertEqual(len(config.signature_key), 64)
        int(config.signature_key, 16)
        self.assertEqual(config.verification_key, config.signature_key)
        self.assertTrue(config.random_key)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"].name, "warn")
        text = events[0]["log_format"]
        self.assertIn("restart", text)
        self.assertIn("other processes", text)
        other = AuthConfig.from_options({}, log=Logger(observer=lambda event: None))
        self.assertNotEqual(other.signature_key, config.signature_key)

    def test_no_warning_with_key(self):
        """A configured key logs nothing."""
        events = []
        AuthConfig.from_options({"auth_key": KEY}, log=Logger(observer=events.append))
        self.assertEqual(events, [])

    def test_key_pairs(self):
        """Key pairs give the matching asymmetric configuration."""
        for algorithm, pair, verify in [
                ("RS256", rsa_pair(), ["RS256", "PS256"]),
                ("ES256", ec_pair(), None),
                ("ES384", ec_pair(ec.SECP384R1()), None),
                ("EdDSA", ed25519_pair(), None)]:
            private, public = pair
            config = AuthConfig.from_options({
                "auth_private_key": private, "auth_public_key": public,
                "auth_algorithm": algorithm, "auth_verify_algorithms": verify})
            self.assertEqual((config.signature_key, config.verification_key, config.algorithm),
                             (private, public, algorithm))
            self.assertEqual(config.verify_algorithms, verify or [algorithm])

    def test_one_key_only(self):
        """The private and public keys come together."""
        private, public = rsa_pair()
        self.assertInvalid({"auth_private_key": private, "auth_algorithm": "RS256"},
                           "auth_public_key")
        self.assertInvalid({"auth_public_key": public, "auth_algorithm": "RS256"},
                           "auth_private_key")

    def test_hmac_with_keys(self):
        """An HMAC algorithm with a key pair asks to set auth_algorithm."""
        private, public = rsa_pair()
        self.assertInvalid({"auth_private_key": private, "auth_public_key": public},
                           "set auth_algorithm")

    def test_asymmetric_without_keys(self):
        """An asymmetric algorithm needs the key pair."""
        self.assertInvalid({"auth_key": KEY, "auth_algorithm": "RS256"}, "auth_private_key")
        self.assertInvalid({"auth_algorithm": "ES256"}, "auth_private_key")

    def test_verify_other_family(self):
        """auth_verify_algorithms must stay in the key's family."""
        private, public = rsa_pair()
        keys = {"auth_private_key": private, "auth_public_key": public,
                "auth_algorithm": "RS256"}
        self.assertInvalid(dict(keys, auth_verify_algorithms=["RS256", "HS256"]), "'HS256'")
        self.assertInvalid(dict(keys, auth_verify_algorithms=["RS256", "ES256"]), "'ES256'")
        self.assertInvalid({"auth_key": KEY, "auth_verify_algorithms": ["HS256", "RS256"]},
                           "'RS256'")

    def test_verify_none(self):
        """'none' is never accepted."""
        self.assertInvalid({"auth_key": KEY, "auth_verify_algorithms": ["HS256", "none"]},
                           "'none'")
        self.assertInvalid({"auth_key": KEY, "auth_algorithm": "none"}, "'none'")

    def test_verify_list_checked(self):
        """The verify list is non-empty and includes the signing algorithm."""
        self.assertInvalid({"auth_key": KEY, "auth_verify_algorithms": []}, "empty")
        self.assertInvalid({"auth_key": KEY, "auth_verify_algorithms": ["HS512"]},
                           "include auth_algorithm")

    def test_bad_keys(self):
        """Unusable or mismatched keys are refused."""
        private, public = rsa_pair()
        ec_private, ec_public = ec_pair()
        self.assertInvalid({"auth_private_key": private, "auth_public_key": ec_public,
                            "auth_algorithm": "RS256"}, "not a key pair")
        self.assertInvalid({"auth_private_key": "nope", "auth_public_key": public,
                            "auth_algorithm": "RS256"}, "auth_private_key")
        self.assertInvalid({"auth_private_key": private, "auth_public_key": "nope",
                            "auth_algorithm": "RS256"}, "auth_public_key")
        self.assertInvalid({"auth_private_key": ec_private, "auth_public_key": ec_public,
                            "auth_algorithm": "RS256"}, "ES256")
        self.assertInvalid({"auth_private_key": ec_private, "auth_public_key": ec_public,
                            "auth_algorithm": "ES384"}, "ES256")
        self.assertInvalid({"auth_key": KEY, "auth_private_key": private,
                            "auth_public_key": public, "auth_algorithm": "RS256"},
                           "auth_key")

    def test_bad_hmac_key(self):
        """An empty or PEM auth_key is refused."""
        self.assertInvalid({"auth_key": ""}, "non-empty")
        self.assertInvalid({"auth_key": rsa_pair()[1]}, "PEM")

    def test_bad_values(self):
        """Unknown algorithms, bad expiry and bad leeway are refused."""
        self.assertInvalid({"auth_key": KEY, "auth_algorithm": "XS256"}, "Unsupported")
        self.assertInvalid({"auth_key": KEY, "auth_default_expiry": 0}, "auth_default_expiry")
        self.assertInvalid({"auth_key": KEY, "auth_leeway": -1.0}, "auth_leeway")

    def test_engine_options(self):
        """sign_options and verify_options drive the engine."""
        clock = Clock()
        clock.advance(NOW)
        engine = JWTAuthEngine(now=clock.seconds)
        config = AuthConfig.from_options({"auth_key": KEY, "auth_default_expiry": 100.0,
                                          "auth_leeway": 1.0})
        self.assertEqual(config.sign_options(), {"algorithm": "HS256", "expires_in": 100.0})
        self.assertEqual(config.sign_options(expires_in=5, issuer="me", algorithm="HS512"),
                         {"algorithm": "HS256", "expires_in": 5, "issuer": "me"})
        self.assertEqual(config.verify_options("sock"),
                         {"algorithms": ["HS256"], "leeway": 1.0, "socket": "sock"})
        token = engine.sign_token({"u": 1}, config.signature_key, config.sign_options())
        self.assertEqual(engine.verify_token(token, config.verification_key,
                                             config.verify_options()),
                         {"u": 1, "iat": NOW, "exp": NOW + 100})

    def test_keys_mutable(self):
        """Changing the keys at run time takes effect on the next use."""
        engine = JWTAuthEngine()
        config = AuthConfig.from_options({"auth_key": KEY})
        token = engine.sign_token({}, config.signature_key, config.sign_options())
        config.signature_key = config.verification_key = OTHER_KEY
        error = self.assertRaises(AuthTokenInvalidError, engine.verify_token, token,
                                  config.verification_key, config.verify_options())
        self.assertEqual(error.message, "invalid signature")
        token = engine.sign_token({}, config.signature_key, config.sign_options())
        engine.verify_token(token, config.verification_key, config.verify_options())


class HelperTests(SynchronousTestCase):
    """L{is_token_expired}, L{iso_date} and L{unverified_claims}."""

    def test_is_token_expired(self):
        """Expired when C{exp} is a number and now is past it."""
        self.assertFalse(is_token_expired(None, 10))
        self.assertFalse(is_token_expired({}, 10))
        self.assertFalse(is_token_expired({"exp": "5"}, 10))
        self.assertFalse(is_token_expired({"exp": True}, 10))
        self.assertFalse(is_token_expired({"exp": 10}, 10))
        self.assertTrue(is_token_expired({"exp": 10}, 10.001))
        self.assertTrue(is_token_expired({"exp": 9.5}, 10))
        self.assertTrue(is_token_expired({"exp": 9}, lambda: 10))

    def test_iso_date(self):
        """JavaScript's toISOString form, milliseconds truncated."""
        self.assertEqual(iso_date(1795636089), "2026-11-25T19:48:09.000Z")
        self.assertEqual(iso_date(1.5), "1970-01-01T00:00:01.500Z")
        self.assertEqual(iso_date(0.0019), "1970-01-01T00:00:00.001Z")
        self.assertEqual(iso_date(1e20), 1e20)
        self.assertIsInstance(iso_date(float("nan")), float)

    def test_unverified_claims(self):
        """The claims of a signed token, unverified; None for junk."""
        engine = JWTAuthEngine(now=lambda: 100.0)
        token = engine.sign_token({"u": 1}, KEY, {"expires_in": 10})
        self.assertEqual(unverified_claims(token), {"u": 1, "iat": 100, "exp": 110})
        self.assertIsNone(unverified_claims("garbage-token"))
        self.assertIsNone(unverified_claims(None))
