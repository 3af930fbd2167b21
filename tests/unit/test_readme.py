"""CI runs `.ci/run`; the README promises a test command. They must be the same command."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest"
    assert command in readme
    assert command in ci.splitlines()


def test_readme_starts_with_the_run_command() -> None:
    readme = (ROOT / "README.md").read_text()
    run = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/boxoffice up"
    test = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest"
    assert readme.index(run) < readme.index(test) < readme.index("## ")
