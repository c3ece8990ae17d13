"""Run one fuzz target of ``fuzz.targets`` under atheris (libFuzzer).

    python -m fuzz.codec TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is ``decode``, ``framing``, ``session`` or ``proxy_header``; the rest goes to libFuzzer as is
(``-max_total_time=3600``, ``-runs=20000``, ``-timeout=10``, ``-artifact_prefix=DIR/``, corpus
directories: new inputs are written to the first one). See fuzz/README.md.
"""

from __future__ import annotations

import shlex
import sys

import atheris

# Instrumented for coverage: the SMPP core and the checks (imported here first, nowhere else).
with atheris.instrument_imports(include=["gateway", "fuzz.targets"]):
    from fuzz.targets import TARGETS


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv if argv is None else argv)
    if len(args) < 2 or args[1] not in TARGETS:
        names = " | ".join(TARGETS)
        sys.stderr.write(f"usage: python -m fuzz.codec {{{names}}} [libFuzzer options] [DIR ...]\n")
        raise SystemExit(2)
    name = args.pop(1)
    # libFuzzer runs argv[0] through the shell for -merge, -fork and -jobs: make it this module.
    args[0] = shlex.join([sys.executable, "-m", "fuzz.codec", name])
    atheris.Setup(args, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
