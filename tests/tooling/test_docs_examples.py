"""Every Python example in the README, docs/ and the docstrings runs, so no example rots.

The ``>>>`` examples in the package's docstrings (shown in the API reference) run as doctests.
A ```python block is executed as a module. If it defines ``async def test_...`` functions (the
fake-driver guide's examples are tests for the reader's own suite), each one is run too. A block
that reads ``DATABASE_URL`` gets the test suite's PostgreSQL server there.

An example made of files -- an app and its tests, as the reader saves them -- is written as
consecutive blocks whose first line names the file::

    ```python
    # file: app.py
    ...
    ```

    ```python
    # file: test_app.py
    from app import app
    ...
    ```

Consecutive blocks of this kind, up to the next block without a ``# file:`` line (or the end of
the page), form one example: each is written to its file in an empty directory, and ``pytest``
runs there as the reader would run it, in a process of its own. The example needs a test file
(``test_*.py``), and every test in it must pass; a file name may appear once per example.
"""

from __future__ import annotations

import asyncio
import doctest
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_FILE = re.compile(r"# file: ([\w.-]+\.py)\n")
"""The first line of a block that is a file of an example made of files."""


def _blocks(document: Path) -> list[tuple[str, str]]:
    """The ```python blocks of ``document``: where each starts (``path:line``), and its text."""
    text = document.read_text()
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((f"{document.relative_to(ROOT)}:{line}", match[1]))
    return blocks


def _examples() -> list[pytest.ParameterSet]:
    """The blocks run as modules: those that are not files of an example made of files."""
    return [
        pytest.param(source, id=where)
        for document in DOCUMENTS
        for where, source in _blocks(document)
        if not _FILE.match(source)
    ]


def _file_examples() -> list[pytest.ParameterSet]:
    """The examples made of files: each a mapping of file names to their text."""
    examples: list[pytest.ParameterSet] = []
    for document in DOCUMENTS:
        files: dict[str, str] = {}
        for where, source in _blocks(document):
            named = _FILE.match(source)
            if named is None:  # the example before it, if any, is complete
                files = {}
                continue
            if not files:
                examples.append(pytest.param(files, id=where))
            if named[1] in files:
                raise ValueError(f"{where}: {named[1]} appears twice in one example")
            files[named[1]] = source
    return examples


@pytest.mark.parametrize("source", _examples())
def test_example_runs(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    if "DATABASE_URL" in source:
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("postgres_url"))
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(source, "<example>", "exec"), namespace)
    for name, value in namespace.items():
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            asyncio.run(value())


@pytest.mark.parametrize("files", _file_examples())
def test_example_files_pass_their_tests(
    files: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert any(name.startswith("test_") for name in files), "the example has no test file"
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    env = dict(os.environ)
    if any("DATABASE_URL" in source for source in files.values()):
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    # The reader's own `pytest`, in the example's directory: no configuration of this project's.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", "."]
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"pytest failed in the example's files:\n{run.stdout}{run.stderr}"


def _modules() -> list[str]:
    """Every module of the installed package whose docstrings hold ``>>>`` examples."""
    import aiodbpool

    names = ["aiodbpool"]
    names += [info.name for info in pkgutil.walk_packages(aiodbpool.__path__, prefix="aiodbpool.")]
    return [name for name in names if ">>>" in inspect.getsource(importlib.import_module(name))]


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples_run(module: str) -> None:
    results = doctest.testmod(importlib.import_module(module), verbose=False)
    assert results.attempted > 0
    assert results.failed == 0
