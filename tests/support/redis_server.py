"""A real ``redis-server`` for tests: free loopback port, temp directory, fsync on every write.

Start, stop (SIGTERM), kill (SIGKILL) and restart on the same port and data directory, so fault
tests can cut Redis away under a store and bring it back. Readiness is the server's own
"Ready to accept connections" line, never a sleep. A server can be a replica of another
(``replica_of``) or a Sentinel watching one (``sentinel_for``, run by ``redis-sentinel`` where
installed, else ``redis-server --sentinel``): with both, failover runs here on loopback.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

READY_LINE = "Ready to accept connections"


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def redis_sentinel_binary() -> str | None:
    """The Sentinel binary of Debian's ``redis-sentinel`` package."""
    return shutil.which("redis-sentinel")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process (or a Sentinel, with ``sentinel_for``) owned by a test."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        sentinel_for: tuple[str, int] | None = None,
        service_name: str = "mymaster",
        replica_of: tuple[str, int] | None = None,
        down_after_ms: int = 5000,
        failover_timeout_ms: int = 180_000,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.sentinel_for = sentinel_for
        self.service_name = service_name
        self.replica_of = replica_of
        self.down_after_ms = down_after_ms  # Sentinel: silence before the master is down
        self.failover_timeout_ms = failover_timeout_ms
        self.extra_args = tuple(extra_args)  # e.g. cluster mode's options
        self._process: subprocess.Popen[str] | None = None
        self._output: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _argv(self, binary: str) -> Sequence[str]:
        common = ["--port", str(self.port), "--bind", self.host, "--dir", str(self.directory)]
        if self.sentinel_for is None:
            replica = [] if self.replica_of is None else ["--replicaof", *map(str, self.replica_of)]
            return [
                binary,
                *common,
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                "",
                # A replica's first sync starts at once (Redis waits 5 s for more by default).
                "--repl-diskless-sync-delay",
                "0",
                *replica,
                *self.extra_args,
            ]
        config = self.directory / "sentinel.conf"
        if not config.exists():  # a sentinel rewrites its config; keep it across restarts
            host, port = self.sentinel_for
            name = self.service_name
            config.write_text(
                f"sentinel monitor {name} {host} {port} 1\n"
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            )
        sentinel = redis_sentinel_binary()
        if sentinel is not None:
            return [sentinel, str(config), *common, "--logfile", ""]
        return [binary, str(config), "--sentinel", *common, "--logfile", ""]

    def start(self, timeout_s: float = 10.0) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        ready = threading.Event()
        process = subprocess.Popen(
            self._argv(binary),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.directory,
        )
        self._process = process

        def drain() -> None:
            # Keep reading so the server never blocks on a full pipe; note readiness.
            assert process.stdout is not None
            for line in process.stdout:
                self._output.append(line)
                if READY_LINE in line or "+monitor master" in line:
                    ready.set()
            ready.set()  # exited: let start() report it

        threading.Thread(target=drain, name=f"redis-{self.port}-log", daemon=True).start()
        if not ready.wait(timeout_s) or process.poll() is not None:
            self.kill()
            raise RuntimeError("redis-server did not start:\n" + "".join(self._output[-20:]))

    def _end(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # never leave a server behind a failed test
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self._process = None

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Crash it (SIGKILL): only what was fsync'ed survives."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Start again on the same port and data directory."""
        self.stop()
        self.start()


def redis_cli_binary() -> str | None:
    return shutil.which("redis-cli")


class RedisClusterServers:
    """Three cluster-enabled masters on loopback, joined with ``redis-cli --cluster create``.

    No replicas: a master killed takes its slots away until it is started again (on the same
    port and directory, so it rejoins with its data). ``cluster-node-timeout`` is short so the
    cluster notices a node down in about a second.
    """

    NODE_TIMEOUT_MS = 1000

    def __init__(self, directory: Path, *, masters: int = 3) -> None:
        self.servers = [
            RedisServer(
                directory / f"node{i}",
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(self.NODE_TIMEOUT_MS),
                    # The bus port is port + 10000 unless set: a free one of its own.
                    "--cluster-port",
                    str(free_port()),
                ),
            )
            for i in range(masters)
        ]

    @property
    def hosts(self) -> str:
        return ",".join(f"{s.host}:{s.port}" for s in self.servers)

    @property
    def url(self) -> str:
        return f"redis+cluster://{self.hosts}"

    def _cli(self, *args: str, port: int | None = None, timeout_s: float = 30.0) -> str:
        cli = redis_cli_binary()
        if cli is None:
            raise RuntimeError("redis-cli is not installed")
        target = ["-h", "127.0.0.1", "-p", str(port)] if port is not None else []
        done = subprocess.run(
            [cli, *target, *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def cluster_ok(self) -> bool:
        """Every running node reports ``cluster_state:ok``."""
        for server in self.servers:
            if not server.running:
                continue
            try:
                info = self._cli("cluster", "info", port=server.port, timeout_s=5)
            except (RuntimeError, subprocess.TimeoutExpired):
                return False
            if "cluster_state:ok" not in info:
                return False
        return True

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.cluster_ok():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.05)  # polling the cluster's own state, not waiting for luck

    def start(self) -> None:
        for server in self.servers:
            server.start()
        self._cli(
            "--cluster",
            "create",
            *(f"{s.host}:{s.port}" for s in self.servers),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        )
        self.wait_ok()

    def flushall(self) -> None:
        for server in self.servers:
            self._cli("flushall", port=server.port)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
