"""Which combinations of settings make a working sidecar: the cross-field checks.

Each setting's own check lives with its field in `Settings`; whether they add up (a
grant's credentials present, a family lease longer than the request timeout, a report
endpoint with its token) is decided here, over one token's settings, as `Problem`s
(`problems.py`) so that each reader names the fields its own way. Every problem is
collected at once: a user fixing a manifest wants the whole list, not one per deploy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .kinds import ClientAuth, Grant
from .problems import Problem

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["combination_problems"]


def combination_problems(settings: Settings) -> list[Problem]:
    """What is wrong with how `settings` combine; empty when they make a working sidecar."""
    # Collect every cross-field problem at once: a user fixing a manifest wants the
    # whole list, not one error per deploy.
    problems: list[Problem] = []
    grant = ("grant",)

    def need(field: str, why: str, *refs: tuple[str, ...]) -> None:
        if getattr(settings, field) in (None, ""):
            problems.append(Problem((field,), f"required {why}", refs))

    if settings.issuer is None and settings.token_url is None:
        problems.append(
            Problem(
                ("issuer",),
                "one is required (an OIDC issuer to discover the token endpoint, or "
                "the endpoint itself)",
                alternatives=(("token_url",),),
            )
        )
    if settings.grant is Grant.REFRESH_TOKEN:
        need("refresh_token_file", "when {0}=refresh_token", grant)
    if settings.family_secret is not None and settings.grant is not Grant.REFRESH_TOKEN:
        problems.append(
            Problem(
                ("family_secret",),
                "only with {0}=refresh_token (a family is a shared refresh token), "
                f"not {settings.grant}",
                (grant,),
            )
        )
    if settings.family_secret is not None and settings.family_lease <= settings.timeout:
        # A holder still waiting for the IdP must never be overtaken (docs/family.md).
        problems.append(
            Problem(
                ("family_lease",),
                f"must be longer than {{0}} ({settings.timeout:g} s), so no pod takes over "
                "from a holder still waiting for the identity provider",
                (("timeout",),),
            )
        )
    if settings.grant in (Grant.TOKEN_EXCHANGE, Grant.JWT_BEARER):
        need("service_account_token_file", f"when {{0}}={settings.grant}", grant)
    auth = settings.effective_client_auth
    if auth in (ClientAuth.CLIENT_SECRET_BASIC, ClientAuth.CLIENT_SECRET_POST):
        need("client_secret_file", f"for client authentication {auth}")
    if auth is ClientAuth.PRIVATE_KEY_JWT:
        need("private_key_file", "for client authentication private_key_jwt")
    if auth is ClientAuth.SERVICE_ACCOUNT:
        need("service_account_token_file", "for client authentication service_account")
    if auth is not ClientAuth.NONE or settings.grant is Grant.CLIENT_CREDENTIALS:
        need("client_id", f"for grant {settings.grant} with client authentication {auth}")
    if settings.report_url is not None:
        need("report_token_file", "when {0} is set", ("report_url",))
    if settings.backoff_max < settings.backoff_initial:
        problems.append(
            Problem(
                ("backoff_max",),
                f"must be at least {{0}} ({settings.backoff_initial})",
                (("backoff_initial",),),
            )
        )
    return problems
