"""The commands' own errors: an output path that cannot be written is one `Error:` line naming it
(exit 2), and a bug is one line too unless NEWSDESK_DEBUG asks for the traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline import cli
from tests.conftest import run_newsdesk


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_newsdesk(
        "run", "fixtures/articles/zh-rrr-cut.txt", "--replay", "fixtures/recordings", "--out", out
    )
    assert result.returncode == 0, result.stderr
    return out


def unwritable(tmp_path: Path) -> list[Path]:
    """A folder where a file is wanted, and a path under a file."""
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    return [tmp_path, tmp_path / "a-file" / "below"]


@pytest.mark.parametrize("command", ["eval", "diff", "render"])
def test_an_output_path_that_cannot_be_written_is_one_error_line(
    run_out: Path, tmp_path: Path, command: str
) -> None:
    [analysis] = run_out.glob("articles/*/analysis.json")
    for target in unwritable(tmp_path):
        args = {
            "eval": ["eval", "fixtures", "--report", target],
            "diff": ["diff", run_out, run_out, "--html", target],
            "render": ["render", analysis, "--out", target / "a-file" if target == tmp_path else target],
        }[command]
        result = run_newsdesk(*args)
        assert result.returncode == 2, (args, result.stderr)
        [line] = result.stderr.splitlines()
        shown = args[-1]
        assert line.startswith(f"Error: {shown}: cannot be written ("), line
        assert "Traceback" not in result.stderr


def test_a_bug_is_one_line_and_the_traceback_comes_with_newsdesk_debug(
    run_out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug in the diff")

    monkeypatch.setattr(cli, "diff_runs", broken)
    monkeypatch.setattr(sys, "argv", ["newsdesk", "diff", str(run_out), str(run_out)])
    monkeypatch.delenv("NEWSDESK_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "Error: internal error (RuntimeError: a bug in the diff); "
        "rerun with NEWSDESK_DEBUG=1 for the traceback"
    ]
    monkeypatch.setenv("NEWSDESK_DEBUG", "1")
    with pytest.raises(SystemExit):
        cli.main()
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "RuntimeError: a bug in the diff" in err


@pytest.mark.parametrize(("args", "message"), [
    (["run"], "Error: Missing argument 'PATH'."),
    (["run", "in", "--out", "o", "--concurrency", "many"], "Error: Invalid value for '--concurrency': "),
    (["run", "in", "--out", "o", "--bogus"], "Error: No such option: --bogus"),
    (["fixtures", "status", "--nope"], "Error: No such option: --nope"),
    (["run", "in", "--out"], "Error: Option '--out' requires an argument."),
    (["fixtures", "status", "--recordings"], "Error: Option '--recordings' requires an argument."),
])  # fmt: skip
def test_a_usage_error_is_one_line_naming_the_help_and_exits_2(args: list[str], message: str) -> None:
    result = run_newsdesk(*args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr
    assert result.stderr.rstrip().endswith(f"{args[0]} --help`)") or "status --help`)" in result.stderr


def test_the_help_shows_on_off_flags_without_a_value() -> None:
    """A flag shown as "--force <bool>" reads as "--force true", which passes "true" as an input."""
    result = run_newsdesk("run", "--help")
    assert result.returncode == 0
    flags = [line.split()[0] for line in result.stdout.splitlines() if line.strip().startswith("--")]
    assert {"--force", "--dry-run", "--batch-api", "--strict-replay"} <= set(flags)
    assert "<bool>" not in result.stdout and "130" in result.stdout
