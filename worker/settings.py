"""The one place that reads ORDERFLEET_* environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path


class SettingsError(ValueError):
    """A setting has a value orderfleet cannot run with; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Every knob of orderfleet; `None` URLs mean the embedded servers."""

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
    task_events: bool = True
    batching: bool = True
    batch_size: int = 500
    batch_interval: float = 0.05
    batch_linger: float = 0.0
    ready_file: Path | None = None

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


_ENV = {f.name: f"ORDERFLEET_{f.name.upper()}" for f in fields(Settings)}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ORDERFLEET_* variables; unset ones keep their defaults."""
    env = os.environ if env is None else env
    values = {}
    for field in fields(Settings):
        raw = env.get(_ENV[field.name])
        if raw is not None and raw != "":
            values[field.name] = _convert(field.name, field.type, raw)
    settings = Settings(**values)
    _check_batching(settings)
    return settings


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


def _convert(name: str, kind: object, raw: str) -> object:
    text = str(kind)
    if text == "bool":
        return _boolean(name, raw)
    try:
        if "Path" in text:
            return Path(raw)
        if "int" in text:
            return int(raw)
        if "float" in text:
            return float(raw)
    except ValueError:
        kind_name = "an integer" if "int" in text else "a number"
        raise SettingsError(f"{_ENV[name]}={raw!r}: must be {kind_name}") from None
    return raw


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{_ENV[name]}={raw!r}: must be true or false (1/0, yes/no, on/off)")


_CREDENTIALS = re.compile(r"([a-zA-Z][\w+.-]*://[^/:@\s]*:)[^/\s]*@")


def redact(text: str) -> str:
    """text with the password of every URL in it replaced by ***."""
    return _CREDENTIALS.sub(r"\1***@", text)


def env_name(field_name: str) -> str:
    """The environment variable that sets a Settings field."""
    return _ENV[field_name]
