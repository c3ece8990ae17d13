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
    ) -> None:
        self.directory = directory
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.sentinel_for = sentinel_for
        self.service_name = service_name
        self.replica_of = replica_of
        self.down_after_ms = down_after_ms  # Sentinel: silence before the master is down
        self.failover_timeout_ms = failover_timeout_ms
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
