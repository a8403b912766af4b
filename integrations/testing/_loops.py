"""Running a fixture's async set-up and tear-down in the event loop that runs the test.

A pool belongs to the event loop that opened it, so a pool fixture must open it in the loop the
test will run in, and close it there. Which loop that is depends on who runs the test:

* **pytest-asyncio** (a test it marks ``asyncio``, in strict or auto mode): the loop of the
  ``asyncio.Runner`` it keeps for the test's loop scope (function by default, or the
  ``loop_scope`` of the test's ``asyncio`` marker, or ``asyncio_default_test_loop_scope``).
* **anyio's pytest plugin** (a test marked ``anyio`` that pytest-asyncio does not run): the loop of
  anyio's test runner for the test's ``anyio_backend``.

Each plugin runs the async fixtures it recognises, but they recognise them differently (a
decorator in pytest-asyncio's strict mode, any ``async def`` in its auto mode and in anyio's), and
when both are installed the one whose hook runs first claims the fixture whoever runs the test: in
auto mode, an ``anyio`` test runs in pytest-asyncio's loop while its plain async fixtures run in
anyio's, and a pool opened there is refused by the test. So the plugin's pool fixtures are
ordinary (synchronous) fixtures for pytest, which no async plugin claims, and they drive their
async steps themselves, in the runner of the plugin that runs the test, which
:func:`in_test_loop` picks from the test item.

Nothing here imports pytest-asyncio or anyio until a test that one of them runs uses a fixture.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, TypeVar

import pytest

__all__ = ["in_test_loop"]

T = TypeVar("T")

_NO_RUNNER = (
    "{fixture} opens its pool in the event loop of the test that uses it, so the test must be an "
    "async test run by pytest-asyncio (mark it @pytest.mark.asyncio, or set asyncio_mode = auto) "
    "or by anyio's pytest plugin (mark it @pytest.mark.anyio); {nodeid} is run by neither"
)
_INSTALL = "; neither is installed: pip install pytest-asyncio (or 'aiodbpool[testing]'), or anyio"


def in_test_loop(
    request: pytest.FixtureRequest, steps: Callable[[], AsyncGenerator[T, None]]
) -> Generator[T, None, None]:
    """Run ``steps()`` up to its ``yield`` in the test's event loop, give what it yields, and
    run the rest after the test in the same loop; use it as ``yield from in_test_loop(...)`` in
    a function-scoped generator fixture.

    Fails the test's set-up, saying what to change, when the test is not an async test run by
    pytest-asyncio or anyio, or runs on anyio's trio backend.
    """
    item = request.node
    if _run_by_pytest_asyncio(item):
        yield from _in_pytest_asyncio_loop(request, item, steps)
    elif "anyio_backend" in getattr(item, "fixturenames", ()):
        yield from _in_anyio_loop(request, steps)
    else:
        message = _NO_RUNNER.format(fixture=request.fixturename, nodeid=item.nodeid)
        if not _installed("pytest_asyncio") and not _installed("anyio"):
            message += _INSTALL
        pytest.fail(message, pytrace=False)


def _run_by_pytest_asyncio(item: pytest.Item) -> bool:
    # Loaded already if pytest-asyncio runs any test: pytest imported it as a plugin.
    plugin: Any = sys.modules.get("pytest_asyncio")
    return plugin is not None and bool(plugin.is_async_test(item))


def _pytest_asyncio_loop_scope(item: pytest.Item) -> str:
    """The scope of the loop pytest-asyncio runs ``item`` in, as pytest-asyncio decides it."""
    marker = item.get_closest_marker("asyncio")
    scope = None
    if marker is not None:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    if scope is None:
        try:
            scope = item.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # a pytest-asyncio without that setting: one loop per test
            scope = None
    return str(scope or "function")


def _in_pytest_asyncio_loop(
    request: pytest.FixtureRequest,
    item: pytest.Item,
    steps: Callable[[], AsyncGenerator[T, None]],
) -> Generator[T, None, None]:
    scope = _pytest_asyncio_loop_scope(item)
    # pytest-asyncio (1.1 and later) runs the tests of each loop scope in the asyncio.Runner of
    # this fixture. Requested from this fixture, it is set up first and torn down after it.
    try:
        runner = request.getfixturevalue(f"_{scope}_scoped_runner")
    except pytest.FixtureLookupError:
        runner = None
    if not callable(getattr(runner, "run", None)):
        pytest.fail(
            f"{request.fixturename} found no event loop runner of pytest-asyncio for loop scope "
            f"{scope!r}: it needs pytest-asyncio 1.1 or later",
            pytrace=False,
        )
    assert runner is not None
    generator = steps()
    value: T = runner.run(_step(generator))
    yield value
    runner.run(_last_step(generator))


def _in_anyio_loop(
    request: pytest.FixtureRequest, steps: Callable[[], AsyncGenerator[T, None]]
) -> Generator[T, None, None]:
    # The same two calls anyio's own plugin makes to run an async fixture: the runner is shared
    # by the test and its fixtures while any of them holds it.
    from anyio.pytest_plugin import extract_backend_and_options, get_runner

    backend, options = extract_backend_and_options(request.getfixturevalue("anyio_backend"))
    if backend != "asyncio":
        pytest.fail(
            f"{request.fixturename}: aiodbpool runs on asyncio, and this test runs on anyio's "
            f"{backend!r} backend; run the tests that use it on asyncio only (return 'asyncio' "
            "from an anyio_backend fixture)",
            pytrace=False,
        )
    with get_runner(backend, options) as runner:
        yield from runner.run_asyncgen_fixture(steps, {})


async def _step(generator: AsyncGenerator[T, None]) -> T:
    return await anext(generator)


async def _last_step(generator: AsyncGenerator[Any, None]) -> None:
    try:
        await anext(generator)
    except StopAsyncIteration:
        return
    await generator.aclose()
    raise RuntimeError(
        "in_test_loop(): the steps() generator yielded twice; it must yield exactly once"
    )


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
