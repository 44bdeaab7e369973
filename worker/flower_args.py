"""The arguments of `orderfleet flower`: basic auth from ORDERFLEET_FLOWER_AUTH, and the port."""

from __future__ import annotations

from orderfleet.worker.settings import Settings, env_name


def flower_auth(settings: Settings) -> str:
    """The basic-auth credentials for Flower; raises ValueError naming the setting."""
    name = env_name("flower_auth")
    auth = settings.flower_auth
    if not auth:
        raise ValueError(f"{name} is not set: set it to user:password, or pass --no-auth")
    for pair in auth.split(","):
        user, _, password = pair.partition(":")
        if not user or not password:
            raise ValueError(f"{name} must be user:password (comma-separated for several)")
    return auth


def flower_argv(port: int, auth: str | None) -> list[str]:
    """The `celery flower` arguments: the port and, unless None, basic auth."""
    argv = ["flower", f"--port={port}"]
    if auth is not None:
        argv.append(f"--basic-auth={auth}")
    return argv
