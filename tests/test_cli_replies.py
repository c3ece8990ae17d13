"""``check-config`` on reply texts: CTIA warnings that never fail, length errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from tests.test_cli import ROOT, run_cli


def write(directory: Path, campaign: str) -> Path:
    db = (directory / "consent.db").as_posix()
    path = directory / "gateway.toml"
    path.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n\n[upstream]\naddress = "127.0.0.1:2776"\n\n'
        f'[store]\nurl = "sqlite://{db}"\n\n'
        '[consent.default]\nbrand = "ACME"\n[consent.default.replies]\n'
        'contact = "1-800-555-0100"\n\n'
        f"[[campaigns]]\n{campaign}",
        encoding="utf-8",
    )
    return path


CAMPAIGN = """name = "acme"
brand = "ACME"
numbers = ["+15550100"]
[campaigns.keywords]
languages = ["fr"]
[campaigns.replies]
contact = "1-800-555-0100"
help = "ACME: help at {contact}. Msg&data rates may apply. Reply STOP to cancel."
[campaigns.replies.fr]
opt_out = "ACME: merci."
"""


class TestWarnings:
    def test_warnings_are_printed_and_do_not_fail(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A HELP without the frequency, a French opt-out that confirms nothing and a French
        help that falls back to English are three warnings; the check still passes (exit 0)."""
        config = write(tmp_path, CAMPAIGN)
        assert main(["check-config", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
        assert warnings == [
            "warning: campaigns[0].replies.help: does not state the message frequency "
            '("Msg frequency varies", "4 msgs/month")',
            "warning: campaigns[0].replies.fr.help: not set: French keywords get the English "
            "text of campaigns[0].replies.help",
            "warning: campaigns[0].replies.fr.opt_out: does not confirm that no more messages "
            'will be sent ("Vous ne recevrez plus de messages", "désabonné")',
        ]
        assert ": OK (" in out

    def test_complete_replies_give_no_warning(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Brand and contact set and the default texts: no warning at all, in English and
        in the bundled French."""
        campaign = CAMPAIGN.split("help = ")[0]
        config = write(tmp_path, campaign.replace('languages = ["fr"]', "languages = []"))
        assert main(["check-config", "--config", str(config)]) == 0
        assert "warning:" not in capsys.readouterr().out

    def test_example_configs_pass_the_ctia_checks(self) -> None:
        """Every shipped example (its campaigns and the account default) passes the CTIA checks:
        check-config prints no warning for them."""
        for example in sorted((ROOT / "config").rglob("*.toml")):
            result = run_cli("check-config", "--config", str(example))
            warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
            assert warnings == [], example


class TestLengthError:
    def test_reply_over_one_segment_fails_naming_the_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A French help of 172 GSM characters: exit 2, the error names the key and the limit."""
        long_help = "ACME: " + "a" * 166
        config = write(tmp_path, CAMPAIGN + f'help = "{long_help}"\n')
        assert main(["check-config", "--config", str(config)]) == 2
        captured = capsys.readouterr()
        assert captured.err.strip() == (
            "smpp-gateway: config error: campaigns[0].replies.fr.help: 172 GSM characters, "
            "at most 160 (one segment)"
        )
        assert "warning:" not in captured.out
