"""Bank accounts, written against asyncpg's API alone.

Nothing here knows about the fake driver: the service takes a database URL, makes its pool with
``aiodbpool.create_pool`` and uses the connections as asyncpg's -- ``fetchrow`` and ``fetch``,
records read by column name and turned into dicts, ``fetchval``, the status ``execute``
returns, transaction blocks (a nested one is a savepoint), ``executemany`` and a prepared
statement. Its tests (tests/drivers/test_fake_accounts_app.py) run on
``fake://?api=asyncpg&strict=1`` and on a real PostgreSQL, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from aiodbpool import Pool, create_pool

SCHEMA = """
    CREATE TABLE IF NOT EXISTS accounts (
        id bigserial PRIMARY KEY,
        owner text NOT NULL,
        balance bigint NOT NULL CHECK (balance >= 0)
    );
    CREATE TABLE IF NOT EXISTS transfers (
        id bigserial PRIMARY KEY,
        source bigint NOT NULL REFERENCES accounts,
        target bigint NOT NULL REFERENCES accounts,
        amount bigint NOT NULL
    );
"""


@dataclass(frozen=True)
class Account:
    id: int
    owner: str
    balance: int


class AccountNotFound(LookupError):
    """No account has this id."""


class InsufficientFunds(Exception):
    """The source account's balance is below the amount."""


def make_pool(url: str) -> Pool[asyncpg.Connection]:
    """The service's pool, for a ``postgresql://`` URL (or any URL of a driver speaking
    asyncpg's API)."""
    pool: Pool[asyncpg.Connection] = create_pool(url, name="accounts", max_size=4)
    return pool


async def create_schema(pool: Pool[asyncpg.Connection]) -> None:
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)


async def open_account(pool: Pool[asyncpg.Connection], owner: str, balance: int = 0) -> Account:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """
            INSERT INTO accounts (owner, balance)
            VALUES ($1, $2)
            RETURNING id, owner, balance
            """,
            owner,
            balance,
        )
    assert row is not None
    return Account(**dict(row))


async def get_account(pool: Pool[asyncpg.Connection], account_id: int) -> Account | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id, owner, balance FROM accounts WHERE id = $1", account_id
        )
    if row is None:
        return None
    return Account(row["id"], row["owner"], row["balance"])


async def list_accounts(pool: Pool[asyncpg.Connection]) -> list[Account]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, owner, balance FROM accounts ORDER BY id")
    return [Account(**dict(row)) for row in rows]


async def total_balance(pool: Pool[asyncpg.Connection]) -> int:
    async with pool.acquire() as conn:
        total: int = await conn.fetchval("SELECT coalesce(sum(balance), 0)::bigint FROM accounts")
    return total


async def rename(pool: Pool[asyncpg.Connection], account_id: int, owner: str) -> None:
    async with pool.acquire() as conn:
        status = await conn.execute(
            "UPDATE accounts SET owner = $2 WHERE id = $1", account_id, owner
        )
    if status == "UPDATE 0":
        raise AccountNotFound(account_id)


async def transfer(pool: Pool[asyncpg.Connection], source: int, target: int, amount: int) -> None:
    """Move ``amount`` from ``source`` to ``target``, all or nothing."""
    async with pool.acquire() as conn, conn.transaction():
        await _move(conn, source, target, amount)


async def transfer_all(
    pool: Pool[asyncpg.Connection], transfers: list[tuple[int, int, int]]
) -> list[bool]:
    """Make every transfer ``(source, target, amount)`` that can be made, in one transaction;
    one that cannot is undone alone (to its savepoint). Say which were made."""
    made = []
    async with pool.acquire() as conn, conn.transaction():
        for source, target, amount in transfers:
            try:
                async with conn.transaction():
                    await _move(conn, source, target, amount)
            except (InsufficientFunds, AccountNotFound):
                made.append(False)
            else:
                made.append(True)
    return made


async def _move(conn: asyncpg.Connection, source: int, target: int, amount: int) -> None:
    debited = await conn.execute(
        "UPDATE accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2",
        source,
        amount,
    )
    if debited == "UPDATE 0":
        raise InsufficientFunds(source)
    credited = await conn.execute(
        "UPDATE accounts SET balance = balance + $2 WHERE id = $1", target, amount
    )
    if credited == "UPDATE 0":
        raise AccountNotFound(target)  # the transaction block undoes the debit
    await conn.execute(
        "INSERT INTO transfers (source, target, amount) VALUES ($1, $2, $3)",
        source,
        target,
        amount,
    )


async def history(pool: Pool[asyncpg.Connection], account_id: int) -> list[dict[str, int]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT source, target, amount
            FROM transfers
            WHERE source = $1 OR target = $1
            ORDER BY id
            """,
            account_id,
        )
    return [dict(row) for row in rows]


async def import_accounts(pool: Pool[asyncpg.Connection], accounts: list[tuple[str, int]]) -> int:
    """Open every ``(owner, balance)`` account in one transaction; return how many there are."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany("INSERT INTO accounts (owner, balance) VALUES ($1, $2)", accounts)
        count: int = await conn.fetchval("SELECT count(*) FROM accounts")
    return count


async def balances(pool: Pool[asyncpg.Connection], ids: list[int]) -> dict[int, int | None]:
    """The balance of each account (None for a missing one), with one prepared statement."""
    async with pool.acquire() as conn:
        statement = await conn.prepare("SELECT balance FROM accounts WHERE id = $1")
        return {account_id: await statement.fetchval(account_id) for account_id in ids}
