"""The script that regenerates the FastAPI guide's screenshots keeps working: run as a maintainer
runs it, into a temporary directory, it photographs the live pool view and DevTools' Timing tab
of a real browser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chromium import chromium_binary

ROOT = Path(__file__).resolve().parents[2]
_PNG = b"\x89PNG\r\n\x1a\n"


def test_the_screenshot_script_photographs_the_dashboard_and_devtools(tmp_path: Path) -> None:
    if chromium_binary() is None:
        message = "needs Chromium (Debian package 'chromium'; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and CI must run every test", pytrace=False)
        pytest.skip(message)
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
