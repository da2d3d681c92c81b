"""JWT claim decoding: base64url without padding, Bearer prefixes, malformed tokens."""

import base64

import orjson
import pytest

from common.jwt_claims import TokenFormatError, decode_claims, strip_bearer, try_decode_claims
from tests.kimi_emulator.tokens import mint_jwt


def _token(payload: bytes) -> str:
    enc = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"eyJhbGciOiJIUzUxMiJ9.{enc}.sig"


@pytest.mark.parametrize("extra", ["", "a", "ab", "abc"])  # every padding length
def test_decodes_payload_without_padding(extra):
    claims = decode_claims(_token(orjson.dumps({"typ": "refresh", "exp": 1700000000, "sub": "u" + extra})))
    assert (claims.typ, claims.exp, claims.sub) == ("refresh", 1700000000.0, "u" + extra)


def test_emulator_tokens_decode_and_carry_the_claims_clients_use():
    claims = decode_claims("Bearer " + mint_jwt({"typ": "access", "app_id": "kimi", "exp": 5, "iat": 1, "sub": "x"}))
    assert (claims.typ, claims.app_id, claims.exp, claims.iat) == ("access", "kimi", 5.0, 1.0)
    assert claims.seconds_left(2) == 3


@pytest.mark.parametrize("bad", ["", "abc", "a.b", "a..c", "a.!!!.c", _token(b"[1,2]"), _token(b"not json")])
def test_malformed_tokens_are_refused(bad):
    with pytest.raises(TokenFormatError):
        decode_claims(bad)
    assert try_decode_claims(bad) is None


def test_wrong_claim_types_read_as_missing():
    claims = decode_claims(_token(orjson.dumps({"exp": "soon", "typ": 3, "iat": True})))
    assert (claims.exp, claims.typ, claims.iat) == (None, None, None)


@pytest.mark.parametrize("raw,plain", [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("abc", "abc"), (" ", "")])
def test_strip_bearer(raw, plain):
    assert strip_bearer(raw) == plain
