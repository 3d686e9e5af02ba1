"""How long a freshly received token lives, from whatever the IdP told us.

In order of trust: `expires_in` (RFC 6749 section 5.1), measured on our own clock at
receipt so clock skew between us and the IdP does not matter; else the JWT `exp` claim,
read but not verified — it only times the refresh, the API that receives the token does
the verifying; else the configured default. We compute this ourselves instead of using
authlib's `OAuth2Token.is_expired`, whose default 60 s leeway makes tokens of a minute
or less look expired on arrival (authlib issue #716).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any, Literal

__all__ = ["MAX_LIFETIME", "LifetimeSource", "jwt_claims", "lifetime_from", "parse_expires_in"]

LifetimeSource = Literal["expires_in", "jwt_exp", "default", "family"]

# Longer than any access token we have seen; a bigger value is a bug on the other side
# (milliseconds sent as seconds, a year 9999 date) and would park the refresher for good.
MAX_LIFETIME = 366 * 24 * 3600.0


def parse_expires_in(value: Any) -> float | None:
    """`expires_in` as seconds, or None when absent; ValueError says what is wrong.

    Numeric strings are accepted: Azure AD v1 and some gateways send `"3599"`.
    """
    if value is None:
        return None
    if isinstance(value, bool):  # JSON true is an int to Python
        raise ValueError(f"expires_in is a boolean ({value!r}), not a number of seconds")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError("expires_in is not a number of seconds") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError(f"expires_in is a {type(value).__name__}, not a number of seconds")
    if not math.isfinite(number):
        raise ValueError("expires_in is not a finite number")
    if number <= 0:
        raise ValueError(f"expires_in is {number:g}: a token must live a positive time")
    if number > MAX_LIFETIME:
        raise ValueError(f"expires_in is {number:g} s, longer than the {MAX_LIFETIME:g} s allowed")
    return number


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWS compact token, unverified; None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def lifetime_from(
    expires_in: float | None, access_token: str, *, now: float, default: float
) -> tuple[float, LifetimeSource]:
    """Seconds the token lives from `now` (wall clock), and where that came from.

    Raises ValueError when the JWT says the token has already expired: either the IdP
    is broken or our clock is far ahead, and serving such a token helps nobody.
    """
    if expires_in is not None:
        return expires_in, "expires_in"
    claims = jwt_claims(access_token)
    exp = claims.get("exp") if claims else None
    if isinstance(exp, int | float) and not isinstance(exp, bool) and math.isfinite(exp):
        remaining = float(exp) - now
        if remaining <= 0:
            raise ValueError(
                f"the token's JWT exp is {-remaining:.0f} s in the past (is this clock skewed?)"
            )
        return min(remaining, MAX_LIFETIME), "jwt_exp"
    return default, "default"
