"""Every Python example in the README, docs/ and the docstrings runs, so no example rots.

The ``>>>`` examples in the package's docstrings (shown in the API reference) run as doctests.
A ```python block is executed as a module. If it defines ``async def test_...`` functions (the
fake-driver guide's examples are tests for the reader's own suite), each one is run too. A block
that reads ``DATABASE_URL`` gets the test suite's PostgreSQL server there.
"""

from __future__ import annotations

import asyncio
import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _examples() -> list[pytest.ParameterSet]:
    examples = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            name = f"{document.relative_to(ROOT)}:{line}"
            examples.append(pytest.param(match.group(1), id=name))
    return examples


@pytest.mark.parametrize("source", _examples())
def test_example_runs(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    if "DATABASE_URL" in source:
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("pg_dsn"))
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(source, "<example>", "exec"), namespace)
    for name, value in namespace.items():
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            asyncio.run(value())


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
