"""An app written against asyncpg runs its tests unchanged on the fake driver and on PostgreSQL.

``apps/accounts_asyncpg.py`` is a small service written for asyncpg alone (``fetchrow``, records
read by name, ``dict(row)``, transaction blocks and savepoints, ``executemany``, a prepared
statement). Every test below runs twice: on ``fake://?api=asyncpg&strict=1``, where the
statements are answered by ``AccountsModel``, an in-memory model of the app's two tables scripted
into the driver; and on a real PostgreSQL server, in a schema of its own. The tests see only the
app's pool: their bodies cannot tell the two apart.

Strict mode is what makes the fake half worth having: a statement the app sends that the model
does not script -- a typo, a new query, a reworded one -- fails the test, naming the scripted
statement closest to it, instead of quietly returning no rows.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from apps import accounts_asyncpg as app

from aiodbpool import Pool
from aiodbpool.drivers.fake import FakeDriver, FakeResult, UnscriptedStatementError

FAKE_URL = "fake://?api=asyncpg&strict=1"

Args = tuple[object, ...]


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


@dataclass
class _Tables:
    accounts: dict[int, app.Account] = field(default_factory=dict)
    transfers: list[tuple[int, int, int]] = field(default_factory=list)


class AccountsModel:
    """The app's tables in memory, answering each statement the app sends.

    Transactions are modelled by snapshots: ``BEGIN`` and each ``SAVEPOINT`` keep a copy of the
    tables, ``ROLLBACK`` and ``ROLLBACK TO`` put one back. Ids come from a counter that, like a
    PostgreSQL sequence, a rollback does not set back.
    """

    def __init__(self) -> None:
        self.tables = _Tables()
        self.last_id = 0
        self.snapshots: list[tuple[str, _Tables]] = []  # (savepoint name, or "" for BEGIN)

    def script(self, driver: FakeDriver[Any]) -> None:
        """Script every statement of the app into ``driver``, each as the app writes it, or
        reformatted (texts match whatever their line breaks and indents)."""
        driver.script(re.compile(r"^\s*CREATE TABLE IF NOT EXISTS accounts \("), [])
        driver.script(
            "INSERT INTO accounts (owner, balance) VALUES ($1, $2) RETURNING id, owner, balance",
            self.open,
        )
        driver.script("INSERT INTO accounts (owner, balance) VALUES ($1, $2)", self.open)
        driver.script("SELECT id, owner, balance FROM accounts WHERE id = $1", self.account)
        driver.script("SELECT id, owner, balance FROM accounts ORDER BY id", self.all_accounts)
        driver.script("SELECT coalesce(sum(balance), 0)::bigint FROM accounts", self.total)
        driver.script("SELECT count(*) FROM accounts", self.count)
        driver.script("SELECT balance FROM accounts WHERE id = $1", self.balance)
        driver.script("UPDATE accounts SET owner = $2 WHERE id = $1", self.rename)
        driver.script(
            "UPDATE accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2",
            self.debit,
        )
        driver.script("UPDATE accounts SET balance = balance + $2 WHERE id = $1", self.credit)
        driver.script(
            "INSERT INTO transfers (source, target, amount) VALUES ($1, $2, $3)", self.record
        )
        driver.script(
            "SELECT source, target, amount FROM transfers WHERE source = $1 OR target = $1 "
            "ORDER BY id",
            self.transfers_of,
        )
        # Transaction control needs no script in strict mode; the model scripts it to follow.
        driver.script("BEGIN", self.begin)
        driver.script("COMMIT", self.commit)
        driver.script("ROLLBACK", self.rollback)
        driver.script(re.compile(r"^SAVEPOINT (\w+)"), self.savepoint)
        driver.script(re.compile(r"^RELEASE SAVEPOINT (\w+)"), self.release)
        driver.script(re.compile(r"^ROLLBACK TO (\w+)"), self.rollback_to)

    # -- the app's statements ----------------------------------------------------------------------

    def open(self, sql: str, args: Args) -> list[dict[str, object]]:
        owner, balance = args
        assert isinstance(owner, str)
        self.last_id += 1
        account = app.Account(self.last_id, owner, _int(balance))
        self.tables.accounts[account.id] = account
        return [vars(account)]

    def account(self, sql: str, args: Args) -> list[dict[str, object]]:
        account = self.tables.accounts.get(_int(args[0]))
        return [] if account is None else [vars(account)]

    def all_accounts(self, sql: str, args: Args) -> list[dict[str, object]]:
        return [vars(account) for _, account in sorted(self.tables.accounts.items())]

    def total(self, sql: str, args: Args) -> FakeResult:
        total = sum(account.balance for account in self.tables.accounts.values())
        return FakeResult([(total,)], columns=["coalesce"])

    def count(self, sql: str, args: Args) -> list[dict[str, object]]:
        return [{"count": len(self.tables.accounts)}]

    def balance(self, sql: str, args: Args) -> list[dict[str, object]]:
        account = self.tables.accounts.get(_int(args[0]))
        return [] if account is None else [{"balance": account.balance}]

    def rename(self, sql: str, args: Args) -> FakeResult:
        account_id, owner = args
        account = self.tables.accounts.get(_int(account_id))
        if account is None:
            return FakeResult(rowcount=0)
        assert isinstance(owner, str)
        self.tables.accounts[account.id] = app.Account(account.id, owner, account.balance)
        return FakeResult(rowcount=1)

    def debit(self, sql: str, args: Args) -> FakeResult:
        return self._add(_int(args[0]), -_int(args[1]))

    def credit(self, sql: str, args: Args) -> FakeResult:
        return self._add(_int(args[0]), _int(args[1]))

    def _add(self, account_id: int, amount: int) -> FakeResult:
        account = self.tables.accounts.get(account_id)
        if account is None or account.balance + amount < 0:
            return FakeResult(rowcount=0)
        self.tables.accounts[account_id] = app.Account(
            account_id, account.owner, account.balance + amount
        )
        return FakeResult(rowcount=1)

    def record(self, sql: str, args: Args) -> FakeResult:
        source, target, amount = (_int(arg) for arg in args)
        self.tables.transfers.append((source, target, amount))
        return FakeResult(rowcount=1)

    def transfers_of(self, sql: str, args: Args) -> FakeResult:
        account_id = _int(args[0])
        rows = [row for row in self.tables.transfers if account_id in row[:2]]
        return FakeResult(rows, columns=["source", "target", "amount"])

    # -- transactions ------------------------------------------------------------------------------

    def begin(self, sql: str, args: Args) -> list[Args]:
        self.snapshots = [("", copy.deepcopy(self.tables))]
        return []

    def commit(self, sql: str, args: Args) -> list[Args]:
        self.snapshots = []
        return []

    def rollback(self, sql: str, args: Args) -> list[Args]:
        self.tables = self.snapshots[0][1]
        self.snapshots = []
        return []

    def savepoint(self, sql: str, args: Args) -> list[Args]:
        self.snapshots.append((_savepoint(sql), copy.deepcopy(self.tables)))
        return []

    def release(self, sql: str, args: Args) -> list[Args]:
        name = _savepoint(sql)
        while self.snapshots.pop()[0] != name:
            pass
        return []

    def rollback_to(self, sql: str, args: Args) -> list[Args]:
        name = _savepoint(sql)
        while self.snapshots[-1][0] != name:
            self.snapshots.pop()
        self.tables = copy.deepcopy(self.snapshots[-1][1])
        return []


def _savepoint(sql: str) -> str:
    return sql.rstrip(";").split()[-1]


@pytest.fixture(params=["fake", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Where the app's data lives: the strict fake, or the PostgreSQL server."""
    if request.param == "fake":
        return FAKE_URL
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool[asyncpg.Connection]]:
    """The app's pool, open, with the app's tables in place: scripted into the fake, or created
    in a schema of the test's own on PostgreSQL (dropped after it)."""
    if database_url == FAKE_URL:
        pool = app.make_pool(database_url)
        assert isinstance(pool.driver, FakeDriver)
        AccountsModel().script(pool.driver)
        async with pool:
            await app.create_schema(pool)
            yield pool
        return
    schema = f"accounts_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        # asyncpg passes a URL's unknown parameters on to the server as settings.
        separator = "&" if "?" in database_url else "?"
        async with app.make_pool(f"{database_url}{separator}search_path={schema}") as pool:
            await app.create_schema(pool)
            yield pool
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


# -- the app's tests: the same on both ---------------------------------------------------------


async def test_an_account_reads_back_as_opened(pool: Pool[asyncpg.Connection]) -> None:
    opened = await app.open_account(pool, "ann", 100)
    assert opened == app.Account(opened.id, "ann", 100)
    assert await app.get_account(pool, opened.id) == opened
    assert await app.get_account(pool, opened.id + 1000) is None


async def test_accounts_are_listed_in_order_and_totalled(pool: Pool[asyncpg.Connection]) -> None:
    assert await app.list_accounts(pool) == []
    assert await app.total_balance(pool) == 0
    ann = await app.open_account(pool, "ann", 100)
    bob = await app.open_account(pool, "bob", 20)
    assert await app.list_accounts(pool) == [ann, bob]
    assert await app.total_balance(pool) == 120


async def test_renaming_a_missing_account_fails(pool: Pool[asyncpg.Connection]) -> None:
    ann = await app.open_account(pool, "ann")
    await app.rename(pool, ann.id, "anne")
    assert await app.get_account(pool, ann.id) == app.Account(ann.id, "anne", 0)
    with pytest.raises(app.AccountNotFound):
        await app.rename(pool, ann.id + 1000, "nobody")


async def test_a_transfer_moves_money_and_is_recorded(pool: Pool[asyncpg.Connection]) -> None:
    ann = await app.open_account(pool, "ann", 100)
    bob = await app.open_account(pool, "bob", 0)
    await app.transfer(pool, ann.id, bob.id, 30)
    assert [account.balance for account in await app.list_accounts(pool)] == [70, 30]
    expected = {"source": ann.id, "target": bob.id, "amount": 30}
    assert await app.history(pool, bob.id) == [expected]


async def test_a_transfer_without_funds_changes_nothing(pool: Pool[asyncpg.Connection]) -> None:
    ann = await app.open_account(pool, "ann", 10)
    bob = await app.open_account(pool, "bob", 0)
    with pytest.raises(app.InsufficientFunds):
        await app.transfer(pool, ann.id, bob.id, 30)
    assert [account.balance for account in await app.list_accounts(pool)] == [10, 0]
    assert await app.history(pool, ann.id) == []


async def test_a_transfer_to_a_missing_account_is_rolled_back(
    pool: Pool[asyncpg.Connection],
) -> None:
    ann = await app.open_account(pool, "ann", 100)
    with pytest.raises(app.AccountNotFound):
        await app.transfer(pool, ann.id, ann.id + 1000, 30)
    # The debit had been made: the transaction block undid it.
    assert await app.get_account(pool, ann.id) == ann


async def test_transfer_all_undoes_only_the_transfers_that_fail(
    pool: Pool[asyncpg.Connection],
) -> None:
    ann = await app.open_account(pool, "ann", 100)
    bob = await app.open_account(pool, "bob", 0)
    made = await app.transfer_all(
        pool,
        [
            (ann.id, bob.id, 60),
            (ann.id, bob.id + 1000, 10),  # no such target: its debit is rolled back
            (ann.id, bob.id, 60),  # not enough left
            (bob.id, ann.id, 5),
        ],
    )
    assert made == [True, False, False, True]
    assert await app.balances(pool, [ann.id, bob.id, bob.id + 1000]) == {
        ann.id: 45,
        bob.id: 55,
        bob.id + 1000: None,
    }
    assert len(await app.history(pool, ann.id)) == 2


async def test_accounts_are_imported_in_one_transaction(pool: Pool[asyncpg.Connection]) -> None:
    await app.open_account(pool, "ann")
    assert await app.import_accounts(pool, [("bob", 1), ("cy", 2)]) == 3
    assert [account.owner for account in await app.list_accounts(pool)] == ["ann", "bob", "cy"]


# -- what only the fake half shows -------------------------------------------------------------


async def test_on_the_strict_fake_an_unscripted_statement_fails_the_test() -> None:
    """Had the app sent a statement the model does not know, its test would have failed, naming
    the statement the model knows that comes closest."""
    pool = app.make_pool(FAKE_URL)
    assert isinstance(pool.driver, FakeDriver)
    AccountsModel().script(pool.driver)
    async with pool, pool.acquire() as conn:
        with pytest.raises(UnscriptedStatementError) as raised:
            await conn.fetchrow("SELECT id, owner FROM accounts WHERE id = $1", 1)
    assert raised.value.closest[0] == "SELECT id, owner, balance FROM accounts WHERE id = $1"
