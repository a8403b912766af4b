"""``create_pool(url)``: pick a driver from a database URL's scheme, and build a pool.

Drivers register their URL schemes in the ``aiodbpool.drivers`` entry-point group, the built-in
ones exactly like third-party ones, so this module knows no database by name. An entry point
names a factory ``from_url(url: str, **driver_options) -> Driver``. A third-party package
registers one in its ``pyproject.toml``:

    [project.entry-points."aiodbpool.drivers"]
    mysql = "aiodbpool_mysql:from_url"

Keyword arguments of ``create_pool`` that are options of ``aiodbpool.Pool`` configure
the pool; all others are passed to the driver's factory.

Every URL is checked before a driver sees it: a password typed without percent-encoding, which
parsers would split in different places, is refused here with a message that quotes none of it
(see ``aiodbpool.redaction``, whose ``redact_url`` this module re-exports).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ._pool import Pool
from .driver import Driver
from .redaction import check_userinfo, redact_url

__all__ = ["create_pool", "redact_url"]

ENTRY_POINT_GROUP = "aiodbpool.drivers"

_POOL_OPTIONS = frozenset(inspect.signature(Pool).parameters) - {"driver"}

# Where a driver's package is missing, the extra that installs it.
_EXTRAS = {"postgresql": "postgres", "postgres": "postgres", "sqlite": "sqlite"}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# Characters no URL may hold unencoded; a trailing newline read from a file is the usual one.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def create_pool(url: str, **options: Any) -> Pool[Any]:
    """Create an unopened ``Pool`` for the database at ``url``.

    >>> pool = create_pool("fake://", max_size=4)
    >>> pool
    <Pool 'default' new size=0 idle=0 in_use=0 waiting=0 max=4>
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, got {type(url).__name__}")
    _check_characters(url)
    match = _SCHEME.match(url)
    if match is None:
        raise ValueError(
            f"not a database URL: {redact_url(url)!r} (expected scheme://..., "
            "for example postgresql://user@host/db or sqlite:///app.db)"
        )
    check_userinfo(url)
    scheme = match.group(1).lower()
    factory = _driver_factory(scheme)
    pool_options = {key: value for key, value in options.items() if key in _POOL_OPTIONS}
    driver_options = {key: value for key, value in options.items() if key not in _POOL_OPTIONS}
    driver: Driver[Any] = factory(url, **driver_options)
    # The driver was made for this pool alone, so closing the pool may release it too.
    pool_options.setdefault("close_driver", True)
    return Pool(driver, **pool_options)


def _check_characters(url: str) -> None:
    """Refuse what would otherwise fail only at the first connect, far from the mistake: space
    around the URL, or a control character in it (both usually come from a file or an
    environment variable). Spaces inside are left to the driver: a SQLite path may have them."""
    if url != url.strip():
        raise ValueError(
            f"the database URL {redact_url(url)!r} starts or ends with whitespace: strip it"
        )
    control = _CONTROL_CHARACTER.search(url)
    if control is not None:
        raise ValueError(
            f"the database URL {redact_url(url)!r} contains the control character "
            f"{control.group()!r} at position {control.start()}"
        )


def _driver_factory(scheme: str) -> Callable[..., Driver[Any]]:
    found: list[EntryPoint] = [
        entry for entry in entry_points(group=ENTRY_POINT_GROUP) if entry.name == scheme
    ]
    if not found:
        known = sorted({entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)})
        raise ValueError(
            f"no aiodbpool driver for URL scheme {scheme!r} (known schemes: "
            f"{', '.join(known) or 'none'}); a driver package registers its scheme in the "
            f"{ENTRY_POINT_GROUP!r} entry-point group"
        )
    try:
        factory: Callable[..., Driver[Any]] = found[0].load()
    except ImportError as error:
        extra = _EXTRAS.get(scheme)
        hint = f"install aiodbpool[{extra}]" if extra else "install the driver's package"
        raise ImportError(
            f"the driver for {scheme!r} URLs cannot be imported ({error}): {hint}"
        ) from error
    return factory
