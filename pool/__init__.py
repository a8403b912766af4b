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
from .driver import (
    Driver,
    SupportsAclose,
    SupportsInterrupt,
    SupportsLease,
    SupportsTerminate,
    SupportsTransaction,
    SupportsTransactionStatus,
    TransactionStatus,
)
from .errors import (
    ConnectionReleased,
    PoolClosed,
    PoolConnectError,
    PoolError,
    PoolExhausted,
    PoolTimeout,
    RedactedError,
)
from .histogram import DurationHistogram
from .lease import Lease, guarded_attribute, guarded_method, guarded_statement, raw_connection
from .stats import PoolStats
from .url import create_pool

__all__ = [
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
]
