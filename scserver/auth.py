"""
Auth tokens: the default JSON Web Token engine and the auth configuration.

L{JWTAuthEngine} signs and verifies tokens with PyJWT and reports failures
with SocketCluster's error classes and jsonwebtoken's messages, so clients
see the same C{authError} objects as with a Node server:

    - C{AuthTokenExpiredError("jwt expired", expiry=<ISO date>)}
    - C{AuthTokenNotBeforeError("jwt not active", date=<ISO date>)}
    - C{AuthTokenInvalidError("invalid signature")}, C{("jwt malformed")},
      C{("invalid token")}, C{("invalid algorithm")},
      C{("jwt must be provided")}, ...
    - C{AuthTokenError("Invalid token format - Token must be a string")}

Verification is hardened: the accepted algorithms come only from the
caller's C{algorithms} option (never from the token), C{none} never
verifies, an C{HS*} token is never checked against an asymmetric (PEM or
SSH) key, and tokens longer than L{MAX_TOKEN_LENGTH} bytes are refused
before any decoding.

L{AuthConfig} turns the server options (C{auth_key}, C{auth_private_key},
C{auth_public_key}, C{auth_algorithm}, C{auth_verify_algorithms},
C{auth_default_expiry}, C{auth_leeway}, C{auth_require_expiry}) into
checked keys and algorithm lists.

All times are POSIX seconds.  The engine reads the time from an injectable
C{now} callable (for example C{reactor.seconds}).
"""

import base64
import binascii
import datetime
import json
import math
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Union

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import api_jws
from jwt import exceptions as jwt_exceptions
from jwt.utils import is_ssh_key
from twisted.logger import Logger
from zope.interface import implementer

from ._logging import observer as log_observer
from .errors import (
    AuthTokenError,
    AuthTokenExpiredError,
    AuthTokenInvalidError,
    AuthTokenNotBeforeError,
    InvalidArgumentsError,
    InvalidOptionsError,
)
from .interfaces import IAuthEngine
from .options import DEFAULTS

if TYPE_CHECKING:
    from typing import TypeGuard  # Python 3.10+; only for the type checker

__all__ = [
    "HMAC_ALGORITHMS",
    "RSA_ALGORITHMS",
    "EC_ALGORITHMS",
    "EDDSA_ALGORITHMS",
    "ASYMMETRIC_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "JWTAuthEngine",
    "AuthConfig",
    "is_token_expired",
    "iso_date",
    "unverified_claims",
]

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
"""The HMAC (shared secret) algorithms, used with C{auth_key}."""

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
"""The algorithms an RSA key pair can use."""

EC_ALGORITHMS = ("ES256", "ES384", "ES512")
"""The ECDSA algorithms (P-256, P-384 and P-521 keys respectively)."""

EDDSA_ALGORITHMS = ("EdDSA",)
"""The algorithm of Ed25519 and Ed448 key pairs."""

ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS + EC_ALGORITHMS + EDDSA_ALGORITHMS
"""Every algorithm usable with C{auth_private_key} and C{auth_public_key}."""

MAX_TOKEN_LENGTH = 8192
"""The longest signed token (in UTF-8 bytes) that L{JWTAuthEngine} decodes."""

_EC_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}

_CLAIM_OPTIONS = (
    ("audience", "aud"),
    ("issuer", "iss"),
    ("subject", "sub"),
    ("jwtid", "jti"),
)

_SIGN_OPTIONS = frozenset([
    "algorithm", "expires_in", "not_before", "audience", "issuer", "subject",
    "jwtid", "headers", "keyid", "no_timestamp",
])

_SIGN_ALIASES = {
    "expiresIn": "expires_in",
    "notBefore": "not_before",
    "noTimestamp": "no_timestamp",
    "header": "headers",
}

_COMPACT_JWS = re.compile(r"\A[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\Z")

_EPOCH = datetime.datetime(1970, 1, 1)

_log = Logger(observer=log_observer)


def _is_number(value: object) -> "TypeGuard[float]":
    """Whether C{value} is a JSON number (a bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite_number(value):
    """Whether C{value} is a finite JSON number."""
    return _is_number(value) and math.isfinite(value)


def _js_number(value):
    """
    Return C{value} as JavaScript would print it in JSON: a float with an
    integral value becomes an C{int} (C{86400.0} → C{86400}).
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _as_bytes(key):
    """A key as bytes (str keys are UTF-8 encoded)."""
    if isinstance(key, str):
        return key.encode("utf-8")
    return key


def _is_asymmetric_key(key):
    """
    Whether C{key} is (or looks like) an asymmetric key: a PEM block, an SSH
    public key, or a key object (anything that is not text or bytes).
    """
    if isinstance(key, (str, bytes, bytearray)):
        data = bytes(_as_bytes(key))
        return b"-----BEGIN" in data or is_ssh_key(data.strip())
    return True


def _b64url_decode(segment):
    """Decode one base64url segment (no padding); raise C{ValueError} if bad."""
    padded = segment + "=" * (-len(segment) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(str(e))


def _reject_constant(name):
    """JSON.parse rejects NaN and Infinity; so do we."""
    raise ValueError("invalid JSON constant {}".format(name))


def _json_object(data):
    """Parse UTF-8 JSON C{data}; return it if it is an object, else C{None}."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return value


def _decode_compact(signed_token):
    """
    Split a compact JWS into its header and payload objects without checking
    the signature.

    @return: C{(header, payload)}, or C{None} when the token does not decode
        (jsonwebtoken's "invalid token").
    """
    if not _COMPACT_JWS.match(signed_token):
        return None
    header_segment, payload_segment, _ = signed_token.split(".")
    try:
        header = _json_object(_b64url_decode(header_segment))
        payload = _json_object(_b64url_decode(payload_segment))
    except ValueError:
        return None
    if header is None or payload is None:
        return None
    return header, payload


def iso_date(seconds: float) -> Union[str, float]:
    """
    Format POSIX C{seconds} as JavaScript's C{new Date(seconds * 1000)
    .toISOString()} does, e.g. C{"2026-11-25T19:48:09.000Z"}.

    This is the form of the C{expiry} and C{date} fields of the token errors.

    @return: the ISO string; C{seconds} itself when it is not a representable
        date.
    """
    try:
        when = _EPOCH + datetime.timedelta(milliseconds=math.trunc(seconds * 1000))
    except (OverflowError, ValueError, TypeError):
        return seconds
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (
        when.year, when.month, when.day, when.hour, when.minute, when.second,
        when.microsecond // 1000)


def is_token_expired(token: object, now: Union[float, Callable[[], float]]) -> bool:
    """
    Whether the auth token C{token} has expired, as SocketCluster checks it on
    inbound events and pongs.

    @param token: the token's claims (a dict), or C{None}.
    @param now: the current POSIX time in seconds, or a callable returning it
        (such as C{reactor.seconds}).
    @return: C{True} when C{token} has a numeric C{exp} and C{now > exp};
        C{False} otherwise (no token, no C{exp}, or a non-numeric C{exp}).
    """
    if not isinstance(token, dict):
        return False
    exp = token.get("exp")
    if not _is_number(exp):
        return False
    if callable(now):
        now = now()
    return now > exp


def unverified_claims(signed_token: object) -> Optional[dict[str, Any]]:
    """
    Read the claims of a compact JWT B{without verifying it}.

    Meant for reading back the final claims (C{iat}, C{exp}, ...) of a token
    this process has just signed; never use it to trust a token from a peer.

    @return: the payload dict, or C{None} when C{signed_token} is not a
        decodable JWT.
    """
    if not isinstance(signed_token, str) or len(signed_token) > MAX_TOKEN_LENGTH:
        return None
    decoded = _decode_compact(signed_token)
    if decoded is None:
        return None
    return decoded[1]


@implementer(IAuthEngine)
class JWTAuthEngine:
    """
    The default auth engine: JSON Web Tokens via PyJWT.

    Both methods return their result directly (never a Deferred) and raise
    on failure.

    @ivar max_token_length: tokens longer than this many UTF-8 bytes are
        rejected before any decoding.
    """

    log = Logger(observer=log_observer)

    def __init__(
        self, now: Optional[Callable[[], float]] = None, max_token_length: int = MAX_TOKEN_LENGTH
    ) -> None:
        """
        @param now: a callable returning the current POSIX time in seconds
            (C{reactor.seconds}, C{Clock().seconds}); C{time.time} by
            default.
        @param max_token_length: see L{max_token_length}.
        """
        self._now = now if now is not None else time.time
        self.max_token_length = max_token_length
        self._jws = api_jws.PyJWS()

    def _timestamp(self):
        """The current time in whole seconds, as jsonwebtoken takes it."""
        return int(math.floor(self._now()))

    def sign_token(
        self, payload: Any, key: Any, options: Optional[Mapping[str, Any]] = None
    ) -> str:
        """
        Sign C{payload} as a compact JWT.

        The payload is copied; the copy gets C{iat} (the payload's own
        C{iat}, else now; left out with C{no_timestamp}), C{nbf = iat +
        not_before}, C{exp = iat + expires_in} unless the payload already has
        an C{exp} (the payload's C{exp} wins), and the C{aud}, C{iss},
        C{sub} and C{jti} claims of the C{audience}, C{issuer}, C{subject}
        and C{jwtid} options.

        @param payload: the claims, a dict of JSON-compatible values.
        @param key: the signature key: an HMAC secret (str or bytes) or a
            PEM private key.
        @param options: a dict with C{algorithm} (default C{"HS256"}; never
            C{"none"}), C{expires_in} (seconds or C{None}), C{not_before}
            (seconds), C{audience} (str or list of str), C{issuer},
            C{subject}, C{jwtid}, C{keyid} (strings), C{headers} (extra
            header fields, a dict) and C{no_timestamp} (bool).  The
            jsonwebtoken spellings C{expiresIn}, C{notBefore},
            C{noTimestamp} and C{header} are accepted too.
        @return: the signed token (C{str}).
        @raise InvalidArgumentsError: for a bad payload or option, an
            unknown option, or a claim option whose claim the payload
            already has (C{Bad "options.issuer" option. The payload already
            has an "iss" property.}), or when signing fails (for example an
            unusable key).
        """
        options = self._sign_options(options)
        algorithm = options.get("algorithm", "HS256")
        if not isinstance(algorithm, str) or algorithm.lower() == "none":
            raise InvalidArgumentsError(
                "Refusing to sign an auth token with algorithm {!r}".format(algorithm))
        if algorithm not in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS:
            raise InvalidArgumentsError(
                "Unsupported token algorithm {!r}".format(algorithm))
        if key is None or key == "" or key == b"":
            raise InvalidArgumentsError("secretOrPrivateKey must have a value")
        if not isinstance(payload, dict):
            raise InvalidArgumentsError('Expected "payload" to be a plain object.')

        claims = dict(payload)
        for name in ("iat", "exp", "nbf"):
            if name in claims and not _is_finite_number(claims[name]):
                raise InvalidArgumentsError(
                    '"{}" should be a number of seconds'.format(name))

        timestamp = claims.get("iat") or self._timestamp()
        if options.get("no_timestamp"):
            claims.pop("iat", None)
        else:
            claims["iat"] = timestamp

        not_before = options.get("not_before")
        if not_before is not None:
            if "nbf" in claims:
                raise InvalidArgumentsError(
                    'Bad "options.not_before" option the payload already has an "nbf" property.')
            if not _is_finite_number(not_before):
                raise InvalidArgumentsError('"not_before" should be a number of seconds')
            claims["nbf"] = _js_number(timestamp + not_before)

        expires_in = options.get("expires_in")
        if expires_in is not None and "exp" not in claims:
            if not _is_finite_number(expires_in):
                raise InvalidArgumentsError('"expires_in" should be a number of seconds')
            claims["exp"] = _js_number(timestamp + expires_in)

        for option, claim in _CLAIM_OPTIONS:
            value = options.get(option)
            if value is None:
                continue
            if claim in claims:
                raise InvalidArgumentsError(
                    'Bad "options.{}" option. The payload already has an "{}" property.'
                    .format(option, claim))
            valid = isinstance(value, str) or (
                option == "audience" and isinstance(value, list)
                and all(isinstance(item, str) for item in value))
            if not valid:
                raise InvalidArgumentsError('"{}" must be a string'.format(option)
                                            if option != "audience" else
                                            '"audience" must be a string or a list of strings')
            claims[claim] = value

        headers = options.get("headers")
        if headers is None:
            headers = {}
        if not isinstance(headers, dict):
            raise InvalidArgumentsError('"headers" must be a dict')
        headers = dict(headers)
        if headers.get("alg", algorithm) != algorithm:
            raise InvalidArgumentsError(
                'The "alg" header must not differ from the "algorithm" option')
        headers.pop("alg", None)
        if "b64" in headers or "crit" in headers:
            raise InvalidArgumentsError('The "b64" and "crit" headers are not supported')
        keyid = options.get("keyid")
        if keyid is not None:
            if not isinstance(keyid, str):
                raise InvalidArgumentsError('"keyid" must be a string')
            headers["kid"] = keyid

        try:
            body = json.dumps(claims, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise InvalidArgumentsError(
                "The auth token payload is not JSON-serializable: {}".format(e))
        try:
            return self._jws.encode(body, key, algorithm=algorithm,
                                    headers=headers or None)
        except (jwt_exceptions.PyJWTError, ValueError, TypeError,
                UnsupportedAlgorithm) as e:
            raise InvalidArgumentsError(
                "Failed to sign the auth token: {}".format(e)) from e

    def _sign_options(self, options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
        """Normalise and check the option names given to L{sign_token}."""
        normal = {}
        for name, value in (options or {}).items():
            name = _SIGN_ALIASES.get(name, name)
            if name not in _SIGN_OPTIONS:
                raise InvalidArgumentsError('"{}" is not allowed in "options"'.format(name))
            normal[name] = value
        return normal

    def verify_token(
        self, signed_token: Any, key: Any, options: Optional[Mapping[str, Any]] = None
    ) -> dict[str, Any]:
        """
        Verify C{signed_token} and return its claims.

        The checks, in order (the first failure is raised):
            1. C{None} or C{""}: C{AuthTokenInvalidError("jwt must be
               provided")}; not a string: C{AuthTokenError("Invalid token
               format - Token must be a string")}.
            2. Longer than L{max_token_length} bytes: L{AuthTokenInvalidError}
               (nothing is decoded).
            3. Not three dot-separated parts: C{"jwt malformed"}; three parts
               that do not decode to a JSON header and object payload:
               C{"invalid token"}.
            4. Empty signature: C{"jwt signature is required"}; no key:
               C{"secret or public key must be provided"}.
            5. The header's C{alg} not in C{algorithms} (C{none} is always
               dropped from it), or an C{HS*} token with an asymmetric key:
               C{"invalid algorithm"}.
            6. Bad signature: C{"invalid signature"}.
            7. C{nbf} not a number: C{"invalid nbf value"}; C{nbf > now +
               leeway}: C{AuthTokenNotBeforeError("jwt not active",
               date=<ISO date of nbf>)}.
            8. C{exp} not a number: C{"invalid exp value"}; C{now >= exp +
               leeway}: C{AuthTokenExpiredError("jwt expired", expiry=<ISO
               date of exp>)}.
        Anything else PyJWT or the key loading raises becomes
        C{AuthTokenError(str(error))}.  C{now} is the current time in whole
        seconds.

        @param signed_token: the compact JWT.
        @param key: the verification key: an HMAC secret or a PEM public key.
        @param options: a dict with C{algorithms} (the accepted list,
            required; take it from the configuration, never from the token),
            C{leeway} (seconds of clock skew allowed, default 0) and
            C{socket} (ignored).
        @return: the claims (a dict).
        @raise InvalidArgumentsError: when C{options} has no C{algorithms}
            list or a bad C{leeway}.
        """
        options = options or {}
        algorithms = options.get("algorithms")
        if isinstance(algorithms, str):
            algorithms = [algorithms]
        if not isinstance(algorithms, (list, tuple)):
            raise InvalidArgumentsError(
                "verify_token needs an 'algorithms' list in its options")
        allowed = [alg for alg in algorithms
                   if isinstance(alg, str) and alg.lower() != "none"]
        leeway = options.get("leeway")
        if leeway is None:
            leeway = 0
        if not _is_finite_number(leeway) or leeway < 0:
            raise InvalidArgumentsError("leeway must be a non-negative number of seconds")

        if signed_token is None:
            raise AuthTokenInvalidError("jwt must be provided")
        if not isinstance(signed_token, str):
            raise AuthTokenError("Invalid token format - Token must be a string")
        if signed_token == "":
            raise AuthTokenInvalidError("jwt must be provided")
        if (len(signed_token) > self.max_token_length
                or len(signed_token.encode("utf-8")) > self.max_token_length):
            raise AuthTokenInvalidError(
                "jwt too long: a token may be at most {} bytes".format(self.max_token_length))

        parts = signed_token.split(".")
        if len(parts) != 3:
            raise AuthTokenInvalidError("jwt malformed")
        decoded = _decode_compact(signed_token)
        if decoded is None:
            raise AuthTokenInvalidError("invalid token")
        header, payload = decoded

        if parts[2].strip() == "":
            raise AuthTokenInvalidError("jwt signature is required")
        if key is None or key == "" or key == b"":
            raise AuthTokenInvalidError("secret or public key must be provided")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in allowed:
            raise AuthTokenInvalidError("invalid algorithm")
        if alg in HMAC_ALGORITHMS and _is_asymmetric_key(key):
            raise AuthTokenInvalidError("invalid algorithm")

        try:
            self._jws.decode_complete(signed_token, key, algorithms=[alg])
        except jwt_exceptions.InvalidSignatureError:
            raise AuthTokenInvalidError("invalid signature")
        except jwt_exceptions.InvalidAlgorithmError:
            raise AuthTokenInvalidError("invalid algorithm")
        except jwt_exceptions.DecodeError:
            raise AuthTokenInvalidError("invalid token")
        except Exception as e:
            raise AuthTokenError(str(e))

        now = self._timestamp()
        if "nbf" in payload:
            nbf = payload["nbf"]
            if not _is_number(nbf):
                raise AuthTokenInvalidError("invalid nbf value")
            if nbf > now + leeway:
                raise AuthTokenNotBeforeError("jwt not active", date=iso_date(nbf))
        if "exp" in payload:
            exp = payload["exp"]
            if not _is_number(exp):
                raise AuthTokenInvalidError("invalid exp value")
            if now >= exp + leeway:
                raise AuthTokenExpiredError("jwt expired", expiry=iso_date(exp))
        return payload


def _load_public_key(data):
    """Load a PEM public key or certificate; return C{(key, pem_str)}."""
    try:
        key = serialization.load_pem_public_key(data)
        return key, None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        key = x509.load_pem_x509_certificate(data).public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidOptionsError(
            "auth_public_key is not a PEM public key or certificate")
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem.decode("ascii")


def _key_pair_algorithms(private_pem, public_pem):
    """
    Check a PEM key pair and return the algorithms it can be used with.

    @return: C{(algorithms, verification_key)}; C{verification_key} is the
        public key to verify with (a certificate is reduced to its key).
    @raise InvalidOptionsError: when a key does not load, the keys are not a
        pair, or the key type is not supported.
    """
    for name, value in (("auth_private_key", private_pem), ("auth_public_key", public_pem)):
        if not isinstance(value, (str, bytes)):
            raise InvalidOptionsError("{} must be a PEM string".format(name))
    public_key, converted = _load_public_key(_as_bytes(public_pem))
    try:
        private_key = serialization.load_pem_private_key(_as_bytes(private_pem), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InvalidOptionsError(
            "auth_private_key is not an unencrypted PEM private key: {}".format(e))

    def spki(key):
        return key.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)

    if spki(private_key.public_key()) != spki(public_key):
        raise InvalidOptionsError("auth_private_key and auth_public_key are not a key pair")
    if isinstance(public_key, rsa.RSAPublicKey):
        algorithms = RSA_ALGORITHMS
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        alg = _EC_CURVES.get(public_key.curve.name)
        if alg is None:
            raise InvalidOptionsError(
                "Unsupported elliptic curve {!r} for auth keys (use P-256, P-384 or P-521)"
                .format(public_key.curve.name))
        algorithms = (alg,)
    elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        algorithms = EDDSA_ALGORITHMS
    else:
        raise InvalidOptionsError(
            "Unsupported auth key type (use an RSA, EC or Ed25519/Ed448 key pair)")
    return algorithms, converted if converted is not None else public_pem


class AuthConfig:
    """
    The auth settings of a server.

    The attributes are plain and may be changed at run time (SocketCluster
    applications rotate keys on a running server); users of the config read
    them on every sign and verify.

    @ivar signature_key: the key tokens are signed with (an HMAC secret or a
        PEM private key).
    @ivar verification_key: the key tokens are verified with (the same HMAC
        secret, or a PEM public key).
    @ivar algorithm: the signing algorithm.
    @ivar verify_algorithms: the list of algorithms accepted on verification.
    @ivar default_expiry: seconds a token issued without C{expires_in} lives
        (C{None}: no C{exp}).
    @ivar leeway: seconds of clock skew allowed on C{exp} and C{nbf}.
    @ivar require_expiry: whether a token without C{exp} is refused (the
        C{auth_require_expiry} option; SocketCluster accepts such tokens
        forever, hence C{False} by default).
    @ivar random_key: whether the HMAC key was generated because none was
        configured.
    """

    def __init__(self, signature_key: Any, verification_key: Any, algorithm: str = "HS256",
                 verify_algorithms: Optional[Iterable[str]] = None,
                 default_expiry: Optional[float] = 86400.0, leeway: float = 0.0,
                 random_key: bool = False, require_expiry: bool = False) -> None:
        """
        Store the settings as given (no checks; see L{from_options}).
        """
        self.signature_key = signature_key
        self.verification_key = verification_key
        self.algorithm = algorithm
        self.verify_algorithms = (list(verify_algorithms) if verify_algorithms is not None
                                  else [algorithm])
        self.default_expiry = default_expiry
        self.leeway = leeway
        self.random_key = random_key
        self.require_expiry = require_expiry

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], log: Optional[Logger] = None
    ) -> "AuthConfig":
        """
        Build and check the auth configuration from server options.

        Rules:
            - C{auth_private_key} and C{auth_public_key} come together; they
              must load, be a key pair, and C{auth_algorithm} must be one of
              the pair's algorithms (RS*/PS* for RSA, ES256/384/512 for
              P-256/384/521, EdDSA for Ed25519/Ed448); C{auth_key} may not
              be given with them.
            - Without a key pair, C{auth_algorithm} must be HS256/384/512;
              C{auth_key} must be a non-empty secret that is not a PEM or
              SSH key; when it is C{None} a random 32-byte hex key is made
              and a warning is logged (such tokens neither survive a restart
              nor work across processes).
            - C{auth_verify_algorithms} (a list, or a comma/space separated
              string) defaults to C{[auth_algorithm]}; every entry must
              belong to the configured key's family, C{none} is refused, and
              it must include C{auth_algorithm}.
            - C{auth_default_expiry} is positive seconds or C{None};
              C{auth_leeway} is non-negative seconds.
            - C{auth_require_expiry} is a boolean (or a boolean word:
              C{true}/C{false}, C{yes}/C{no}, C{on}/C{off}, C{1}/C{0}).

        @param options: a mapping of option names to values; missing names
            take the defaults of L{scserver.options.DEFAULTS}.
        @param log: the C{Logger} for the random-key warning (a module
            logger by default).
        @return: an L{AuthConfig}.
        @raise InvalidOptionsError: when a rule above is broken.
        """
        log = log if log is not None else _log

        def get(name):
            return options.get(name, DEFAULTS[name])

        auth_key = get("auth_key")
        private_key = get("auth_private_key")
        public_key = get("auth_public_key")
        algorithm = get("auth_algorithm")
        verify_algorithms = get("auth_verify_algorithms")
        default_expiry = get("auth_default_expiry")
        leeway = get("auth_leeway")
        require_expiry = get("auth_require_expiry")
        random_key = False

        if not isinstance(algorithm, str):
            raise InvalidOptionsError("auth_algorithm must be a string")
        if algorithm.lower() == "none":
            raise InvalidOptionsError("auth_algorithm must not be 'none'")
        if algorithm not in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS:
            raise InvalidOptionsError(
                "Unsupported auth_algorithm {!r} (supported: {})".format(
                    algorithm, ", ".join(HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS)))

        if private_key is not None and public_key is None:
            raise InvalidOptionsError(
                "The auth_public_key option must be specified if auth_private_key is specified")
        if public_key is not None and private_key is None:
            raise InvalidOptionsError(
                "The auth_private_key option must be specified if auth_public_key is specified")

        if private_key is not None:
            if auth_key is not None:
                raise InvalidOptionsError(
                    "auth_key cannot be combined with auth_private_key and auth_public_key")
            family, verification_key = _key_pair_algorithms(private_key, public_key)
            if algorithm in HMAC_ALGORITHMS:
                raise InvalidOptionsError(
                    "auth_algorithm is {!r}, an HMAC algorithm, but auth_private_key and "
                    "auth_public_key are set: set auth_algorithm to one of {}".format(
                        algorithm, ", ".join(family)))
            if algorithm not in family:
                raise InvalidOptionsError(
                    "auth_algorithm {!r} does not match the configured key pair "
                    "(use one of {})".format(algorithm, ", ".join(family)))
            signature_key = private_key
        else:
            if algorithm not in HMAC_ALGORITHMS:
                raise InvalidOptionsError(
                    "auth_algorithm {!r} needs auth_private_key and auth_public_key; "
                    "with auth_key use one of {}".format(algorithm, ", ".join(HMAC_ALGORITHMS)))
            family = HMAC_ALGORITHMS
            if auth_key is None:
                auth_key = secrets.token_hex(32)
                random_key = True
                log.warn(
                    "No auth_key configured: auth tokens are signed with a random key. "
                    "They will not survive a restart and will not be accepted by other "
                    "processes; set auth_key (or auth_private_key and auth_public_key).")
            elif not isinstance(auth_key, (str, bytes)) or len(auth_key) == 0:
                raise InvalidOptionsError("auth_key must be a non-empty string")
            elif _is_asymmetric_key(auth_key):
                raise InvalidOptionsError(
                    "auth_key looks like a PEM or SSH key; use auth_private_key and "
                    "auth_public_key with an asymmetric auth_algorithm")
            signature_key = verification_key = auth_key

        if verify_algorithms is None:
            verify_algorithms = [algorithm]
        elif isinstance(verify_algorithms, str):
            verify_algorithms = [part for part in verify_algorithms.replace(",", " ").split()
                                 if part]
        elif isinstance(verify_algorithms, (list, tuple)):
            verify_algorithms = list(verify_algorithms)
        else:
            raise InvalidOptionsError("auth_verify_algorithms must be a list of algorithm names")
        if not verify_algorithms:
            raise InvalidOptionsError("auth_verify_algorithms must not be empty")
        for alg in verify_algorithms:
            if isinstance(alg, str) and alg.lower() == "none":
                raise InvalidOptionsError("auth_verify_algorithms must not contain 'none'")
            if alg not in family:
                raise InvalidOptionsError(
                    "auth_verify_algorithms entry {!r} is not usable with the configured "
                    "key (allowed: {})".format(alg, ", ".join(family)))
        if algorithm not in verify_algorithms:
            raise InvalidOptionsError(
                "auth_verify_algorithms must include auth_algorithm {!r}".format(algorithm))

        if default_expiry is not None and (not _is_finite_number(default_expiry)
                                           or default_expiry <= 0):
            raise InvalidOptionsError("auth_default_expiry must be a positive number of seconds")
        if not _is_finite_number(leeway) or leeway < 0:
            raise InvalidOptionsError("auth_leeway must be a non-negative number of seconds")
        if not isinstance(require_expiry, bool):
            words = {"1": True, "true": True, "yes": True, "on": True,
                     "0": False, "false": False, "no": False, "off": False}
            if not isinstance(require_expiry, str) or require_expiry.strip().lower() not in words:
                raise InvalidOptionsError("auth_require_expiry must be a boolean")
            require_expiry = words[require_expiry.strip().lower()]

        return cls(signature_key, verification_key, algorithm, verify_algorithms,
                   default_expiry, leeway, random_key=random_key,
                   require_expiry=require_expiry)

    def sign_options(self, expires_in: Optional[float] = None, **claims: Any) -> dict[str, Any]:
        """
        The options for L{IAuthEngine.sign_token}.

        @param expires_in: seconds the token lives; L{default_expiry} when
            C{None}.
        @param claims: further sign options (C{not_before}, C{audience},
            C{issuer}, C{subject}, C{jwtid}, C{keyid}, C{headers},
            C{no_timestamp}).
        @return: a new dict; its C{algorithm} is always L{algorithm}.
        """
        options = dict(claims)
        options["algorithm"] = self.algorithm
        options["expires_in"] = self.default_expiry if expires_in is None else expires_in
        return options

    def verify_options(self, socket: Any = None) -> dict[str, Any]:
        """
        The options for L{IAuthEngine.verify_token}.

        @param socket: the socket the token came from, or C{None}.
        @return: a new dict with C{algorithms} (a copy of
            L{verify_algorithms}), C{leeway} and C{socket}.
        """
        return {
            "algorithms": list(self.verify_algorithms),
            "leeway": self.leeway,
            "socket": socket,
        }
