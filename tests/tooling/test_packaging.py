"""The distribution installs one import package, ``aiodbpool``, and nothing at the top level.

Users' applications often have folders named ``drivers`` or ``integrations``; installing modules
with those names would shadow them. The wheel is built from the repository as a user's ``pip
install .`` would build it, and its file list is checked.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import get_args

import pytest

import aiodbpool

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip_wheel, "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("aiodbpool-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_holds_only_the_aiodbpool_package(wheel: zipfile.ZipFile) -> None:
    top_levels = {name.split("/")[0] for name in wheel.namelist()}
    assert {level for level in top_levels if not level.endswith(".dist-info")} == {"aiodbpool"}


def test_wheel_maps_repository_folders_onto_subpackages(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "aiodbpool/_pool.py" in names
    assert "aiodbpool/py.typed" in names
    assert "aiodbpool/drivers/fake.py" in names
    assert "aiodbpool/integrations/__init__.py" in names
    assert "aiodbpool/integrations/dashboard.html" in names  # the live view's page


def test_wheel_registers_the_fake_driver_scheme(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [name for name in wheel.namelist() if name.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[aiodbpool.drivers]" in text
    assert "fake = aiodbpool.drivers.fake:from_url" in text


def test_core_has_no_runtime_dependencies(wheel: zipfile.ZipFile) -> None:
    (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    requirements = [
        line
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert requirements == []


def test_installed_environment_has_no_top_level_drivers_module(tmp_path: Path) -> None:
    probe = (
        "import importlib.util, aiodbpool.drivers.fake, aiodbpool.integrations\n"
        "print(importlib.util.find_spec('drivers'), importlib.util.find_spec('integrations'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, check=True, capture_output=True, text=True
    )
    assert result.stdout.strip() == "None None"


def test_public_names_are_the_documented_contract() -> None:
    assert set(aiodbpool.__all__) == {
        "ConnectionReleased",
        "Driver",
        "DurationHistogram",
        "Lease",
        "Pool",
        "PoolClosed",
        "PoolConnectError",
        "PoolError",
        "PoolExhausted",
        "PoolStats",
        "PoolTimeout",
        "RedactedError",
        "SupportsAclose",
        "SupportsInterrupt",
        "SupportsLease",
        "SupportsTerminate",
        "SupportsTransaction",
        "SupportsTransactionStatus",
        "TransactionStatus",
        "create_pool",
        "guarded_attribute",
        "guarded_method",
        "guarded_statement",
        "raw_connection",
    }
    # A type alias (a Literal) has no module of its own before Python 3.12's ``type`` statement.
    aliases = {"TransactionStatus"}
    for name in set(aiodbpool.__all__) - aliases:
        assert getattr(aiodbpool, name).__module__.startswith("aiodbpool")
    assert get_args(aiodbpool.TransactionStatus) == ("idle", "in_transaction", "failed")
    assert aiodbpool.PoolTimeout.__module__ == "aiodbpool"
    assert issubclass(aiodbpool.PoolTimeout, TimeoutError)
    # A use after release is a bug in the caller, not a pool outage: not a PoolError.
    assert aiodbpool.ConnectionReleased.__module__ == "aiodbpool"
    assert not issubclass(aiodbpool.ConnectionReleased, aiodbpool.PoolError)
