"""``create_pool(url)``: pick a driver from a database URL's scheme, and build a pool.

Drivers register their URL schemes in the ``aiodbpool.drivers`` entry-point group, the built-in
ones exactly like third-party ones, so this module knows no database by name. An entry point
names a factory ``from_url(url: str, **driver_options) -> Driver``. A third-party package
registers one in its ``pyproject.toml``:

    [project.entry-points."aiodbpool.drivers"]
    mysql = "aiodbpool_mysql:from_url"

Keyword arguments of ``create_pool`` that are options of ``aiodbpool.Pool`` configure
the pool; all others are passed to the driver's factory. Pool options may also be given in the
URL's query, as text (``postgresql://app@db/shop?max_size=20&acquire_timeout=5``, ``none`` for
``None``): ``create_pool`` takes them out of the URL before the driver sees it, so they never
reach the database as a setting of its own. An option given both ways is refused.

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
from urllib.parse import unquote_plus

from ._pool import Pool
from .driver import Driver
from .redaction import check_userinfo, redact_url

__all__ = ["create_pool", "redact_url"]

ENTRY_POINT_GROUP = "aiodbpool.drivers"

_POOL_OPTIONS = frozenset(inspect.signature(Pool).parameters) - {"driver"}

_URL_COUNTS = frozenset({"min_size", "max_size", "max_waiting", "max_uses", "breaker_threshold"})
_URL_SECONDS = frozenset(
    {
        "acquire_timeout",
        "max_idle",
        "max_lifetime",
        "validate_after_idle",
        "connect_timeout",
        "ping_timeout",
        "reset_timeout",
        "close_timeout",
        "leak_timeout",
        "maintenance_interval",
        "backoff_initial",
        "backoff_max",
        "reconnect_timeout",
    }
)
_URL_OPTIONS = _URL_COUNTS | _URL_SECONDS | {"name"}
"""The pool options a URL's query may give: every one written as text. (``clock`` and
``close_driver`` are for code, not for configuration.)"""

# Where a driver's package is missing, the extra that installs it.
_EXTRAS = {
    "postgresql": "postgres",
    "postgres": "postgres",
    "postgresql+psycopg": "psycopg",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mysql",
}

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
    url, from_url = _pool_options_in(url)
    for key in from_url:
        if key in options:
            raise ValueError(
                f"the pool option {key} is given twice, in the URL and to create_pool({key}=...): "
                "keep one"
            )
    options = {**from_url, **options}
    pool_options = {key: value for key, value in options.items() if key in _POOL_OPTIONS}
    driver_options = {key: value for key, value in options.items() if key not in _POOL_OPTIONS}
    driver: Driver[Any] = factory(url, **driver_options)
    # The driver was made for this pool alone, so closing the pool may release it too.
    pool_options.setdefault("close_driver", True)
    return Pool(driver, **pool_options)


def _pool_options_in(url: str) -> tuple[str, dict[str, Any]]:
    """The URL without the pool options of its query, and those options, read from text.

    Only the query changes: the rest of the URL, the password's encoding included, is kept
    character for character, and so are the query's other parameters, for the driver.
    """
    base, mark, query = url.partition("?")
    if not mark:
        return url, {}
    query, hash_mark, fragment = query.partition("#")
    kept: list[str] = []
    found: dict[str, Any] = {}
    for part in query.split("&"):
        name, _, text = part.partition("=")
        key = unquote_plus(name)
        if key in ("clock", "close_driver"):
            raise ValueError(
                f"the pool option {key} cannot be given in a URL: pass create_pool({key}=...)"
            )
        if key not in _URL_OPTIONS:
            kept.append(part)
            continue
        if key in found:
            raise ValueError(f"the pool option {key} is given twice in the URL: keep one")
        found[key] = _option_value(key, unquote_plus(text))
    rest = "&".join(kept)
    return base + ("?" + rest if rest else "") + hash_mark + fragment, found


def _option_value(key: str, text: str) -> Any:
    """A pool option's value from the text of a URL parameter (checked later, by ``Pool``)."""
    if key == "name":
        return text
    if text.strip().lower() == "none":
        return None
    try:
        return int(text) if key in _URL_COUNTS else float(text)
    except ValueError:
        # (The text is not quoted: after a password parameter with an unencoded '&', it could
        # be a piece of the password.)
        kind = "a whole number" if key in _URL_COUNTS else "a number of seconds"
        raise ValueError(f"the pool option {key} in the URL must be {kind}, or none") from None


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
