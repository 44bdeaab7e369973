"""Fleet processes (workers, beat, producers) as supervised subprocesses: demo, bench, tests.

Each runs in a process group of its own and dies with its starter (worker/dev/lifeline.py); a
Supervisor remembers what it started and stops all of it, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from orderfleet.worker.dev.lifeline import lifeline
from orderfleet.worker.metrics import scrape

ORDERFLEET_COMMAND = (sys.executable, "-m", "orderfleet.worker")
STOP_TIMEOUT = 20.0  # seconds a warm shutdown may take before SIGKILL
READY_TIMEOUT = 90.0


class FleetProcess:
    """One subprocess (by default `orderfleet ARGS`) with its own log file and process group."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        log_dir: Path,
        command: Sequence[str] = ORDERFLEET_COMMAND,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.args = args
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.ready_path = log_dir / f"{name}.ready"
        self.env["ORDERFLEET_READY_FILE"] = str(self.ready_path)
        self.env.setdefault("ORDERFLEET_METRICS_PORT", "0")  # a free port, in the ready file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> FleetProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.ready_path.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command, *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        lifeline.guard_group(self.process.pid)  # ends with us, even if we are SIGKILLed
        return self

    def hand_over(self) -> None:
        """Let this process outlive its starter (demo --keep-running)."""
        lifeline.release_group(self.pid)

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        assert self.process is not None, f"{self.name} was never started"
        return self.process

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics_url(self) -> str | None:
        """Where this process serves /metrics, as its ready file says (None: nowhere yet)."""
        try:
            port = json.loads(self.ready_path.read_text()).get("metrics_port")
        except (OSError, ValueError, AttributeError):
            return None
        return f"http://127.0.0.1:{port}/metrics" if port else None

    def wait_ready(self, timeout: float = 60.0) -> FleetProcess:
        """Block until the process touches its ready file; raise with its log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_path.exists():
                return self
            if not self.alive():
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log_text()[-3000:]}")

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end; kill it and raise after timeout seconds."""
        assert self.process is not None, f"{self.name} was never started"
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(
                f"{self.name} did not finish in {timeout:.0f} s:\n{self.log_text()[-3000:]}"
            ) from None
        self._release()
        return code

    def terminate(self) -> None:
        """Begin a warm shutdown (SIGTERM: finish or re-queue the message in hand)."""
        if self.alive():
            self._signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Warm shutdown (SIGTERM: finish or re-queue the message in hand), then SIGKILL."""
        if not self.alive():
            self._release()
            return None if self.process is None else self.process.returncode
        self.terminate()
        try:
            code = self.process.wait(timeout)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            return self.kill()
        self._release()
        return code

    def kill(self) -> int | None:
        """SIGKILL the whole process group, as a crash would."""
        if self.alive():
            self._signal(signal.SIGKILL)
        if self.process is None:
            return None
        code = self.process.wait(10)
        self._release()
        return code

    def _release(self) -> None:
        """It ended: the watchdog must not signal its (reusable) group id later."""
        if self.process is not None:
            lifeline.release_group(self.process.pid)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


class Supervisor:
    """Every process it starts, so that all of them are stopped whatever happens."""

    def __init__(self, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.stop_timeout = stop_timeout
        self.processes: list[FleetProcess] = []

    def start(self, process: FleetProcess) -> FleetProcess:
        """Start one process and remember it."""
        self.processes.append(process)
        return process.start()

    def start_ready(
        self, processes: Sequence[FleetProcess], timeout: float = READY_TIMEOUT
    ) -> list[FleetProcess]:
        """Start all, then wait until each one reports ready."""
        for process in processes:
            self.start(process)
        return [process.wait_ready(timeout) for process in processes]

    def stop(self, processes: Sequence[FleetProcess]) -> None:
        """Warm-stop these processes together (SIGKILL after the timeout) and forget them."""
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for process in processes:
            process.stop(timeout=max(0.0, deadline - time.monotonic()))
        self._forget(processes)

    def kill(self, processes: Sequence[FleetProcess]) -> None:
        """SIGKILL these processes, as a crash would, and forget them."""
        for process in processes:
            process.kill()
        self._forget(processes)

    def stop_all(self) -> None:
        """Stop every process still remembered (SIGKILL if that fails); never raises."""
        running = list(self.processes)
        with contextlib.suppress(Exception):
            self.stop(running)
        with contextlib.suppress(Exception):
            self.kill(running)
        self.processes.clear()

    def hand_over(self) -> list[FleetProcess]:
        """Let every process outlive its starter, forgotten here (demo --keep-running)."""
        handed, self.processes = self.processes, []
        for process in handed:
            process.hand_over()
        return handed

    def tallies(self) -> dict[str, int]:
        """The tallies of the live processes (applied, duplicate, retry:<cause>, ...)."""
        return tallies_of(p for p in self.processes if p.alive())

    def _forget(self, processes: Sequence[FleetProcess]) -> None:
        gone = {id(process) for process in processes}
        self.processes = [p for p in self.processes if id(p) not in gone]


def tallies_of(processes: Iterable[FleetProcess]) -> dict[str, int]:
    """The tallies summed over these processes' Prometheus metrics (applied, duplicate,
    retry:<cause>, ...); a process that serves none yet counts nothing."""
    return scrape(url for url in (p.metrics_url() for p in processes) if url is not None)
