"""The atheris harness in fuzz/: its corpus replays clean, its seeds are current, and a bounded
run of each target under the fuzzer finds nothing.

The bounded runs are CI's share of the fuzzing (a few seconds per target, from the committed
corpus); fuzz/README.md says how to run a target for an hour. Where atheris is not installed
(no wheel for the platform) they skip, except under CI, where that is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import seed
from fuzz.targets import TARGETS, PropertyError, chunked, join_input, split_input

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
RUNS = 200_000  # per target, or RUN_SECONDS, whichever ends first
RUN_SECONDS = 4


def corpus_files(target: str) -> list[Path]:
    return sorted(path for path in (CORPUS / target).iterdir() if path.is_file())


class TestCorpus:
    @pytest.mark.parametrize("target", sorted(TARGETS))
    def test_every_committed_input_passes(self, target: str) -> None:
        """Each file of the target's corpus (seeds, inputs the fuzzer found, and inputs that
        once crashed it) runs through the target without a failed check or an exception."""
        files = corpus_files(target)
        assert len(files) >= 5
        for path in files:
            TARGETS[target](path.read_bytes())

    def test_seeds_are_the_vectors(self) -> None:
        """The committed seed-* files are what ``python -m fuzz.seed`` writes today."""
        for target, files in seed.seeds().items():
            committed = {p.name: p.read_bytes() for p in corpus_files(target)}
            assert {n: d for n, d in committed.items() if n.startswith("seed-")} == files, (
                f"fuzz/corpus/{target} is stale: run python -m fuzz.seed"
            )


class TestHarness:
    def test_input_format_round_trips(self) -> None:
        data = join_input(3, [1, 256, 7], b"stream")
        assert split_input(data) == (3, [1, 256, 7], b"stream")
        assert list(chunked(b"abcdefghij", [1, 3])) == [b"a", b"bcd", b"e", b"fgh", b"i", b"j"]
        assert list(chunked(b"abc", [])) == [b"abc"]

    @pytest.mark.parametrize(
        "data",
        [
            b"\0\0\0\x10\0\0\0\x15\0\0\0\0\0\0\0\x01",  # enquire_link: accepted, round trips
            b"\0\0\0\x11\x80\0\0\x04\0\0\0\0\0\0\0\x01x",  # submit_sm_resp without its NUL
            b"\0\0\0\x05",  # shorter than a header
        ],
    )
    def test_decode_target_accepts_what_the_codec_promises(self, data: bytes) -> None:
        TARGETS["decode"](data)

    def test_a_broken_property_is_reported(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The checks bite: a codec whose decode leaks IndexError fails the decode target."""
        from fuzz import targets

        def leaky(frame: bytes) -> object:
            raise IndexError("leaked")

        monkeypatch.setattr(targets, "decode", leaky)
        with pytest.raises(IndexError):
            TARGETS["decode"](b"\0\0\0\x10\0\0\0\x15\0\0\0\0\0\0\0\x01")

        def lossy(pdu: object) -> bytes:
            return b"\0" * 16

        monkeypatch.undo()
        monkeypatch.setattr(targets, "encode", lossy)
        with pytest.raises(PropertyError, match="encode"):
            TARGETS["decode"](b"\0\0\0\x10\0\0\0\x15\0\0\0\0\0\0\0\x01")


def _atheris_or_skip() -> None:
    if importlib.util.find_spec("atheris") is not None:
        return
    if os.environ.get("CI"):
        pytest.fail("atheris is not installed: CI must run the bounded fuzz (pip install atheris)")
    pytest.skip("atheris is not installed (no wheel for this platform?)")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_bounded_fuzz_run_finds_nothing(target: str, tmp_path: Path) -> None:
    """``python -m fuzz.codec TARGET`` for a bounded number of runs from the committed corpus;
    new inputs go to a scratch directory, never into the repository."""
    _atheris_or_skip()
    found = tmp_path / "found"
    found.mkdir()
    command = [
        sys.executable,
        "-m",
        "fuzz.codec",
        target,
        f"-runs={RUNS}",
        f"-max_total_time={RUN_SECONDS}",
        "-timeout=10",  # one input running this long is a hang
        "-rss_limit_mb=1024",
        "-print_final_stats=1",
        f"-artifact_prefix={tmp_path}/",
        str(found),
        str(CORPUS / target),
    ]
    if os.environ.get("CI"):
        command.insert(5, "-seed=1")  # CI replays the same mutations every time
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    tail = "\n".join(result.stderr.splitlines()[-40:])
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name != "found")
    assert result.returncode == 0, f"the fuzzer found a bug ({crashes}):\n{tail}"
    assert crashes == [], tail
    assert "Done " in result.stderr, tail
