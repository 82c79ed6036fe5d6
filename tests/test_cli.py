"""The CLI's shape: help works, commands are discoverable, bad options fail cleanly."""

from __future__ import annotations

from pixlm.cli import app


def test_help_lists_data_commands(runner) -> None:
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "data" in top.output
    data = runner.invoke(app, ["data", "--help"])
    assert data.exit_code == 0
    for cmd in ("shapes", "specs", "check"):
        assert cmd in data.output


def test_bad_options_fail(runner, tmp_path) -> None:
    assert runner.invoke(app, ["data", "shapes", "--n", "0", "--out", str(tmp_path / "x")]).exit_code != 0
    assert runner.invoke(app, ["data", "shapes", "--n", "2"]).exit_code != 0  # --out is required
    assert not (tmp_path / "x").exists()


def test_check_reports_missing_folder(runner, tmp_path) -> None:
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "does not exist" in result.output
