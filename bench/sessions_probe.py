"""``python -m bench.sessions_probe run --config FILE``: the gateway under tracemalloc.

Runs ``gateway.cli.main`` with tracemalloc on (one frame per allocation) and, on SIGUSR1,
dumps a snapshot to the path named by ``SESSIONS_SNAPSHOT_DIR`` (``base.snap`` the first time,
``last.snap`` after), then creates the same name with ``.done`` so the caller knows the dump
is complete. Used by ``python -m bench.sessions --tracemalloc``; never by the daemon.
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def main() -> int:
    directory = Path(os.environ.get("SESSIONS_SNAPSHOT_DIR", "."))
    names = iter(("base.snap", "last.snap"))

    def dump(signum: int, frame: FrameType | None) -> None:
        path = directory / next(names, "last.snap")
        tracemalloc.take_snapshot().dump(str(path))
        path.with_suffix(".done").touch()

    tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, dump)
    from gateway import cli

    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
