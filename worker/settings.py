"""The one place that reads ORDERFLEET_* environment variables."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources import PydanticBaseSettingsSource

ENV_PREFIX = "ORDERFLEET_"


class SettingsError(ValueError):
    """A setting has a value orderfleet cannot run with; the message names it."""


def _switch(value: object) -> object:
    """A boolean from one of the spellings the error message lists; other types as they are."""
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise PydanticCustomError("switch", "must be true or false (1/0, yes/no, on/off)")


_Switch = Annotated[bool, BeforeValidator(_switch)]


class Settings(BaseSettings):
    """Every knob of orderfleet; `None` URLs mean the embedded servers."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)

    broker_url: str | None = None
    redis_url: str | None = None
    database_url: str | None = None
    data_dir: Path = Path(".orderfleet")
    partitions: int = 16
    visibility_timeout: float = 30.0
    max_retries: int = 16
    retry_backoff_base: float = 0.05
    retry_backoff_max: float = 5.0
    db_lock_timeout: float = 5.0
    db_idle_timeout: float = 10.0
    lock_lease: float = 5.0
    key_prefix: str = "orderfleet:"
    broker_prefix: str = ""
    outbox_relay_after: float = 5.0
    outbox_relay_interval: float = 5.0
    stalled_after: float = 300.0
    flower_auth: str | None = None
    flower_port: int = 5555
    metrics_port: int | None = None
    log_level: str = "INFO"
    task_events: _Switch = True
    batching: _Switch = True
    batch_size: int = 500
    batch_interval: float = 0.05
    batch_linger: float = 0.0
    ready_file: Path | None = None
    quorum_group_size: int | None = None
    delivery_limit: int = 20

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given: `load_settings` alone reads the environment."""
        return (init_settings,)

    @property
    def lock_prefix(self) -> str:
        return f"{self.key_prefix}lock:"

    @property
    def flush_size(self) -> int:
        """Events a partition worker applies in one transaction at most (1: unbatched)."""
        return self.batch_size if self.batching else 1

    @property
    def largest_retry_countdown(self) -> float:
        """The longest countdown a retry can get (full jitter draws from 0 up to this)."""
        return min(self.retry_backoff_max, self.retry_backoff_base * 2**self.max_retries)


class _VariablesSource(EnvSettingsSource):
    """Settings' environment source reading a given mapping instead of os.environ."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        """The mapping, named as the source looks variables up (in lower case)."""
        return {name.lower(): value for name, value in self._env.items()}


_ENV = {name: f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}

_REASONS = {"int_parsing": "must be an integer", "float_parsing": "must be a number"}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ORDERFLEET_* variables; unset or empty ones keep their defaults."""
    env = os.environ if env is None else env
    return _settings_of(tuple((k, v) for k, v in env.items() if _is_variable(k) and v))


def _is_variable(name: str) -> bool:
    """Whether a name is one of ours: ORDERFLEET_ and upper case, as documented."""
    return name.startswith(ENV_PREFIX) and name.isupper()


@functools.lru_cache(maxsize=64)
def _settings_of(variables: tuple[tuple[str, str], ...]) -> Settings:
    """Settings of these variables, cached: a producer reads them on every publish."""
    values = _VariablesSource(dict(variables))()
    try:
        settings = Settings(**values)
    except ValidationError as invalid:
        raise SettingsError(_message(invalid.errors()[0])) from None
    _check_batching(settings)
    _check_rabbitmq(settings)
    return settings


def _message(error: ErrorDetails) -> str:
    """The first refused value, as `ORDERFLEET_NAME='value': must be ...`."""
    reason = _REASONS.get(error["type"], error["msg"])
    return f"{_ENV[str(error['loc'][0])]}={error['input']!r}: {reason}"


def _check_batching(settings: Settings) -> None:
    if not 1 <= settings.batch_size <= 1000:
        raise SettingsError(f"{_ENV['batch_size']}={settings.batch_size}: must be 1 to 1000")
    if not 0 < settings.batch_interval <= 1:
        raise SettingsError(
            f"{_ENV['batch_interval']}={settings.batch_interval}: must be above 0 and at most 1 s"
        )
    if not 0 <= settings.batch_linger <= settings.batch_interval:
        raise SettingsError(
            f"{_ENV['batch_linger']}={settings.batch_linger}: must be 0 to "
            f"{_ENV['batch_interval']} ({settings.batch_interval})"
        )


def _check_rabbitmq(settings: Settings) -> None:
    if settings.quorum_group_size is not None and settings.quorum_group_size < 1:
        raise SettingsError(
            f"{_ENV['quorum_group_size']}={settings.quorum_group_size}: must be at least 1"
        )
    if settings.delivery_limit < 1:
        limit = settings.delivery_limit
        raise SettingsError(f"{_ENV['delivery_limit']}={limit}: must be at least 1")


_CREDENTIALS = re.compile(r"([a-zA-Z][\w+.-]*://[^/:@\s]*:)[^/\s]*@")


def redact(text: str) -> str:
    """text with the password of every URL in it replaced by ***."""
    return _CREDENTIALS.sub(r"\1***@", text)


def env_name(field_name: str) -> str:
    """The environment variable that sets a Settings field."""
    return _ENV[field_name]
