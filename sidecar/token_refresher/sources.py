"""Where a settings model reads its values: the process environment, or given values alone.

The sidecar's `Settings` and the operator's `OperatorSettings` both need the two ways.
At run time each reads its own process environment. When the values come from elsewhere
— the operator validating the env it rendered for a pod, a named token built from the
unnamed one, a test — those values alone must count, or the validating process's own
environment would leak in. pydantic-settings picks a class's sources once, in
`settings_customise_sources`, not per call, so `from_values` sets a ContextVar for the
length of one validation and the sources follow it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any, Self

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

__all__ = ["EnvOrValues"]

# Set only while `from_values` validates. A ContextVar rather than a class attribute:
# the operator validates pods concurrently, and one validation must not switch another's
# sources.
_EXPLICIT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "token_refresher_explicit", default=False
)


class EnvOrValues(BaseSettings):
    """A settings model read from the environment (`Model()`) or from values alone
    (`Model.from_values(...)`)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _EXPLICIT.get():
            return (init_settings,)
        return (init_settings, env_settings)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        """The model from field values alone (`{"audience": "api"}`), never the process
        environment: each value is validated as its env var's text would be."""
        token = _EXPLICIT.set(True)
        try:
            return cls(**values)
        finally:
            _EXPLICIT.reset(token)
