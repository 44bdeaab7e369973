"""What the subprocesses of a bench run cost (CPU, memory), their commands and their logs."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

QUIET_PCT = 10.0
ERROR_MARKS = ("ERROR", "CRITICAL", "Traceback")


def celery_command(app_module: str) -> list[str]:
    """`python -m celery -A app_module` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", app_module]


def module_command(module: str) -> list[str]:
    """`python -m module` with this interpreter."""
    return [sys.executable, "-m", module]


def free_port() -> int:
    """A TCP port free on this machine now (for a process's metrics, known before it starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds of the workers, the servers and the whole machine at one instant."""

    at: float
    process_cpu: float
    server_cpu: float | None
    own_cpu: float
    machine_busy: float
    machine_total: float


class ResourceMonitor:
    """Watches worker processes: samples RSS in a thread, takes CPU snapshots on demand.

    `server_pids` (the embedded Redis and postmaster) are counted with their children.
    """

    def __init__(
        self, pids: Sequence[int], server_pids: Sequence[int] = (), interval: float = 0.2
    ) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self.server_pids = list(server_pids)
        self.interval = interval
        self.peak_rss = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, daemon=True)

    def __enter__(self) -> ResourceMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Record each process's RSS and high-water mark, keeping the largest seen."""
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                rss = max(proc.memory_info().rss, _vm_hwm(proc.pid))
                self.peak_rss[proc.pid] = max(self.peak_rss[proc.pid], rss)

    def snapshot(self) -> Snapshot:
        """CPU seconds used so far by the watched processes and by the machine."""
        servers = _tree_cpu(self.server_pids) if self.server_pids else None
        machine = psutil.cpu_times()
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        total = sum(machine)
        own = _own_cpu()
        return Snapshot(time.time(), _cpu(self.procs), servers, own, total - idle, total)

    def peak_rss_mb(self) -> float:
        """The largest resident set of any one watched process, in MiB."""
        self.sample()
        return max(self.peak_rss.values(), default=0) / 2**20


def _cpu(procs: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds of these processes (those gone count nothing)."""
    used = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            used += times.user + times.system
    return used


def _own_cpu() -> float:
    """CPU seconds of this process, its reaped children and its live descendants."""
    me = psutil.Process()
    times = me.cpu_times()
    reaped = times.children_user + times.children_system
    return times.user + times.system + reaped + _cpu(me.children(recursive=True))


def _tree_cpu(pids: Sequence[int]) -> float:
    """CPU seconds of these processes and their live descendants."""
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
    return _cpu(procs)


def _vm_hwm(pid: int) -> int:
    """The kernel's peak resident set of pid (VmHWM), in bytes; 0 where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def usage(before: Snapshot, after: Snapshot, messages: int, workers: int) -> dict[str, float]:
    """Worker CPU and machine load between two snapshots."""
    cpu = after.process_cpu - before.process_cpu
    span = max(after.machine_total - before.machine_total, 1e-9)
    result = {
        "worker_cpu_s": round(cpu, 3),
        "worker_cpu_s_per_worker": round(cpu / workers, 3),
        "worker_cpu_ms_per_message": _per_message(cpu, messages),
        "machine_cpu_busy_pct": round(100 * (after.machine_busy - before.machine_busy) / span, 1),
        "machine_cpu_s": round(after.machine_busy - before.machine_busy, 3),
    }
    if before.server_cpu is not None and after.server_cpu is not None:
        servers = after.server_cpu - before.server_cpu
        result["server_cpu_s"] = round(servers, 3)
        result["server_cpu_ms_per_message"] = _per_message(servers, messages)
        own = after.own_cpu - before.own_cpu + servers
        other = (after.machine_busy - before.machine_busy) - own
        result["other_cpu_pct"] = round(max(0.0, 100 * other / span), 1)
    return result


def _per_message(seconds: float, messages: int) -> float:
    return round(1000 * seconds / messages, 4) if messages else 0.0


def wait_quiet(limit: float, threshold: float = QUIET_PCT, sample: float = 2.0) -> float:
    """Wait up to `limit` s until the machine is under `threshold` % CPU busy; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if psutil.cpu_percent(interval=min(sample, limit)) < threshold:
            break
    return round(time.monotonic() - started, 1)


def server_pids(data_dir: Path | None) -> list[int]:
    """The embedded redis-server and postmaster pids of data_dir (none for external servers)."""
    if data_dir is None:
        return []
    pids = []
    for pid_file in (data_dir / "redis" / "redis.pid", data_dir / "postgres" / "postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int(pid_file.read_text().split()[0]))
    return [pid for pid in pids if psutil.pid_exists(pid)]


def log_errors(log_dir: Path, limit: int = 5) -> dict[str, list[str]]:
    """The first ERROR / CRITICAL / Traceback lines of each process log in log_dir, by name."""
    found: dict[str, list[str]] = {}
    for path in sorted(log_dir.glob("*.log")):
        lines = [
            line.strip()[:300]
            for line in path.read_text(errors="replace").splitlines()
            if any(mark in line for mark in ERROR_MARKS)
        ]
        if lines:
            found[path.stem] = lines[:limit]
    return found
