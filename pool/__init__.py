"""aiodbpool: a database-agnostic asyncio connection pool.

>>> import asyncio
>>> from aiodbpool import create_pool
>>> pool = create_pool("fake://", max_size=4)
>>> async def main() -> str:
...     async with pool, pool.acquire() as conn:  # open the pool, borrow a connection
...         return await conn.execute("SELECT 1")
>>> asyncio.run(main())
'OK'
"""

from ._pool import Pool
from .driver import Driver, SupportsAclose, SupportsTerminate, SupportsTransaction
from .errors import PoolClosed, PoolConnectError, PoolError, PoolExhausted, PoolTimeout
from .histogram import DurationHistogram
from .stats import PoolStats
from .url import create_pool

__all__ = [
    "Driver",
    "DurationHistogram",
    "Pool",
    "PoolClosed",
    "PoolConnectError",
    "PoolError",
    "PoolExhausted",
    "PoolStats",
    "PoolTimeout",
    "SupportsAclose",
    "SupportsTerminate",
    "SupportsTransaction",
    "create_pool",
]
