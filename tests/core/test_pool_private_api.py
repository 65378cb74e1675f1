"""core/pool.py and core/statements.py lean on SQLAlchemy internals: these fail when they change.

The fair pool replaces QueuePool's queue (`_queue_class`, a `QueueCommon`) and wraps its
`_do_get` / `_do_return_conn`, and pings through `Pool._dialect.do_ping`. The named statements
run on the asyncpg connection and keep the asyncpg adapter's transaction bookkeeping
(`_transaction`, `_start_transaction`, `autocommit`) and SQLAlchemy's disconnect handling
(`Pool._invalidate`, a closed driver connection as the disconnect test) themselves. None of that
is public API, so pyproject.toml pins SQLAlchemy to the minor it was tested on, and each
assumption the code makes is stated here. When one fails after an upgrade, re-read the new
SQLAlchemy source, adapt core/pool.py or core/statements.py, then widen the pin.
"""

from __future__ import annotations

import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import sqlalchemy
from packaging.requirements import Requirement
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_cursor,
    PGDialect_asyncpg,
)
from sqlalchemy.engine.base import Connection
from sqlalchemy.pool import Pool, QueuePool
from sqlalchemy.pool import base as pool_base
from sqlalchemy.pool import impl as pool_impl
from sqlalchemy.util import concurrency
from sqlalchemy.util import queue as sqla_queue

from service.core import greenlets
from service.core.pool import HandOffQueue, HandOffQueuePool

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _sqlalchemy_requirement() -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [declared] = [r for r in map(Requirement, dependencies) if r.name == "sqlalchemy"]
    return declared


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_sqlalchemy_is_pinned_to_the_tested_minor() -> None:
    declared = _sqlalchemy_requirement()
    installed = version("sqlalchemy")
    assert declared.specifier.contains(installed), (str(declared), installed)
    major, minor = (int(part) for part in installed.split(".")[:2])
    assert not declared.specifier.contains(f"{major}.{minor + 1}.0"), (
        f"{declared} admits the next minor, which core/pool.py was never tested on"
    )


def test_hand_off_queue_implements_every_method_of_queue_common() -> None:
    expected = {
        "__init__": ["self", "maxsize", "use_lifo"],
        "empty": ["self"],
        "full": ["self"],
        "qsize": ["self"],
        "put_nowait": ["self", "item"],
        "put": ["self", "item", "block", "timeout"],
        "get_nowait": ["self"],
        "get": ["self", "block", "timeout"],
    }
    declared = {
        name: _parameters(member)
        for name, member in vars(sqla_queue.QueueCommon).items()
        if inspect.isfunction(member) and (name == "__init__" or not name.startswith("_"))
    }
    assert declared == expected  # a method added or changed upstream: HandOffQueue must follow
    overridden = {name: _parameters(vars(HandOffQueue)[name]) for name in expected}
    assert overridden == expected


def test_queue_pool_builds_its_queue_from_queue_class_and_uses_get_and_put_as_assumed() -> None:
    pool = HandOffQueuePool(creator=lambda: None, pool_size=3, max_overflow=0)  # type: ignore[arg-type]  # never connects
    assert type(pool._pool) is HandOffQueue
    assert pool._pool.maxsize == 3
    # QueuePool's own _do_get / _do_return_conn, which ours wrap, talk to the queue like this and
    # expect these exception classes (the ones core/pool.py raises).
    assert "self._pool.get(wait, self._timeout)" in inspect.getsource(QueuePool._do_get)
    assert "self._pool.put(record, False)" in inspect.getsource(QueuePool._do_return_conn)
    assert pool_impl.sqla_queue.Empty is sqla_queue.Empty  # type: ignore[attr-defined]
    assert pool_impl.sqla_queue.Full is sqla_queue.Full  # type: ignore[attr-defined]


def test_checkout_and_return_go_through_the_overridden_methods() -> None:
    assert _parameters(QueuePool._do_get) == ["self"]
    assert _parameters(QueuePool._do_return_conn) == ["self", "record"]
    checkout = inspect.getsource(pool_base._ConnectionRecord.checkout)
    assert "pool._do_get()" in checkout
    assert "self._do_return_conn(record)" in inspect.getsource(pool_base.Pool._return_conn)


def test_keeping_overflow_connections_counts_them_as_queuepool_does() -> None:
    """The pool keeps overflow connections in its queue and closes them later the way QueuePool
    closes one the queue has no room for: `record.close()`, then `_dec_overflow()`; the gauges'
    checked-out figure is `maxsize - idle + _overflow`, right with kept ones in the queue."""
    returning = inspect.getsource(QueuePool._do_return_conn)
    assert "record.close()" in returning
    assert "self._dec_overflow()" in returning
    assert _parameters(QueuePool._dec_overflow) == ["self"]
    assert "self._pool.maxsize - self._pool.qsize() + self._overflow" in inspect.getsource(
        QueuePool.checkedout
    )
    assert "pool_size=self._pool.maxsize" in inspect.getsource(QueuePool.recreate)
    pool = HandOffQueuePool(creator=lambda: None, pool_size=3, max_overflow=2)  # type: ignore[arg-type]  # never connects
    assert pool._overflow == -3  # counts from -pool_size, as checkedout() assumes


def test_the_idle_ping_uses_the_dialects_do_ping() -> None:
    assert _parameters(PGDialect_asyncpg.do_ping) == ["self", "dbapi_connection"]
    assert "_dialect" in inspect.getsource(pool_base.Pool.__init__)
    assert callable(sqlalchemy.util.await_)  # HandOffQueue.get waits through it (new in 2.1)


# -- core/statements.py ------------------------------------------------------------------------


def test_the_adapter_begins_lazily_through_start_transaction_as_statements_does() -> None:
    """statements._run does what the adapter's cursor does before each statement: begin through
    `_start_transaction` when `_transaction` is None, unless the connection autocommits; the
    adapter's commit and rollback then end that transaction."""
    assert "_transaction" in AsyncAdapt_asyncpg_connection.__slots__
    assert inspect.iscoroutinefunction(AsyncAdapt_asyncpg_connection._start_transaction)
    assert _parameters(AsyncAdapt_asyncpg_connection._start_transaction) == ["self"]
    begin = inspect.getsource(AsyncAdapt_asyncpg_connection._start_transaction)
    assert 'if self.isolation_level == "autocommit":' in begin
    assert "self._transaction = transaction" in begin
    execute = inspect.getsource(AsyncAdapt_asyncpg_cursor._prepare_and_execute)
    assert "if adapt_connection._transaction is None:" in execute
    assert "await adapt_connection._start_transaction()" in execute
    for ending in (AsyncAdapt_asyncpg_connection.commit, AsyncAdapt_asyncpg_connection.rollback):
        assert "if self._transaction is not None:" in inspect.getsource(ending)
    autocommit = AsyncAdapt_asyncpg_connection.autocommit
    assert isinstance(autocommit, property)
    assert autocommit.fget is not None
    assert 'self.isolation_level == "autocommit"' in inspect.getsource(autocommit.fget)


def test_a_disconnect_is_a_closed_driver_connection_and_invalidates_the_pool_generation() -> None:
    """statements._on_error treats an error that left the asyncpg connection closed as a
    disconnect and, like Connection._handle_dbapi_exception, invalidates the pool's older
    connections through Pool._invalidate before invalidating its own."""
    assert "connection._connection.is_closed()" in inspect.getsource(
        PGDialect_asyncpg.is_disconnect
    )
    handler = inspect.getsource(Connection._handle_dbapi_exception)
    assert "self.engine.pool._invalidate(dbapi_conn_wrapper, e)" in handler
    assert _parameters(Pool._invalidate) == ["self", "connection", "exception", "_checkin"]
    assert "self._invalidate_time = time.time()" in inspect.getsource(Pool._invalidate)
    checkout = inspect.getsource(pool_base._ConnectionRecord.get_connection)
    assert "self.__pool._invalidate_time > self.starttime" in checkout


def test_a_connection_can_be_built_on_a_checked_out_pool_connection() -> None:
    """statements._Owned hands the ORM `Connection(engine, connection=<the pooled connection>)`
    and ends it with Connection.close(), which closes (returns) that pooled connection; the
    adapter's DB-API commit() is a no-op without a transaction."""
    assert _parameters(Connection.__init__)[:3] == ["self", "engine", "connection"]
    source = inspect.getsource(Connection.__init__)
    assert "self._dbapi_connection = connection" in source
    assert "conn.close()" in inspect.getsource(Connection.close)
    commit = inspect.getsource(AsyncAdapt_asyncpg_connection.commit)
    assert "if self._transaction is not None:" in commit


def test_await_runs_in_any_greenlet_that_declares_itself_a_provider() -> None:
    """core/greenlets.py's reused greenlets are not SQLAlchemy's own class: await_ accepts them
    because they set the marker it checks, and it hands the awaitable to their parent."""
    source = inspect.getsource(concurrency.await_)
    assert '"__sqlalchemy_greenlet_provider__"' in source
    assert "current.parent.switch(awaitable)" in source
    assert getattr(greenlets._Worker, "__sqlalchemy_greenlet_provider__", False) is True
