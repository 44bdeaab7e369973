"""Processes and embedded servers that die with the process that started them, however it dies.

The demo, the bench and the tests start workers (each in a process group of its own, so a
signal to one never reaches the others) and embedded servers (daemons, shared between
processes). Neither dies by itself with its starter. A watchdog does it: a small process in a
session of its own that blocks reading a pipe whose only writer is the starter. End of file
means the starter is gone (exit, crash or SIGKILL alike); the watchdog then ends every process
group and stops the embedded servers of every data directory it was told of, and exits.

    from orderfleet.worker.dev.lifeline import lifeline
    lifeline.guard_group(process.pid)      # a child started with start_new_session=True
    lifeline.guard_data_dir(data_dir)      # embedded servers started under data_dir
    lifeline.guard_vhost(name)             # a RabbitMQ virtual host made for a run
    lifeline.release_group(process.pid)    # handed over: it may outlive us (demo --keep-running)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

GRACE = 3.0  # seconds a process group gets for a warm shutdown before SIGKILL


class Lifeline:
    """This process's end of the pipe to its watchdog (started on first use)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._pipe: int | None = None
        self._owner: int | None = None

    def guard_group(self, pgid: int) -> None:
        """End process group pgid when this process dies."""
        self._say(f"group {pgid}")

    def release_group(self, pgid: int) -> None:
        """Leave process group pgid alone (it ended, or is handed over)."""
        self._say(f"-group {pgid}")

    def guard_data_dir(self, data_dir: Path) -> None:
        """Stop the embedded servers of data_dir when this process dies."""
        self._say(f"dir {Path(data_dir).expanduser().resolve()}")

    def release_data_dir(self, data_dir: Path) -> None:
        """Leave the embedded servers of data_dir running after this process."""
        self._say(f"-dir {Path(data_dir).expanduser().resolve()}")

    def guard_vhost(self, vhost: str, node: str | None = None) -> None:
        """Delete RabbitMQ virtual host `vhost` (of `node`, else the default node) when this
        process dies: a SIGKILLed bench or test would leave it and its queues behind."""
        self._say(f"vhost {vhost} {node or '-'}")

    def release_vhost(self, vhost: str, node: str | None = None) -> None:
        """Leave virtual host `vhost` alone (it was deleted)."""
        self._say(f"-vhost {vhost} {node or '-'}")

    def _say(self, line: str) -> None:
        with self._guard:
            os.write(self._writer(), f"{line}\n".encode())

    def _writer(self) -> int:
        if self._pipe is None or self._owner != os.getpid():
            self._pipe, self._owner = _start_watchdog(), os.getpid()
        return self._pipe


def _start_watchdog() -> int:
    """Start the watchdog; the write end of its pipe (not inherited by our other children)."""
    reader, writer = os.pipe()
    subprocess.Popen(
        [sys.executable, "-m", "orderfleet.worker.dev.lifeline", str(reader)],
        pass_fds=(reader,),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(reader)
    return writer


lifeline = Lifeline()


def guarded_popen(args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen in a process group of its own that ends with this process."""
    process = subprocess.Popen(args, start_new_session=True, **kwargs)
    lifeline.guard_group(process.pid)
    return process


def watch(reader: int) -> None:
    """The watchdog: collect what to end until end of file, then end it all."""
    guarded: dict[str, set[str]] = {"group": set(), "dir": set(), "vhost": set()}
    with os.fdopen(reader, encoding="utf-8") as pipe:
        for line in pipe:
            kind, _, value = line.strip().partition(" ")
            _note(kind, value, guarded)
    end_groups({int(group) for group in guarded["group"]})
    for data_dir in guarded["dir"]:
        with contextlib.suppress(Exception):
            _stop_embedded(Path(data_dir))
    for vhost in guarded["vhost"]:
        with contextlib.suppress(Exception):
            _delete_vhost(*vhost.split(" "))


def _note(kind: str, value: str, guarded: dict[str, set[str]]) -> None:
    """Add (`group N`, `dir PATH`, `vhost NAME NODE`) or remove (the same with a leading `-`)
    a guarded item."""
    items = guarded[kind.lstrip("-")]
    items.discard(value) if kind.startswith("-") else items.add(value)


def end_groups(groups: set[int], grace: float = GRACE) -> None:
    """SIGTERM every group (a warm shutdown), then SIGKILL what is left after `grace` s."""
    alive = {g for g in groups if _signal_group(g, signal.SIGTERM)}
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {g for g in alive if _signal_group(g, 0)}
    for group in alive:
        _signal_group(group, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; whether any process of it was there."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stop_embedded(data_dir: Path) -> None:
    from orderfleet.worker.dev import embedded  # only a watchdog that guards a data dir needs it

    embedded.stop(data_dir)


def _delete_vhost(vhost: str, node: str) -> None:
    from orderfleet.worker.dev.scratch import rabbitmqctl  # only a watchdog that guards one

    rabbitmqctl(["delete_vhost", vhost], None if node == "-" else node)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]))
