"""The run history: one SQLite file that every run appends to as events arrive.

Design notes (the "why" behind the choices below):

* **Crash safety.** Every write commits immediately (ticks commit per batch), so a run
  that is SIGKILLed keeps everything committed up to that moment. The next read-write
  open marks such a run ``aborted`` -- but only when its writer process is provably gone
  on this host, because a notebook may open the store while a run is still writing.
* **WAL + ``synchronous=NORMAL``.** In WAL mode a commit with ``synchronous=NORMAL``
  is appended to the WAL without an fsync. The data is in the OS page cache, so it
  survives the *process* dying (SIGKILL, crash, Ctrl-C); only a power loss / kernel
  crash can lose the last few transactions, and even then the database stays
  consistent. That is the right trade for a tick recorder that must sustain 20k+
  ticks/s.
* **Readers never see "database is locked".** WAL lets readers run concurrently with
  the single writer; write transactions are short and start with ``BEGIN IMMEDIATE``
  (so they wait on the busy handler instead of failing on a snapshot upgrade); every
  connection sets ``busy_timeout``; read-only stores open with a ``mode=ro`` URI.
* **Schema versions.** ``PRAGMA user_version`` holds the schema version and
  ``MIGRATIONS[i]`` upgrades version ``i`` to ``i + 1``; adding v2 is appending one entry.
* **Fast history queries.** Summary columns (first_bid_s, total_cost, tick_count, ...)
  live on the ``runs`` table, so listing a year of runs never touches the ticks table.

All timestamps are stored as UTC epoch seconds (REAL) and returned as timezone-aware
UTC datetimes (pandas ``datetime64[ns, UTC]`` in DataFrames).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
else:

    class _LazyPandas:
        """pandas, imported on first use: a run that only writes never pays its ~1 s import,
        which is most of `harness run`'s startup on a small machine."""

        def __getattr__(self, name: str) -> Any:
            import pandas

            return getattr(pandas, name)

    pd = _LazyPandas()

from harness_lib.constants import DEFAULT_STORE
from harness_lib.models import (
    Checkpoint,
    PhaseResult,
    Target,
    Verdict,
    _jsonable,
    finite,
    utcnow,
)
from harness_lib.positions import FLAT_EPSILON, side_signs

__all__ = [
    "DEFAULT_STORE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "migrate",
    "sql_migration",
]

APPLICATION = "livefire"
"""Written to the ``meta`` table so we never adopt (or migrate) someone else's database."""

BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits for another connection's write transaction to finish."""

HARNESS_REF_PREFIX = "harness:"
"""Orders the harness places carry an orderRef with this prefix; the cost ledger uses it."""

# A string range that matches exactly the refs starting with "harness:" and can use the
# index on executions(order_ref) (LIKE cannot, with the default case-insensitive LIKE).
_REF_LO = HARNESS_REF_PREFIX
_REF_HI = HARNESS_REF_PREFIX[:-1] + chr(ord(HARNESS_REF_PREFIX[-1]) + 1)


class StoreError(Exception):
    """The store cannot be used: not writable, not a harness store, too new, closed..."""


Migration = Callable[[sqlite3.Connection], None]


def sql_migration(*statements: str) -> Migration:
    """A migration step that executes the given SQL statements in order.

    Steps run inside the migrator's transaction, so they must not use ``executescript``
    (which would commit half-way).
    """

    def step(conn: sqlite3.Connection) -> None:
        for stmt in statements:
            conn.execute(stmt)

    return step


_V1 = sql_migration(
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    f"INSERT INTO meta(key, value) VALUES ('application', '{APPLICATION}')",
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'aborted')),
        started_at REAL NOT NULL,
        finished_at REAL,
        verdict TEXT,
        reason TEXT,
        exit_code INTEGER,
        simulated INTEGER NOT NULL DEFAULT 0,
        scenario TEXT,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        client_id INTEGER NOT NULL,
        account TEXT,
        accounts TEXT NOT NULL DEFAULT '[]',
        server_version INTEGER,
        target_label TEXT NOT NULL,
        contract TEXT NOT NULL,
        phases TEXT NOT NULL DEFAULT '[]',
        config TEXT NOT NULL DEFAULT '{}',
        summary TEXT,
        first_bid_s REAL,
        first_ask_s REAL,
        total_cost REAL,
        tick_count INTEGER NOT NULL DEFAULT 0,
        pid INTEGER,
        pid_start INTEGER,
        hostname TEXT
    )""",
    "CREATE INDEX runs_started ON runs(started_at)",
    "CREATE INDEX runs_target ON runs(target_label, started_at)",
    "CREATE INDEX runs_running ON runs(status) WHERE status = 'running'",
    """CREATE TABLE phases (
        run_id TEXT NOT NULL,
        phase TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        started_at REAL,
        duration_s REAL,
        metrics TEXT NOT NULL DEFAULT '{}',
        evidence TEXT NOT NULL DEFAULT '{}',
        errors TEXT NOT NULL DEFAULT '[]',
        checkpoints TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (run_id, phase)
    )""",
    """CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        phase TEXT NOT NULL,
        name TEXT NOT NULL,
        t_mono REAL,
        t_wall REAL,
        detail TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX checkpoints_run ON checkpoints(run_id, t_mono)",
    # A rowid table with a non-unique index: a buggy duplicate seq must never make a
    # whole batch fail (and be lost); rows of one run are contiguous anyway.
    """CREATE TABLE ticks (
        run_id TEXT NOT NULL,
        con_id INTEGER,
        symbol TEXT,
        field TEXT,
        tick_type INTEGER,
        price REAL,
        size REAL,
        t_mono REAL,
        t_wall REAL,
        market_data_type INTEGER,
        seq INTEGER NOT NULL
    )""",
    "CREATE INDEX ticks_run_seq ON ticks(run_id, seq)",
    # kind is not CHECK-constrained: an unexpected kind must be stored, not lost.
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        code INTEGER,
        message TEXT NOT NULL DEFAULT '',
        req_id INTEGER,
        t_wall REAL NOT NULL,
        t_mono REAL
    )""",
    "CREATE INDEX events_run ON events(run_id, t_wall)",
    """CREATE TABLE orders (
        run_id TEXT NOT NULL,
        order_id INTEGER NOT NULL,
        perm_id INTEGER,
        client_id INTEGER,
        account TEXT,
        con_id INTEGER,
        symbol TEXT,
        sec_type TEXT,
        multiplier REAL,
        action TEXT,
        quantity REAL,
        order_type TEXT,
        lmt_price REAL,
        order_ref TEXT,
        leg TEXT,
        status TEXT,
        decision_bid REAL,
        decision_ask REAL,
        decision_mid REAL,
        submitted_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (run_id, order_id)
    )""",
    "CREATE INDEX orders_ref ON orders(order_ref)",
    """CREATE TABLE executions (
        exec_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        order_id INTEGER,
        perm_id INTEGER,
        order_ref TEXT,
        con_id INTEGER,
        symbol TEXT,
        side TEXT NOT NULL,
        shares REAL NOT NULL,
        price REAL NOT NULL,
        account TEXT,
        t_wall REAL NOT NULL,
        t_mono REAL
    )""",
    "CREATE INDEX executions_run ON executions(run_id, t_wall)",
    "CREATE INDEX executions_ref ON executions(order_ref)",
    """CREATE TABLE commissions (
        exec_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        commission REAL NOT NULL,
        currency TEXT,
        realized_pnl REAL,
        t_wall REAL NOT NULL
    )""",
    "CREATE INDEX commissions_run ON commissions(run_id)",
    """CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        ok INTEGER NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        t_wall REAL NOT NULL
    )""",
    "CREATE INDEX notifications_run ON notifications(run_id, t_wall)",
)

_V2 = sql_migration(
    # What the user's own stack showed (harness_lib.stack), one row per message/DOM change.
    """CREATE TABLE stack_observations (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        t_mono REAL,
        t_wall REAL NOT NULL,
        bid REAL,
        ask REAL,
        last REAL,
        mode TEXT,
        has_quote INTEGER NOT NULL DEFAULT 0,
        position REAL,
        has_position INTEGER NOT NULL DEFAULT 0,
        trade_ids TEXT,
        error TEXT,
        raw TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX stack_observations_run ON stack_observations(run_id, t_wall)",
    # The judged stack checks, with the broker->stack latency each measured.
    """CREATE TABLE stack_checks (
        run_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        name TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        latency_s REAL,
        at_wall REAL,
        expected TEXT NOT NULL DEFAULT '',
        observed TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, endpoint, name)
    )""",
)

_V3 = sql_migration(
    # `harness drill`: fault x reaction x endpoint, with the measured latency and the verdict.
    """CREATE TABLE drill_results (
        run_id TEXT NOT NULL,
        drill TEXT NOT NULL,
        reaction TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        deadline_s REAL,
        latency_s REAL,
        verdict TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        t_fault REAL,
        t_recover REAL,
        PRIMARY KEY (run_id, drill, reaction, endpoint)
    )""",
)

MIGRATIONS: tuple[Migration, ...] = (
    _V1,  # 0 -> 1: initial schema
    _V2,  # 1 -> 2: stack observations and checks
    _V3,  # 2 -> 3: drill results
    # 3 -> 4: append e.g. sql_migration("ALTER TABLE runs ADD COLUMN ...") here.
)
"""``MIGRATIONS[i]`` upgrades a store from schema version ``i`` to ``i + 1``."""

SCHEMA_VERSION: int = len(MIGRATIONS)
"""The schema version this code writes (``PRAGMA user_version`` of an up-to-date store)."""


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchall()[0][0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Upgrade the database on ``conn`` step by step to ``len(migrations)``; return it.

    Each step runs in its own ``BEGIN IMMEDIATE`` transaction together with the
    ``user_version`` bump, so a failing step leaves the store at the previous version,
    and two processes opening a fresh store at once cannot both apply a step (the
    version is re-read after the write lock is taken). ``conn`` must be in autocommit
    mode (``isolation_level=None``).
    """
    if _user_version(conn) > len(migrations):
        raise StoreError(
            f"store schema v{_user_version(conn)} is newer than this livefire "
            f"(v{len(migrations)}); upgrade livefire"
        )
    while (current := _user_version(conn)) < len(migrations):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have just migrated.
            if _user_version(conn) == current:
                migrations[current](conn)
                # PRAGMA cannot take parameters; current is an int we control.
                conn.execute(f"PRAGMA user_version = {current + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return _user_version(conn)


# --------------------------------------------------------------------------- helpers


def _epoch(dt: datetime | None) -> float | None:
    """UTC epoch seconds; naive datetimes are taken to be UTC already."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _dt(x: float | None) -> datetime | None:
    """Epoch seconds back to an aware UTC datetime (exact to the microsecond)."""
    if x is None:
        return None
    return datetime.fromtimestamp(x, UTC)


def _json(obj: Any) -> str:
    return json.dumps(_jsonable(obj), default=str)


def _unjson(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _utc(series: pd.Series) -> pd.Series:
    """Epoch seconds -> pandas UTC datetimes, rounded to the microsecond we stored."""
    return pd.to_datetime(pd.to_numeric(series), unit="s", utc=True).dt.round("us")


PID_START_TOLERANCE_S = 0.5
"""Two creation times of one process closer than this are the same process."""


def _process_start(pid: int) -> float | None:
    """When process ``pid`` was created (epoch seconds, via psutil), or None if unknown."""
    import psutil  # here, not at import: only opening a store read-write needs it

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _writer_alive(pid: int, pid_start: float | None) -> bool:
    """Is the process that wrote a run still alive on this host? When unsure: yes.

    Saying "alive" wrongly only delays the ``aborted`` mark; saying "dead" wrongly would
    clobber a run that is still writing, so every doubt resolves to alive. psutil answers
    the same way on Linux and macOS (where the launchd schedule runs) and on Windows.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False  # a zombie has exited; it only awaits its parent's wait()
        start = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):
        return True  # e.g. AccessDenied: it exists, owned by someone else
    # Stores written before psutil kept clock ticks since boot (small numbers), not epoch
    # seconds: those cannot be compared, so they count as alive.
    if pid_start is None or pid_start < 1e9:
        return True
    # pid reuse (containers restart with the same small pids): a different creation time
    # means a different process.
    return abs(start - float(pid_start)) < PID_START_TOLERANCE_S


_RUN_COLUMNS = [
    "run_id",
    "started_at",
    "finished_at",
    "status",
    "verdict",
    "reason",
    "exit_code",
    "simulated",
    "scenario",
    "host",
    "port",
    "client_id",
    "account",
    "server_version",
    "target_label",
    "contract",
    "phases",
    "first_bid_s",
    "first_ask_s",
    "total_cost",
    "tick_count",
    "pid",
    "hostname",
]

_COST_COLUMNS = [
    "time",
    "run_id",
    "order_ref",
    "symbol",
    "quantity",
    "entry_side",
    "entry_price",
    "exit_price",
    "commission",
    "commission_known",
    "slippage",
    "slippage_known",
    "total_cost",
    "realized_pnl",
    "net_position",
    "currency",
    "executions",
]


class Store:
    """The SQLite run history. Thread-safe: one connection guarded by a lock.

    Read-write stores create the file (and its parent directory), migrate it, and mark
    runs whose writer died as ``aborted``. ``readonly=True`` never writes: use it from
    notebooks and dashboards that poll while a run is recording.
    """

    def __init__(self, path: str | Path = DEFAULT_STORE, *, readonly: bool = False) -> None:
        """Open (and for read-write, create/migrate) the store at ``path``.

        Raises StoreError with a one-line message when the path is not usable, the file
        is not a harness store, or its schema is newer than this code.
        """
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._host = socket.gethostname()
        conn = self._connect()
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if not readonly:
            self._abort_stale_runs()

    # ----------------------------------------------------------------- open / close

    def _connect(self) -> sqlite3.Connection:
        where = str(self.path)
        try:
            if self.readonly:
                if not self.path.is_file():
                    raise StoreError(f"no harness store at {where}")
                uri = self.path.resolve().as_uri() + "?mode=ro"
                conn = sqlite3.connect(
                    uri,
                    uri=True,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                if self.path.is_dir():
                    raise StoreError(f"{where} is a directory, not a store file")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    # Autocommit: we issue BEGIN IMMEDIATE/COMMIT ourselves so that write
                    # transactions are explicit and short.
                    isolation_level=None,
                    # The Recorder writes from a worker thread; self._lock serialises use.
                    check_same_thread=False,
                )
        except StoreError:
            raise
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open store {where}: {_one_line(e)}") from e
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        where = str(self.path)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            # Reading the header is what detects a file that is not SQLite at all.
            version = _user_version(conn)
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).fetchall()
            }
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{where} is not a harness store (not an SQLite database: {_one_line(e)})"
            ) from e

        if version == 0:
            if tables:
                raise StoreError(f"{where} is not a harness store (unknown tables, no version)")
            if self.readonly:
                raise StoreError(f"{where} is not a harness store (empty database)")
        else:
            app = None
            if "meta" in tables:
                try:
                    rows = conn.execute(
                        "SELECT value FROM meta WHERE key = 'application'"
                    ).fetchall()
                    app = rows[0][0] if rows else None
                except sqlite3.DatabaseError:
                    app = None
            if app != APPLICATION:
                raise StoreError(f"{where} is not a harness store (no livefire meta record)")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{where} has schema v{version}, newer than this livefire "
                    f"(v{SCHEMA_VERSION}); upgrade livefire"
                )
            if version < SCHEMA_VERSION and self.readonly:
                raise StoreError(
                    f"{where} has schema v{version} and needs migrating to "
                    f"v{SCHEMA_VERSION}; open it once read-write"
                )

        if self.readonly:
            return
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
            if str(mode).lower() != "wal":
                # Persistent in the file; readers get WAL even when they open read-only.
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
            # See the module docstring: with WAL this is still safe against SIGKILL.
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn)
        except StoreError:
            raise
        except sqlite3.Error as e:
            msg = _one_line(e)
            if "readonly" in msg.replace(" ", "").lower():
                raise StoreError(f"store {where} is not writable ({msg})") from e
            raise StoreError(f"cannot prepare store {where}: {msg}") from e

    def close(self) -> None:
        """Close the connection. Further calls raise StoreError; closing twice is fine."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"Store({str(self.path)!r}, {mode})"

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One short write transaction under the lock; sqlite errors become StoreError."""
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only; cannot {what}")
        with self._lock:
            conn = self._require()
            try:
                # IMMEDIATE takes the write lock up front, waiting on busy_timeout, instead
                # of failing later with SQLITE_BUSY when a read snapshot must be upgraded.
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreError(f"store {self.path}: {what} failed: {_one_line(e)}") from e
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreError(f"store {self.path}: {what} failed: {_one_line(e)}") from e
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple]]:
        with self._lock:
            conn = self._require()
            try:
                # fetchall() so the statement (and its WAL read snapshot) ends right away;
                # a lingering snapshot would stop the writer's checkpoints.
                cur = conn.execute(sql, params)
                rows = cur.fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"store {self.path}: query failed: {_one_line(e)}") from e
            cols = [d[0] for d in cur.description] if cur.description else []
            return cols, rows

    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        cols, rows = self._query(sql, params)
        return pd.DataFrame.from_records(rows, columns=cols)

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    def _abort_stale_runs(self) -> None:
        """Mark 'running' runs whose writer process is gone from this host as aborted."""
        _, rows = self._query(
            "SELECT run_id, pid, pid_start, hostname FROM runs WHERE status = 'running'"
        )
        for run_id, pid, pid_start, hostname in rows:
            # Another host's pid means nothing here (shared disks): leave it alone.
            if hostname != self._host or pid is None:
                continue
            if _writer_alive(int(pid), pid_start):
                continue
            self._mark_aborted(
                run_id,
                f"writer process {pid} on {hostname} died before the run finished",
                at_last_activity=True,
            )

    # ----------------------------------------------------------------------- writes

    def start_run(
        self,
        run_id: str,
        *,
        target: Target,
        contract: str,
        phases: list[str],
        config: dict,
        started_at: datetime | None = None,
    ) -> None:
        """Record a new run as 'running', owned by this process on this host.

        ``config`` is stored as JSON as given: the caller must already have redacted it.
        """
        started = _epoch(started_at or utcnow())
        try:
            with self._write("start run") as conn:
                conn.execute(
                    """INSERT INTO runs (run_id, status, started_at, simulated, scenario,
                        host, port, client_id, account, accounts, server_version,
                        target_label, contract, phases, config, pid, pid_start, hostname)
                    VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        run_id,
                        started,
                        int(bool(target.simulated)),
                        target.scenario,
                        target.host,
                        int(target.port),
                        int(target.client_id),
                        target.account,
                        _json(list(target.accounts)),
                        target.server_version,
                        target.label,
                        contract,
                        _json([str(p) for p in phases]),
                        _json(config),
                        os.getpid(),
                        _process_start(os.getpid()),
                        self._host,
                    ),
                )
        except StoreError as e:
            if "UNIQUE" in str(e):
                raise StoreError(f"run {run_id} already exists in {self.path}") from e
            raise

    def finish_run(
        self,
        run_id: str,
        *,
        verdict: str,
        reason: str,
        exit_code: int,
        summary: dict[str, Any],
        finished_at: datetime | None = None,
    ) -> None:
        """Conclude a run: status 'finished', verdict, and the summary columns.

        ``summary['first_bid_s'|'first_ask_s'|'total_cost']`` fill the runs columns used
        by history queries; ``summary['target']`` (a ``Target.to_dict()``) updates the
        account, accounts, server version and label learned during the run.
        """
        tgt = summary.get("target") or {}
        with self._write("finish run") as conn:
            conn.execute(
                """UPDATE runs SET status = 'finished', finished_at = ?, verdict = ?,
                    reason = ?, exit_code = ?, summary = ?, first_bid_s = ?,
                    first_ask_s = ?, total_cost = ?,
                    account = COALESCE(?, account),
                    accounts = COALESCE(?, accounts),
                    server_version = COALESCE(?, server_version),
                    target_label = COALESCE(?, target_label)
                WHERE run_id = ?""",
                (
                    _epoch(finished_at or utcnow()),
                    str(verdict),
                    reason,
                    int(exit_code),
                    _json(summary),
                    finite(summary.get("first_bid_s")),
                    finite(summary.get("first_ask_s")),
                    finite(summary.get("total_cost")),
                    tgt.get("account"),
                    _json(tgt["accounts"]) if tgt.get("accounts") else None,
                    tgt.get("server_version"),
                    tgt.get("label"),
                    run_id,
                ),
            )

    def mark_aborted(self, run_id: str, reason: str) -> None:
        """Conclude a still-running run as aborted (e.g. Ctrl-C). Finished runs are kept."""
        self._mark_aborted(run_id, reason, at_last_activity=False)

    def _mark_aborted(self, run_id: str, reason: str, *, at_last_activity: bool) -> None:
        with self._write("mark run aborted") as conn:
            finished = None
            if at_last_activity:
                # The crash time is unknown; the last thing the run recorded is the best
                # estimate (each lookup uses an index, no table scan).
                finished = max(
                    (
                        r[0]
                        for sql in (
                            "SELECT t_wall FROM ticks WHERE run_id = ? ORDER BY seq DESC LIMIT 1",
                            "SELECT MAX(t_wall) FROM events WHERE run_id = ?",
                            "SELECT MAX(t_wall) FROM checkpoints WHERE run_id = ?",
                            "SELECT MAX(t_wall) FROM executions WHERE run_id = ?",
                            "SELECT started_at FROM runs WHERE run_id = ?",
                        )
                        for r in conn.execute(sql, (run_id,)).fetchall()
                        if r[0] is not None
                    ),
                    default=None,
                )
            conn.execute(
                """UPDATE runs SET status = 'aborted', verdict = ?, reason = ?,
                    exit_code = ?, finished_at = ?
                WHERE run_id = ? AND status = 'running'""",
                (
                    str(Verdict.ABORTED),
                    reason,
                    Verdict.ABORTED.exit_code,
                    finished if finished is not None else _epoch(utcnow()),
                    run_id,
                ),
            )

    def record_phase(self, run_id: str, result: PhaseResult) -> None:
        """Insert or replace the result of one phase of a run (keyed by run and phase)."""
        with self._write("record phase") as conn:
            conn.execute(
                """INSERT INTO phases (run_id, phase, verdict, reason, started_at,
                    duration_s, metrics, evidence, errors, checkpoints)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id, phase) DO UPDATE SET verdict = excluded.verdict,
                    reason = excluded.reason, started_at = excluded.started_at,
                    duration_s = excluded.duration_s, metrics = excluded.metrics,
                    evidence = excluded.evidence, errors = excluded.errors,
                    checkpoints = excluded.checkpoints""",
                (
                    run_id,
                    str(result.phase),
                    str(result.verdict),
                    result.reason,
                    _epoch(result.started_at),
                    finite(result.duration_s),
                    _json(result.metrics),
                    _json(result.evidence),
                    _json([_message_dict(m) for m in result.errors]),
                    _json([_checkpoint_dict(c) for c in result.checkpoints]),
                ),
            )

    def add_checkpoint(self, run_id: str, phase: str, cp: Checkpoint) -> None:
        """Record that a phase reached a named checkpoint."""
        with self._write("add checkpoint") as conn:
            conn.execute(
                """INSERT INTO checkpoints (run_id, phase, name, t_mono, t_wall, detail)
                VALUES (?, ?, ?, ?, ?, ?)""",
                (run_id, str(phase), cp.name, cp.t_mono, _epoch(cp.t_wall), cp.detail),
            )

    def add_ticks(self, rows: Sequence[tuple]) -> None:
        """Insert a batch of ticks in ONE transaction (all or none are committed).

        Each row is ``(run_id, con_id, symbol, field, tick_type, price, size, t_mono,
        t_wall, market_data_type, seq)`` with ``t_wall`` as epoch seconds; price and size
        may be None (NaN is stored as NULL). The run's ``tick_count`` is kept in the same
        transaction so history queries never count ticks.
        """
        if not rows:
            return
        counts = Counter(r[0] for r in rows)
        with self._write("add ticks") as conn:
            # executemany reuses one prepared statement (the module caches it too).
            conn.executemany(
                """INSERT INTO ticks (run_id, con_id, symbol, field, tick_type, price, size,
                    t_mono, t_wall, market_data_type, seq)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                rows,
            )
            conn.executemany(
                "UPDATE runs SET tick_count = tick_count + ? WHERE run_id = ?",
                [(n, run_id) for run_id, n in counts.items()],
            )

    def add_event(
        self,
        run_id: str,
        *,
        kind: str,
        code: int | None,
        message: str,
        req_id: int | None,
        t_wall: datetime,
        t_mono: float | None = None,
    ) -> None:
        """Record an IB error/warning/notice or a harness log line.

        ``kind`` is one of 'error', 'warning', 'notice', 'info', 'log' (not enforced:
        an unexpected kind is stored rather than lost).
        """
        with self._write("add event") as conn:
            conn.execute(
                """INSERT INTO events (run_id, kind, code, message, req_id, t_wall, t_mono)
                VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (run_id, kind, code, message, req_id, _epoch(t_wall), t_mono),
            )

    def upsert_order(
        self,
        run_id: str,
        *,
        order_id: int,
        perm_id: int | None,
        client_id: int,
        account: str | None,
        con_id: int,
        symbol: str,
        sec_type: str,
        multiplier: float,
        action: str,
        quantity: float,
        order_type: str,
        lmt_price: float | None,
        order_ref: str,
        leg: str,
        status: str,
        decision_bid: float | None = None,
        decision_ask: float | None = None,
        decision_mid: float | None = None,
    ) -> None:
        """Insert an order or update its status (keyed by run and order id).

        Updates keep the first ``submitted_at``, refresh ``updated_at`` and ``status``,
        and never replace a known perm_id, account, limit price or decision quote with
        None (status callbacks arrive without them).
        """
        now = _epoch(utcnow())
        with self._write("upsert order") as conn:
            conn.execute(
                """INSERT INTO orders (run_id, order_id, perm_id, client_id, account,
                    con_id, symbol, sec_type, multiplier, action, quantity, order_type,
                    lmt_price, order_ref, leg, status, decision_bid, decision_ask,
                    decision_mid, submitted_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id, order_id) DO UPDATE SET
                    status = excluded.status,
                    updated_at = excluded.updated_at,
                    perm_id = COALESCE(excluded.perm_id, perm_id),
                    account = COALESCE(excluded.account, account),
                    lmt_price = COALESCE(excluded.lmt_price, lmt_price),
                    decision_bid = COALESCE(excluded.decision_bid, decision_bid),
                    decision_ask = COALESCE(excluded.decision_ask, decision_ask),
                    decision_mid = COALESCE(excluded.decision_mid, decision_mid)""",
                (
                    run_id,
                    int(order_id),
                    perm_id or None,  # IB reports permId 0 until it assigns one
                    client_id,
                    account or None,
                    con_id,
                    symbol,
                    sec_type,
                    finite(multiplier),
                    action,
                    finite(quantity),
                    order_type,
                    finite(lmt_price),
                    order_ref,
                    leg,
                    status,
                    finite(decision_bid),
                    finite(decision_ask),
                    finite(decision_mid),
                    now,
                    now,
                ),
            )

    def add_execution(
        self,
        run_id: str,
        *,
        exec_id: str,
        order_id: int,
        perm_id: int | None,
        order_ref: str,
        con_id: int,
        symbol: str,
        side: str,
        shares: float,
        price: float,
        account: str | None,
        t_wall: datetime,
        t_mono: float | None = None,
    ) -> bool:
        """Record a fill. Returns False if exec_id is already known.

        IB repeats executions (reqExecutions after a reconnect, several clients), so the
        exec id is the key and a fill is never counted twice. A repeat whose content
        differs (another order, side, size or price under the same exec id) is never
        dropped silently: it is kept whole in a ``conflict`` event of this run.
        """
        content = {
            "order_id": order_id,
            "perm_id": perm_id or None,
            "order_ref": order_ref,
            "con_id": con_id,
            "symbol": symbol,
            "side": side,
            "shares": float(shares),
            "price": float(price),
            "account": account or None,
        }
        with self._write("add execution") as conn:
            cur = conn.execute(
                """INSERT INTO executions (exec_id, run_id, order_id, perm_id, order_ref,
                    con_id, symbol, side, shares, price, account, t_wall, t_mono)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (exec_id) DO NOTHING""",
                (
                    exec_id,
                    run_id,
                    order_id,
                    perm_id or None,
                    order_ref,
                    con_id,
                    symbol,
                    side,
                    float(shares),
                    float(price),
                    account or None,
                    _epoch(t_wall),
                    t_mono,
                ),
            )
            if cur.rowcount == 1:
                return True
            row = conn.execute(
                f"SELECT run_id, {', '.join(content)} FROM executions WHERE exec_id = ?",
                (exec_id,),
            ).fetchone()
            stored = dict(zip(content, row[1:], strict=True))
            if stored != content:
                conn.execute(
                    """INSERT INTO events (run_id, kind, code, message, req_id, t_wall, t_mono)
                    VALUES (?, 'conflict', NULL, ?, NULL, ?, ?)""",
                    (
                        run_id,
                        f"execution {exec_id} is already stored (run {row[0]}) with other "
                        f"content {json.dumps(stored)}; this one: {json.dumps(content)}",
                        _epoch(t_wall),
                        t_mono,
                    ),
                )
            return False

    def add_commission(
        self,
        run_id: str,
        *,
        exec_id: str,
        commission: float,
        currency: str,
        realized_pnl: float | None,
        t_wall: datetime,
    ) -> bool:
        """Record the commission report of a fill; duplicates are ignored (returns False).

        IB's "unset" realized P&L (1.797e308) is stored as NULL.
        """
        with self._write("add commission") as conn:
            cur = conn.execute(
                """INSERT INTO commissions (exec_id, run_id, commission, currency,
                    realized_pnl, t_wall)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (exec_id) DO NOTHING""",
                (
                    exec_id,
                    run_id,
                    finite(commission) or 0.0,
                    currency,
                    finite(realized_pnl),
                    _epoch(t_wall),
                ),
            )
            return cur.rowcount == 1

    def add_notification(
        self,
        run_id: str,
        *,
        channel: str,
        ok: bool,
        detail: str,
        t_wall: datetime | None = None,
    ) -> None:
        """Record a notification attempt. ``channel`` must already be redacted."""
        with self._write("add notification") as conn:
            conn.execute(
                """INSERT INTO notifications (run_id, channel, ok, detail, t_wall)
                VALUES (?, ?, ?, ?, ?)""",
                (run_id, channel, int(bool(ok)), detail, _epoch(t_wall or utcnow())),
            )

    # ---------------------------------------------------------------------- queries

    def runs(
        self,
        last: int | None = None,
        *,
        since: datetime | timedelta | None = None,
        target: str | None = None,
        contract: str | None = None,
        verdict: str | None = None,
    ) -> pd.DataFrame:
        """The run history, newest first, one row per run (no tick aggregation).

        ``last`` keeps the newest N; ``since`` (a datetime, or a timedelta back from now)
        keeps runs started at or after it; ``target`` matches any part of the target
        label (e.g. ``"127.0.0.1:4002"`` or ``"SIMULATOR"``); ``contract`` matches
        exactly; ``verdict`` matches case-insensitively.
        """
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("started_at >= ?")
            params.append(_since_epoch(since))
        if target is not None:
            where.append("instr(target_label, ?) > 0")
            params.append(target)
        if contract is not None:
            where.append("contract = ?")
            params.append(contract)
        if verdict is not None:
            where.append("verdict = ?")
            params.append(str(verdict).upper())
        sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, rowid DESC"
        if last is not None:
            sql += " LIMIT ?"
            params.append(int(last))
        df = self._frame(sql, params)
        if df.empty:
            df = pd.DataFrame(columns=_RUN_COLUMNS)
        df["started_at"] = _utc(df["started_at"])
        df["finished_at"] = _utc(df["finished_at"])
        df["simulated"] = df["simulated"].astype(bool)
        df["phases"] = [json.loads(p) if p else [] for p in df["phases"]]
        for col in ("exit_code", "server_version", "pid", "port", "client_id", "tick_count"):
            df[col] = pd.to_numeric(df[col]).astype("Int64")
        for col in ("first_bid_s", "first_ask_s", "total_cost"):
            df[col] = pd.to_numeric(df[col]).astype(float)
        return df

    def run(self, run_id: str) -> dict[str, Any] | None:
        """Everything stored on one run (JSON columns decoded, datetimes UTC), or None."""
        cols, rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return _run_dict(cols, rows[0]) if rows else None

    def phases(self, run_id: str) -> pd.DataFrame:
        """The phase results of a run in the order they were first recorded."""
        cols = [
            "run_id",
            "phase",
            "verdict",
            "reason",
            "started_at",
            "duration_s",
            "metrics",
            "evidence",
            "errors",
            "checkpoints",
        ]
        df = self._frame(
            f"SELECT {', '.join(cols)} FROM phases WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        if df.empty:
            df = pd.DataFrame(columns=cols)
        df["started_at"] = _utc(df["started_at"])
        for col in ("metrics", "evidence", "errors", "checkpoints"):
            df[col] = [_unjson(v) for v in df[col]]
        return df

    def checkpoints(self, run_id: str) -> pd.DataFrame:
        """Checkpoints of a run ordered by monotonic time."""
        cols = ["run_id", "phase", "name", "t_mono", "t_wall", "detail"]
        df = self._frame(
            f"SELECT {', '.join(cols)} FROM checkpoints WHERE run_id = ? ORDER BY t_mono, id",
            (run_id,),
        )
        if df.empty:
            df = pd.DataFrame(columns=cols)
        df["t_wall"] = _utc(df["t_wall"])
        return df

    def ticks(self, run_id: str) -> pd.DataFrame:
        """The ticks of a run ordered by seq; ``t_wall`` as UTC datetimes plus
        ``t_wall_epoch`` (float seconds) for arithmetic."""
        cols = [
            "run_id",
            "seq",
            "con_id",
            "symbol",
            "field",
            "tick_type",
            "price",
            "size",
            "t_mono",
            "t_wall",
            "market_data_type",
        ]
        df = self._frame(
            f"SELECT {', '.join(cols)} FROM ticks WHERE run_id = ? ORDER BY seq, rowid",
            (run_id,),
        )
        if df.empty:
            df = pd.DataFrame(columns=cols)
        df["t_wall_epoch"] = pd.to_numeric(df["t_wall"]).astype(float)
        df["t_wall"] = _utc(df["t_wall_epoch"])
        for col in ("price", "size", "t_mono"):
            df[col] = pd.to_numeric(df[col]).astype(float)
        return df

    def events(self, run_id: str) -> pd.DataFrame:
        """IB errors/warnings/notices and log lines of a run, in arrival order."""
        cols = ["run_id", "t_wall", "t_mono", "kind", "code", "req_id", "message"]
        df = self._frame(
            f"SELECT {', '.join(cols)} FROM events WHERE run_id = ? ORDER BY t_wall, id",
            (run_id,),
        )
        if df.empty:
            df = pd.DataFrame(columns=cols)
        df["t_wall"] = _utc(df["t_wall"])
        for col in ("code", "req_id"):
            df[col] = pd.to_numeric(df[col]).astype("Int64")
        return df

    def orders(self, run_id: str) -> pd.DataFrame:
        """The orders of a run with their latest status and decision quote."""
        cols = [
            "run_id",
            "order_id",
            "perm_id",
            "client_id",
            "account",
            "con_id",
            "symbol",
            "sec_type",
            "multiplier",
            "action",
            "quantity",
            "order_type",
            "lmt_price",
            "order_ref",
            "leg",
            "status",
            "decision_bid",
            "decision_ask",
            "decision_mid",
            "submitted_at",
            "updated_at",
        ]
        df = self._frame(
            f"SELECT {', '.join(cols)} FROM orders WHERE run_id = ? "
            "ORDER BY submitted_at, order_id",
            (run_id,),
        )
        if df.empty:
            df = pd.DataFrame(columns=cols)
        df["submitted_at"] = _utc(df["submitted_at"])
        df["updated_at"] = _utc(df["updated_at"])
        df["perm_id"] = pd.to_numeric(df["perm_id"]).astype("Int64")
        return df

    def trades(self, run_id: str) -> pd.DataFrame:
        """One row per execution of a run, joined with its order and commission.

        ``slippage`` is per execution, signed (positive = cost) and in account currency:
        BOT ``(price - mid)``, SLD ``(mid - price)``, times shares and multiplier; NaN
        when the order's decision mid is unknown.
        """
        df = self._frame(
            _TRADES_SQL + " WHERE e.run_id = ? ORDER BY e.t_wall, e.exec_id", (run_id,)
        )
        return _finish_trades(df)

    def costs(self, since: datetime | timedelta | None = None) -> pd.DataFrame:
        """The test-trade cost ledger: one row per run with harness-tagged executions.

        Test trades are found by their ``harness:`` orderRef, so fills of other orders
        recorded in the same run never count. Columns: time (first execution), run_id,
        order_ref (of the first execution), symbol, quantity (entry shares), entry_side,
        entry_price / exit_price (share-weighted), commission (absolute, both legs),
        commission_known, slippage (vs the decision mid; executions without a mid add 0
        and make slippage_known False), total_cost = commission + slippage,
        realized_pnl (sold - bought notional - commission; NaN unless net_position is
        0), net_position (bought - sold shares), currency, executions. Newest first.
        ``since`` is a datetime or a timedelta back from now (on the first execution).
        """
        df = self._frame(
            _TRADES_SQL
            + " WHERE e.order_ref >= ? AND e.order_ref < ? ORDER BY e.t_wall, e.exec_id",
            (_REF_LO, _REF_HI),
        )
        ledger = _cost_ledger(_finish_trades(df))
        if ledger.empty:
            ledger["time"] = pd.to_datetime(ledger["time"], utc=True)
            return ledger
        if since is not None:
            cutoff = pd.Timestamp(_since_epoch(since), unit="s", tz="UTC")
            ledger = ledger[ledger["time"] >= cutoff]
        return ledger.sort_values("time", ascending=False, kind="stable").reset_index(drop=True)

    def harness_executions(self) -> list[tuple[str, int, str, float]]:
        """Every recorded execution with a ``harness:`` orderRef, as (exec_id, con_id, side,
        shares), for `harness cleanup` (IB itself only returns today's executions)."""
        _, rows = self._query(
            "SELECT exec_id, con_id, side, shares FROM executions"
            " WHERE order_ref >= ? AND order_ref < ? ORDER BY t_wall",
            (_REF_LO, _REF_HI),
        )
        return [(str(e), int(c), str(s), float(q)) for e, c, s, q in rows]

    def add_stack_observation(self, run_id: str, obs: dict[str, Any]) -> None:
        """Record what a stack endpoint showed (``Observation.to_dict()``; secret-free)."""
        with self._write("add stack observation") as conn:
            conn.execute(
                """INSERT INTO stack_observations (run_id, endpoint, t_mono, t_wall, bid, ask,
                    last, mode, has_quote, position, has_position, trade_ids, error, raw)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    run_id, obs["endpoint"], obs["t_mono"], obs["t_wall"], finite(obs["bid"]),
                    finite(obs["ask"]), finite(obs["last"]), obs["mode"], int(obs["has_quote"]),
                    finite(obs["position"]), int(obs["has_position"]),
                    None if obs["trade_ids"] is None else _json(obs["trade_ids"]),
                    obs["error"], obs["raw"],
                ),
            )  # fmt: skip

    def add_stack_check(self, run_id: str, check: dict[str, Any]) -> None:
        """Record one judged stack check (``CheckResult.to_dict()``)."""
        with self._write("add stack check") as conn:
            conn.execute(
                """INSERT OR REPLACE INTO stack_checks (run_id, endpoint, name, verdict, reason,
                    latency_s, at_wall, expected, observed)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    run_id, check["endpoint"], check["name"], check["verdict"], check["reason"],
                    finite(check["latency_s"]), check["at_wall"], check["expected"],
                    check["observed"],
                ),
            )  # fmt: skip

    def add_drill_result(self, run_id: str, row: dict[str, Any]) -> None:
        """Record one judged drill reaction (``ReactionResult.to_dict()`` plus the drill's
        ``t_fault`` and ``t_recover``, epoch seconds)."""
        with self._write("add drill result") as conn:
            conn.execute(
                """INSERT OR REPLACE INTO drill_results (run_id, drill, reaction, endpoint,
                    deadline_s, latency_s, verdict, detail, t_fault, t_recover)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    run_id, row["drill"], row["reaction"], row["endpoint"],
                    finite(row["deadline_s"]), finite(row["latency_s"]), row["verdict"],
                    row["detail"], finite(row.get("t_fault")), finite(row.get("t_recover")),
                ),
            )  # fmt: skip

    def drill_results(self, run_id: str | None = None) -> pd.DataFrame:
        """Judged drill reactions (one drill run, or every one for post-mortems)."""
        cols = ["run_id", "drill", "reaction", "endpoint", "deadline_s", "latency_s",
                "verdict", "detail", "t_fault", "t_recover"]  # fmt: skip
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        df = self._frame(
            f"SELECT {', '.join(cols)} FROM drill_results {where} "
            "ORDER BY run_id, t_fault, drill, reaction, endpoint",
            params,
        )
        if df.empty:
            df = pd.DataFrame(columns=cols)
        for col in ("t_fault", "t_recover"):
            df[col] = _utc(df[col])
        return df

    def stack_observations(self, run_id: str) -> pd.DataFrame:
        """What the stack's endpoints showed during a run, in arrival order."""
        cols = ["run_id", "endpoint", "t_wall", "t_mono", "bid", "ask", "last", "mode",
                "has_quote", "position", "has_position", "trade_ids", "error", "raw"]  # fmt: skip
        df = self._frame(
            f"SELECT {', '.join(cols)} FROM stack_observations WHERE run_id = ? "
            "ORDER BY t_wall, id",
            (run_id,),
        )
        if df.empty:
            df = pd.DataFrame(columns=cols)
        df["t_wall"] = _utc(df["t_wall"])
        for col in ("has_quote", "has_position"):
            df[col] = df[col].astype(bool)
        df["trade_ids"] = df["trade_ids"].map(lambda x: _unjson(x) if isinstance(x, str) else None)
        return df

    def stack_checks(self, run_id: str | None = None) -> pd.DataFrame:
        """Judged stack checks (one run, or every run for post-mortems), with latency."""
        cols = ["run_id", "endpoint", "name", "verdict", "reason", "latency_s", "at_wall",
                "expected", "observed"]  # fmt: skip
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        df = self._frame(
            f"SELECT {', '.join(cols)} FROM stack_checks {where} ORDER BY run_id, at_wall",
            params,
        )
        if df.empty:
            df = pd.DataFrame(columns=cols)
        df["at_wall"] = _utc(df["at_wall"])
        return df

    def notifications(self, run_id: str) -> pd.DataFrame:
        """Notification attempts of a run (channel already redacted), oldest first."""
        cols = ["run_id", "t_wall", "channel", "ok", "detail"]
        df = self._frame(
            f"SELECT {', '.join(cols)} FROM notifications WHERE run_id = ? ORDER BY t_wall, id",
            (run_id,),
        )
        if df.empty:
            df = pd.DataFrame(columns=cols)
        df["t_wall"] = _utc(df["t_wall"])
        df["ok"] = df["ok"].astype(bool)
        return df

    def integrity_check(self) -> str:
        """The result of ``PRAGMA integrity_check``: ``'ok'`` for a healthy file."""
        _, rows = self._query("PRAGMA integrity_check")
        return "; ".join(str(r[0]) for r in rows)

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the file."""
        _, rows = self._query("PRAGMA user_version")
        return int(rows[0][0])


# ------------------------------------------------------------------ query helpers

_TRADES_SQL = """SELECT e.run_id, e.exec_id, e.t_wall, e.t_mono, e.order_id, e.perm_id,
    e.order_ref, e.con_id, e.symbol, e.side, e.shares, e.price, e.account,
    o.leg, o.multiplier, o.decision_bid, o.decision_ask, o.decision_mid,
    c.commission, c.currency, c.realized_pnl
FROM executions e
LEFT JOIN orders o ON o.run_id = e.run_id AND o.order_id = e.order_id
LEFT JOIN commissions c ON c.exec_id = e.exec_id"""

_TRADE_COLUMNS = [
    "run_id",
    "exec_id",
    "t_wall",
    "t_mono",
    "order_id",
    "perm_id",
    "order_ref",
    "con_id",
    "symbol",
    "side",
    "shares",
    "price",
    "account",
    "leg",
    "multiplier",
    "decision_bid",
    "decision_ask",
    "decision_mid",
    "commission",
    "currency",
    "realized_pnl",
]


def _finish_trades(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        df = pd.DataFrame(columns=_TRADE_COLUMNS)
    df["t_wall"] = _utc(df["t_wall"])
    for col in (
        "shares",
        "price",
        "multiplier",
        "decision_bid",
        "decision_ask",
        "decision_mid",
        "commission",
        "realized_pnl",
    ):
        df[col] = pd.to_numeric(df[col]).astype(float)
    df["perm_id"] = pd.to_numeric(df["perm_id"]).astype("Int64")
    # An execution whose order was not recorded (e.g. placed by a crashed earlier run)
    # has no known multiplier; 1 is right for stocks, the harness's usual contract.
    mult = df["multiplier"].where(df["multiplier"] > 0, 1.0)
    sign = side_signs(df["side"])
    df["slippage"] = sign * (df["price"] - df["decision_mid"]) * df["shares"] * mult
    return df


def _cost_ledger(t: pd.DataFrame) -> pd.DataFrame:
    """One ledger row per run from its harness executions (ordered by time), computed as
    one groupby per column: a per-run loop cost ~3 ms a run, over a second for a year."""
    if t.empty:
        return pd.DataFrame(columns=_COST_COLUMNS)
    import numpy as np

    key = t["run_id"]
    g = t.groupby(key, sort=False)
    sign = side_signs(t["side"])
    buy = sign > 0
    # The entry is whatever side the run's first execution took.
    entry = buy == buy.groupby(key, sort=False).transform("first")
    mult = t["multiplier"].where(t["multiplier"] > 0, 1.0)
    shares, price = t["shares"], t["price"]

    def total(x: pd.Series) -> pd.Series:
        return x.groupby(key, sort=False).sum()

    def wavg(mask: pd.Series) -> pd.Series:
        w = total(shares * mask)
        return (total(price * shares * mask) / w).where(w != 0, np.nan)

    commission = total(t["commission"].abs().fillna(0.0))
    # A side word we cannot read makes the run's net unknown (NaN), never a guess.
    unknown = sign.isna().groupby(key, sort=False).any()
    net = total(shares * sign.fillna(0.0)).where(~unknown, np.nan)
    notional = price * shares * mult
    cash = total(notional * ~buy) - total(notional * buy)
    slippage = total(t["slippage"].fillna(0.0))
    ledger = pd.DataFrame(
        {
            "time": g["t_wall"].first(),
            "run_id": g["run_id"].first(),
            "order_ref": g["order_ref"].first(),
            "symbol": g["symbol"].first(),
            "quantity": total(shares * entry),
            "entry_side": g["side"].first(),
            "entry_price": wavg(entry),
            "exit_price": wavg(~entry),
            "commission": commission,
            "commission_known": t["commission"].notna().groupby(key, sort=False).all(),
            "slippage": slippage,
            "slippage_known": t["decision_mid"].notna().groupby(key, sort=False).all(),
            "total_cost": commission + slippage,
            # Only a flat round trip has a realized P&L; an open leg would look like a loss.
            "realized_pnl": (cash - commission).where(net.abs() < FLAT_EPSILON, np.nan),
            "net_position": net,
            "currency": g["currency"].first(),
            "executions": g.size(),
        }
    )
    return ledger[_COST_COLUMNS].reset_index(drop=True)


def _run_dict(cols: list[str], row: tuple) -> dict[str, Any]:
    d = dict(zip(cols, row, strict=True))
    d["started_at"] = _dt(d["started_at"])
    d["finished_at"] = _dt(d["finished_at"])
    d["simulated"] = bool(d["simulated"])
    for key in ("accounts", "phases", "config", "summary"):
        d[key] = _unjson(d[key])
    d["target"] = {
        "host": d["host"],
        "port": d["port"],
        "client_id": d["client_id"],
        "simulated": d["simulated"],
        "scenario": d["scenario"],
        "account": d["account"],
        "accounts": d["accounts"],
        "server_version": d["server_version"],
        "label": d["target_label"],
    }
    return d


def _since_epoch(since: datetime | timedelta) -> float:
    if isinstance(since, timedelta):
        return utcnow().timestamp() - since.total_seconds()
    return float(_epoch(since))  # type: ignore[arg-type]


def _message_dict(m: Any) -> dict[str, Any]:
    return {
        "code": m.code,
        "message": m.message,
        "req_id": m.req_id,
        "t_wall": _jsonable(m.t_wall),
    }


def _checkpoint_dict(c: Checkpoint) -> dict[str, Any]:
    return {"name": c.name, "t_mono": c.t_mono, "t_wall": _jsonable(c.t_wall), "detail": c.detail}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
