"""A real 3-node RabbitMQ cluster on this machine, for chaos tests and for people.

    python -m orderfleet.worker.dev.rabbit_cluster [--management]   # start, print URLs; Ctrl-C

    with RabbitCluster() as cluster:
        cluster.broker_url()                  # amqp://...:P0//;amqp://...:P1//;amqp://...:P2//
        node = cluster.leader_of("orders.p0")  # the index of the node leading a quorum queue
        cluster.stop_node(node)               # clean stop; kill_node(node): SIGKILL, a crash
        cluster.start_node(node)
        cluster.restart_all()

It runs the installed rabbitmq-server (3.10) through the scripts under /usr/lib/rabbitmq/bin:
Debian's /usr/sbin wrappers su to the rabbitmq user in a session of their own, out of reach of
our process group. Each node has its own name (of<id>-<i>@localhost), AMQP and distribution
ports (free ports, loopback only), config, enabled-plugins file, database and logs under one
temp dir; the cluster has an Erlang cookie of its own, in a HOME of its own that its nodes and
its rabbitmqctl calls share (RABBITMQ_ERLANG_COOKIE is deprecated in 3.10). RABBITMQ_CONF_ENV_FILE
points to the cluster's own (empty) file, so nothing of the machine's node (rabbit@localhost,
/etc/rabbitmq, /var/lib/rabbitmq) is read or touched; only epmd (port 4369) is shared, and it
outlives the nodes. The management plugin is off unless management=True (node 0 only).

The three nodes boot in parallel (about 6 s on this 2-core machine; clustering afterwards
with stop_app, join_cluster, start_app took 8-12 s): nodes 1 and 2 join node 0 while they boot
the first time, by classic-config peer discovery, retrying until node 0 answers; a node that
still came up alone is joined with stop_app, join_cluster, start_app. Quorum queues: declarers
pass x-queue-type=quorum and x-quorum-initial-group-size=3, a member (replica) on each node;
3.10 has no policy for the group size, and its default (seen here) is every node of this
cluster as well. Every node dies with the process that started it, even on SIGKILL (lifeline);
close() (the end of the with block) kills the nodes and deletes the temp dir, which only a
SIGKILLed starter leaves behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from orderfleet.worker.dev.lifeline import guarded_popen, lifeline

__all__ = ["RabbitCluster", "RabbitClusterError", "scripts_dir"]

HOST = "127.0.0.1"
SIZE = 3
BOOT_TIMEOUT = 120.0  # seconds for nodes to start and cluster (a busy 2-core machine)
STOP_TIMEOUT = 60.0  # seconds a clean stop may take before SIGKILL
CLI_TIMEOUT = 60.0
DISCOVERY_RETRIES, DISCOVERY_INTERVAL_MS = 120, 500  # a joining node waits 60 s for node 0
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")  # not on a normal user's PATH
T = TypeVar("T")


class RabbitClusterError(RuntimeError):
    """A node did not start, join, answer or stop as asked."""


def scripts_dir() -> Path | None:
    """The directory of the installed rabbitmq-server's own scripts (None: not installed)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which("rabbitmq-server", path=path)
    if found is None:
        return None
    directory = Path(found).resolve().parent  # Debian: the wrapper's dir holds the scripts
    return directory if (directory / "rabbitmq-server").is_file() else None


def free_ports(count: int) -> list[int]:
    """count distinct TCP ports free on the loopback interface (all held open while picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclass
class Node:
    """One node: its name, ports, directory and, once started, its process."""

    index: int
    name: str
    amqp_port: int
    dist_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def url(self, vhost: str = "/") -> str:
        """Its AMQP URL (guest may log in from loopback only, which is where we are)."""
        path = "/" if vhost == "/" else quote(vhost, safe="")
        return f"amqp://guest:guest@{HOST}:{self.amqp_port}/{path}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid_file(self) -> Path:
        return self.directory / "rabbitmq.pid"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its console output and of its log file, for an error message."""
        logs = [self.console_log, self.directory / "log" / f"{self.name}.log"]
        texts = [p.read_text(errors="replace")[-chars:] for p in logs if p.exists()]
        return "\n".join(texts)


class RabbitCluster:
    """size RabbitMQ nodes clustered on this machine under one temp dir (a context manager)."""

    def __init__(self, size: int = SIZE, management: bool = False) -> None:
        self.sbin = _require_scripts()
        self.id = uuid.uuid4().hex[:6]
        self.root = Path(tempfile.mkdtemp(prefix=f"orderfleet-rabbit-{self.id}-"))
        ports = free_ports(2 * size + 1)
        self.nodes = [self._new_node(i, *ports[2 * i : 2 * i + 2]) for i in range(size)]
        self.management_port = ports[-1] if management else None
        self.boot_seconds: float | None = None

    def _new_node(self, index: int, amqp_port: int, dist_port: int) -> Node:
        name = f"of{self.id}-{index}@localhost"
        return Node(index, name, amqp_port, dist_port, self.root / f"node{index}")

    def __enter__(self) -> RabbitCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Life cycle

    def start(self) -> RabbitCluster:
        """Write the nodes' files, start them in parallel and cluster them; ready on return."""
        began = time.monotonic()
        self._write_files()
        _each(self._launch, self.nodes)
        _each(self._await_startup, self.nodes)
        self._join(self._strays(), self.nodes[0])
        self.wait_ready()
        self.boot_seconds = time.monotonic() - began
        return self

    def close(self) -> None:
        """Kill every node (their data goes anyway) and delete the temp dir."""
        _each(self._kill, self.nodes)
        shutil.rmtree(self.root, ignore_errors=True)

    def stop_node(self, index: int, timeout: float = STOP_TIMEOUT) -> None:
        """Stop node index cleanly (SIGTERM: RabbitMQ's own shutdown); SIGKILL after timeout."""
        process = self.nodes[index].process
        if process is not None and process.poll() is None:
            process.terminate()  # the script passes SIGTERM on to the VM, and waits for it
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        self._kill(self.nodes[index])

    def kill_node(self, index: int) -> None:
        """SIGKILL node index (its whole process group), as a crash would."""
        self._kill(self.nodes[index])

    def start_node(self, index: int, timeout: float = BOOT_TIMEOUT) -> None:
        """Start node index again (it rejoins the cluster by itself); ready on return."""
        node = self.nodes[index]
        if not node.running():
            self._launch(node)
        self._await_startup(node, timeout)
        self.wait_ready(timeout)

    def restart_all(self, hard: bool = False, timeout: float = BOOT_TIMEOUT) -> None:
        """Stop every node (SIGKILL when hard), then start them all in parallel; ready on return."""
        _each(self.kill_node if hard else self.stop_node, range(len(self.nodes)))
        self.start_stopped_nodes(timeout)

    def start_stopped_nodes(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Start every node that is not running, in parallel; ready on return."""
        stopped = [node for node in self.nodes if not node.running()]
        _each(self._launch, stopped)
        _each(lambda node: self._await_startup(node, timeout), stopped)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Block until a node sees every node that runs a process as a running cluster member."""
        expected = {node.name for node in self.nodes if node.running()}
        deadline = time.monotonic() + timeout
        running: set[str] = set()
        while time.monotonic() < deadline:
            with contextlib.suppress(RabbitClusterError):  # a node may be between states
                running = self.running_nodes(timeout=max(deadline - time.monotonic(), 1.0))
            if expected <= running:
                return
            time.sleep(0.5)
        raise RabbitClusterError(f"running {sorted(running)}, not {sorted(expected)}")

    # Where and what

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def urls(self, vhost: str = "/") -> list[str]:
        """The AMQP URL of each node, in node order."""
        return [node.url(vhost) for node in self.nodes]

    def broker_url(self, vhost: str = "/") -> str:
        """A kombu failover URL over every node (`amqp://...;amqp://...`)."""
        return ";".join(self.urls(vhost))

    def management_url(self) -> str | None:
        """The management UI and HTTP API of node 0 (None: started without it)."""
        return f"http://{HOST}:{self.management_port}/" if self.management_port else None

    def running_nodes(self, timeout: float = CLI_TIMEOUT) -> set[str]:
        """The nodes the cluster sees as running (rabbitmqctl cluster_status)."""
        return set(self._json("cluster_status", timeout=timeout).get("running_nodes", []))

    def leader_of(self, queue: str, vhost: str = "/") -> int | None:
        """The index of the node leading quorum queue `queue` (None: no leader right now).

        Right after a node is lost, list_queues may miss the queues it led: None too."""
        leader = self._queues(vhost).get(queue, {}).get("leader")
        return self.names.index(leader) if leader in self.names else None

    def members_of(self, queue: str, vhost: str = "/") -> list[int]:
        """The indexes of the nodes holding a member (replica) of quorum queue `queue`."""
        row = self._queues(vhost).get(queue)
        if row is None:
            raise RabbitClusterError(f"no queue {queue!r} in vhost {vhost!r}")
        return sorted(self.names.index(name) for name in row["members"])

    def add_vhost(self, vhost: str) -> None:
        """Create a virtual host that guest may use fully."""
        node = self._any_running()
        self.ctl(node, "add_vhost", vhost)
        self.ctl(node, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        self.ctl(self._any_running(), "delete_vhost", vhost)

    def ctl(
        self, node: Node, *args: str, tool: str = "rabbitmqctl", timeout: float = CLI_TIMEOUT
    ) -> str:
        """Run a RabbitMQ CLI tool against node, with this cluster's cookie; its output."""
        process = guarded_popen(
            [str(self.sbin / tool), "-q", "-n", node.name, *args],
            env=self._cli_env(),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = _communicate(process, timeout, f"{tool} {' '.join(args)} on {node.name}")
        if process.returncode != 0:
            raise RabbitClusterError(f"{tool} {' '.join(args)} on {node.name}: {err or out}")
        return out

    # Implementation

    def _json(self, *args: str, timeout: float = CLI_TIMEOUT) -> Any:
        output = self.ctl(self._any_running(), *args, "--formatter", "json", timeout=timeout)
        return json.loads(output)

    def _queues(self, vhost: str) -> dict[str, dict[str, Any]]:
        rows = self._json("list_queues", "-p", vhost, "name", "leader", "members")
        return {row["name"]: row for row in rows}

    def _any_running(self) -> Node:
        for node in self.nodes:
            if node.running():
                return node
        raise RabbitClusterError("no node is running")

    def _write_files(self) -> None:
        home = self.root / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)  # Erlang refuses a cookie others may read
        (self.root / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf
        for node in self.nodes:
            node.directory.mkdir()
            (node.directory / "rabbitmq.conf").write_text(self._config(node))
            (node.directory / "enabled_plugins").write_text(self._plugins(node))

    def _config(self, node: Node) -> str:
        lines = [f"listeners.tcp.1 = {HOST}:{node.amqp_port}", "loopback_users.guest = true"]
        if node.index > 0:
            lines += self._discovery_lines()
        if node.index == 0 and self.management_port:
            lines += [
                f"management.tcp.ip = {HOST}",
                f"management.tcp.port = {self.management_port}",
            ]
        return "\n".join(lines) + "\n"

    def _discovery_lines(self) -> list[str]:
        """Join node 0 while booting the first time (classic config peer discovery), retrying."""
        return [
            "cluster_formation.peer_discovery_backend = classic_config",
            f"cluster_formation.classic_config.nodes.1 = {self.nodes[0].name}",
            f"cluster_formation.discovery_retry_limit = {DISCOVERY_RETRIES}",
            f"cluster_formation.discovery_retry_interval = {DISCOVERY_INTERVAL_MS}",
        ]

    def _plugins(self, node: Node) -> str:
        return "[rabbitmq_management]." if node.index == 0 and self.management_port else "[]."

    def _cli_env(self) -> dict[str, str]:
        """Our environment without RabbitMQ/Erlang settings, with the cluster's HOME (cookie)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.root / "home"),
            RABBITMQ_CONF_ENV_FILE=str(self.root / "rabbitmq-env.conf"),
            ERL_EPMD_ADDRESS=HOST,  # an epmd we happen to start listens on loopback only
        )
        return env

    def _node_env(self, node: Node) -> dict[str, str]:
        env = self._cli_env()
        env.update(
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_DIST_PORT=str(node.dist_port),
            RABBITMQ_CONFIG_FILE=str(node.directory / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(node.directory / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(node.directory / "mnesia"),
            RABBITMQ_LOG_BASE=str(node.directory / "log"),
            RABBITMQ_PID_FILE=str(node.pid_file),
            RABBITMQ_SCHEDULER_BIND_TYPE="u",  # three VMs share the cores: bind none to any
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _launch(self, node: Node) -> None:
        """Start node's rabbitmq-server in a process group of its own that dies with us."""
        node.pid_file.unlink(missing_ok=True)
        with node.console_log.open("ab") as log:
            node.process = guarded_popen(
                [str(self.sbin / "rabbitmq-server")],
                env=self._node_env(node),
                cwd=node.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _await_startup(self, node: Node, timeout: float = BOOT_TIMEOUT) -> None:
        """Wait for node's pid file (its VM is up), then for its app (rabbitmqctl await_startup)."""
        deadline = time.monotonic() + timeout
        while not node.pid_file.exists():
            if not node.running() or time.monotonic() > deadline:
                raise RabbitClusterError(f"{node.name} did not start:\n{node.log_tail()}")
            time.sleep(0.1)
        try:
            self.ctl(node, "await_startup", timeout=max(deadline - time.monotonic(), 1.0))
        except RabbitClusterError as exc:
            raise RabbitClusterError(f"{exc}\n{node.log_tail()}") from None

    def _strays(self) -> list[Node]:
        """The nodes that are not members of node 0's cluster (peer discovery gave up)."""
        members = self._json("cluster_status")["disk_nodes"]
        return [node for node in self.nodes if node.name not in members]

    def _join(self, nodes: list[Node], seed: Node) -> None:
        """Make nodes members of seed's cluster (stop_app, join_cluster, start_app)."""
        _each(lambda node: self.ctl(node, "stop_app"), nodes)
        for node in nodes:  # one at a time: both change the cluster's schema
            self.ctl(node, "join_cluster", seed.name)
        _each(lambda node: self.ctl(node, "start_app", timeout=BOOT_TIMEOUT), nodes)

    def _kill(self, node: Node) -> None:
        """SIGKILL node's process group (what is left of it); reap it."""
        if node.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait()
        lifeline.release_group(node.process.pid)
        node.process = None


def _require_scripts() -> Path:
    found = scripts_dir()
    if found is None:
        raise RabbitClusterError("rabbitmq-server is not installed (not on PATH nor in /usr/sbin)")
    return found


def _each(action: Callable[[T], object], items: Iterable[T]) -> None:
    """action on every item in parallel threads; the first error is raised after all ended."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(len(items), 1)) as pool:
        for future in [pool.submit(action, item) for item in items]:
            future.result()


def _communicate(process: subprocess.Popen[str], timeout: float, what: str) -> tuple[str, str]:
    """The process's stdout and stderr; its group is killed after timeout seconds."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RabbitClusterError(f"{what}: no answer in {timeout:.0f} s") from None
    finally:
        lifeline.release_group(process.pid)
    return out.strip(), err.strip()


def describe(cluster: RabbitCluster) -> str:
    """Where the cluster is, for a person: nodes, URLs, the env line, how to run rabbitmqctl."""
    lines = [f"{len(cluster.nodes)}-node RabbitMQ cluster up in {cluster.boot_seconds:.1f} s"]
    lines += [f"  node {n.index}  {n.name}  {n.url()}" for n in cluster.nodes]
    if cluster.management_url():
        lines.append(f"  management (guest/guest): {cluster.management_url()}")
    ctl = f"HOME={cluster.root / 'home'} {cluster.sbin / 'rabbitmqctl'} -n {cluster.nodes[0].name}"
    lines += [
        f"export ORDERFLEET_BROKER_URL={shlex.quote(cluster.broker_url())}",
        f"rabbitmqctl: {ctl} cluster_status",
        f"data and logs: {cluster.root}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Start a cluster, print where it is, keep it until Ctrl-C or SIGTERM, then remove it."""
    parser = argparse.ArgumentParser(prog="python -m orderfleet.worker.dev.rabbit_cluster")
    parser.add_argument("--management", action="store_true", help="management UI on node 0")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds the with block too
    print("starting 3 RabbitMQ nodes ...", flush=True)
    with RabbitCluster(management=args.management) as cluster:
        print(describe(cluster) + "\nCtrl-C stops the nodes and deletes their data.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
