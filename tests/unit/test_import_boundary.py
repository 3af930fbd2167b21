"""`booking` is the core: it must import none of the web, TUI, queue or CLI frameworks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("litestar", "textual", "rq", "typer")

PROBE = """
import importlib, json, pkgutil, sys
import booking
for module in pkgutil.walk_packages(booking.__path__, "booking."):
    importlib.import_module(module.name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})))
"""


def test_importing_every_booking_module_loads_no_framework() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(forbidden=set(FORBIDDEN))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_the_probe_would_notice_a_framework_import() -> None:
    # Negative control: the same probe, with a framework imported, reports it.
    result = subprocess.run(
        [sys.executable, "-c", "import typer\n" + PROBE.format(forbidden=set(FORBIDDEN))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert "typer" in result.stdout


def test_import_linter_contract_holds() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "import-linter is part of the test extra"
    result = subprocess.run([lint_imports, "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
