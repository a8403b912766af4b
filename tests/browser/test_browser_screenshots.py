"""The script that regenerates the FastAPI guide's screenshots keeps working: run as a maintainer
runs it, into a temporary directory, it photographs the live pool view and DevTools' Timing tab
of a real browser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chromium import chromium_binary
from helpers import needs_program

ROOT = Path(__file__).resolve().parents[2]
_PNG = b"\x89PNG\r\n\x1a\n"


def test_the_screenshot_script_photographs_the_dashboard_and_devtools(tmp_path: Path) -> None:
    needs_program(chromium_binary(), "Chromium", "chromium")
    run = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "screenshots.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("dashboard.png", "devtools-timing.png"):
        image = (tmp_path / name).read_bytes()
        assert image.startswith(_PNG)
        assert len(image) > 20_000  # a page, not a blank
    assert run.stdout.split() == [
        str(tmp_path / "dashboard.png"),
        str(tmp_path / "devtools-timing.png"),
    ]
