"""``create_pool(url)``: pick a driver from a database URL's scheme, and build a pool.

Drivers register their URL schemes in the ``aiodbpool.drivers`` entry-point group, the built-in
ones exactly like third-party ones, so this module knows no database by name. An entry point
names a factory ``from_url(url: str, **driver_options) -> Driver``. A third-party package
registers one in its ``pyproject.toml``:

    [project.entry-points."aiodbpool.drivers"]
    mysql = "aiodbpool_mysql:from_url"

Keyword arguments of ``create_pool`` that are options of ``aiodbpool.Pool`` configure
the pool; all others are passed to the driver's factory.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ._pool import Pool
from .driver import Driver

__all__ = ["create_pool", "redact_url"]

ENTRY_POINT_GROUP = "aiodbpool.drivers"

_POOL_OPTIONS = frozenset(inspect.signature(Pool).parameters) - {"driver"}

# Where a driver's package is missing, the extra that installs it.
_EXTRAS = {"postgresql": "postgres", "postgres": "postgres", "sqlite": "sqlite"}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# Characters no URL may hold unencoded; a trailing newline read from a file is the usual one.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")

# ``password=...`` after the ``?`` or an ``&``, up to the next ``&`` or ``#``.
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


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


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages.

    Malformed URLs are the ones quoted in error messages, so this does not rely on the scheme: the
    user-info is the text between the last ``/`` and the first ``@`` (when no ``?`` or ``#``
    comes before it), and the password is what follows its first ``:``. A ``password=`` query
    parameter (libpq and asyncpg accept one) is hidden as well.
    """
    url = _PASSWORD_PARAMETER.sub(r"\1***", url)
    at = url.find("@")
    if at < 0 or "?" in url[:at] or "#" in url[:at]:
        return url
    colon = url.find(":", url.rfind("/", 0, at) + 1, at)
    if colon < 0:
        return url
    return f"{url[: colon + 1]}***{url[at:]}"
