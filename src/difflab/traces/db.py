"""The `programs` table: migrations, a JSONL loader, and paged reads that survive a dropped connection.

Two stores behind one async interface, chosen by the database URL:

    postgresql://user@host:port/db   PostgreSQL through asyncpg: a connection pool, parameterized
                                     queries only, retries with exponential backoff (tenacity) on
                                     transient errors (connection lost, server shutting down or
                                     terminating the backend, too many connections, serialization)
    sqlite:///path, or a file path    SQLite, the embedded default that needs no server

Reads stream the table in pages by keyset pagination (`WHERE id > last ORDER BY id LIMIT n`). A page
is either received whole or retried whole on a fresh connection, and the position only advances past
a received page, so a connection killed mid-stream loses and duplicates nothing.

Passwords never appear in messages: URLs are shown redacted. Prefer PGPASSWORD or ~/.pgpass (both
read by asyncpg) to a password in the URL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

from difflab.errors import DifflabError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
COLUMNS = ("id", "parent_id", "code", "value", "visits", "response", "reasoning", "state_before",
           "state_after", "version", "created_at")
REQUIRED_COLUMNS = ("id", "parent_id", "code", "value", "visits")
JSON_COLUMNS = ("state_before", "state_after")
MIN_ID = -(2**63)

DEFAULTS = {
    "page_size": 10000,
    "pool_min": 1,
    "pool_max": 4,
    "retries": 6,
    "backoff_initial_s": 0.2,
    "backoff_max_s": 10.0,
    "connect_timeout_s": 10.0,
    "application_name": "difflab-traces",
}


# --------------------------------------------------------------------------- URLs


def is_postgres(url: str) -> bool:
    return str(url).startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel.db` -> rel.db, `sqlite:////abs.db` -> /abs.db, a plain path -> itself."""
    url = str(url)
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        return Path(rest[1:] if rest.startswith("/") else rest)
    return Path(url)


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and messages."""
    url = str(url)
    if not is_postgres(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        netloc = f"{creds}@{host}"
    query = "&".join(q.split("=", 1)[0] + "=***" if "password" in q.split("=", 1)[0].lower() else q
                     for q in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# --------------------------------------------------------------------------- records


def _as_int(value, field: str, where: str, *, nullable: bool = False):
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise DifflabError(f"{where}: field '{field}' must be an integer, got {value!r}")
    return int(value)


def _as_json_text(value, field: str, where: str):
    if value is None:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            raise DifflabError(f"{where}: field '{field}' is a string but not JSON") from None
        return value
    return json.dumps(value, sort_keys=True)


def normalize_record(record: dict, where: str) -> dict:
    """A JSONL record checked and shaped for the table; errors name file, record and field."""
    for field in ("id", "code"):
        if field not in record:
            raise DifflabError(f"{where}: missing field '{field}'")
    code = record["code"]
    if not isinstance(code, str):
        raise DifflabError(f"{where}: field 'code' must be a string, got {type(code).__name__}")
    value = record.get("value", 0.0)
    if value is None:
        value = 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DifflabError(f"{where}: field 'value' must be a number, got {value!r}")
    created = record.get("created_at")
    if created is not None:
        try:
            created = dt.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        except ValueError:
            raise DifflabError(f"{where}: field 'created_at' is not an ISO 8601 time: {created!r}") from None
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.timezone.utc)
    out = {
        "id": _as_int(record["id"], "id", where),
        "parent_id": _as_int(record.get("parent_id"), "parent_id", where, nullable=True),
        "code": code,
        "value": float(value),
        "visits": _as_int(record.get("visits") or 0, "visits", where),
        "response": record.get("response"),
        "reasoning": record.get("reasoning", record.get("objective")),
        "state_before": _as_json_text(record.get("state_before"), "state_before", where),
        "state_after": _as_json_text(record.get("state_after"), "state_after", where),
        "version": None if record.get("version") is None else str(record["version"]),
        "created_at": created,
    }
    for field in ("response", "reasoning"):
        if out[field] is not None and not isinstance(out[field], str):
            raise DifflabError(f"{where}: field '{field}' must be a string")
    return out


def read_dump(path: str | Path) -> list[dict]:
    """A JSONL dump of programs -> normalized records; duplicate ids and bad fields are errors."""
    from difflab import io

    records, seen = [], {}
    for raw in io.read_jsonl(path, required=("id", "code"), line_field="_line"):
        where = f"{path}: record {raw['_line']}"
        record = normalize_record(raw, where)
        if record["id"] in seen:
            raise DifflabError(f"{where}: field 'id': program {record['id']} already given by record {seen[record['id']]}")
        seen[record["id"]] = record["_line"] = raw["_line"]
        records.append(record)
    return records


# --------------------------------------------------------------------------- stores


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, OSError, asyncio.TimeoutError]
    try:
        import asyncpg
        from asyncpg import exceptions as pgx

        # InternalClientError: the server's termination notice arrived while the connection was idle
        # and the next query found the protocol mid-state; the connection is dropped and the query redone.
        errors += [asyncpg.PostgresConnectionError, pgx.ConnectionDoesNotExistError, pgx.InterfaceError,
                   pgx.InternalClientError, pgx.OperatorInterventionError, pgx.InsufficientResourcesError,
                   pgx.SerializationError, pgx.DeadlockDetectedError]
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        pass
    return tuple(errors)


class Store:
    """What the traces pipeline needs from a database (async; use as `async with open_store(url)`)."""

    url: str

    async def __aenter__(self):
        await self.open()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def migrate(self) -> None:
        raise NotImplementedError

    async def columns(self) -> list[str]:
        raise NotImplementedError

    async def existing_ids(self, ids: list[int]) -> set[int]:
        raise NotImplementedError

    async def upsert(self, records: list[dict], batch_size: int = 5000) -> None:
        """Insert or update every record in one transaction (sent `batch_size` rows at a time): a child
        may come before its parent, and a failed import leaves the table as it was."""
        raise NotImplementedError

    async def fetch_page(self, columns: list[str], version: str | None, after: int, limit: int) -> list[tuple]:
        """Rows with id > after, in id order; `version` None reads every version."""
        raise NotImplementedError

    async def _fingerprint(self, version: str | None) -> dict:
        raise NotImplementedError

    async def fingerprint(self, version: str | None) -> dict:
        self._check_version(await self.readable_columns(), version)
        return await self._fingerprint(version)

    def _check_version(self, columns: list[str], version: str | None) -> None:
        if version is not None and "version" not in columns:
            raise DifflabError(f"{redact(self.url)}: table 'programs' has no column 'version' "
                               f"(the run asks for version '{version}')")

    async def check_table(self) -> None:
        """Before writing: an existing `programs` table must have every column an import writes."""
        present = await self.columns()
        missing = [c for c in COLUMNS if c not in present]
        if present and missing:
            raise DifflabError(f"{redact(self.url)}: table 'programs' has no column '{missing[0]}' "
                               f"(an import writes {', '.join(COLUMNS)}; reading needs only {', '.join(REQUIRED_COLUMNS)})")

    async def readable_columns(self) -> list[str]:
        present = await self.columns()
        if not present:
            raise DifflabError(f"{redact(self.url)}: no table 'programs' (run `difflab traces migrate`)")
        missing = [c for c in REQUIRED_COLUMNS if c not in present]
        if missing:
            raise DifflabError(f"{redact(self.url)}: table 'programs' has no column '{missing[0]}'")
        return [c for c in COLUMNS if c in present]

    async def pages(self, version: str | None = None, page_size: int = DEFAULTS["page_size"],
                    columns: list[str] | None = None) -> AsyncIterator[list[tuple]]:
        """Rows of `programs` (optionally of one version) in id order, one page at a time."""
        columns = columns or await self.readable_columns()
        self._check_version(columns, version)
        after = MIN_ID
        while True:
            rows = await self.fetch_page(columns, version, after, page_size)
            if not rows:
                return
            yield rows
            after = rows[-1][0]


class SQLiteStore(Store):
    """The embedded default: one file, no server."""

    def __init__(self, url: str, **_options):
        self.url = str(url)
        self.path = sqlite_path(url)
        self.conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, check_same_thread=False)

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def migrate(self) -> None:
        self.conn.executescript((MIGRATIONS / "001_programs.sqlite.sql").read_text())
        self.conn.commit()

    async def columns(self) -> list[str]:
        return [row[1] for row in self.conn.execute("PRAGMA table_info(programs)")]

    async def existing_ids(self, ids: list[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(f"SELECT id FROM programs WHERE id IN ({marks})", chunk))
        return found

    async def upsert(self, records: list[dict], batch_size: int = 5000) -> None:
        cols = list(COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")
        sql = (f"INSERT INTO programs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT (id) DO UPDATE SET {updates}")
        rows = [tuple(r[c].isoformat() if c == "created_at" and r[c] is not None else r[c] for c in cols)
                for r in records]
        with self.conn:  # one transaction
            for start in range(0, len(rows), batch_size):
                self.conn.executemany(sql, rows[start:start + batch_size])

    async def fetch_page(self, columns, version, after, limit):
        where, args = ("version = ? AND ", (version,)) if version is not None else ("", ())
        sql = f"SELECT {', '.join(columns)} FROM programs WHERE {where}id > ? ORDER BY id LIMIT ?"
        return await asyncio.to_thread(lambda: self.conn.execute(sql, (*args, after, limit)).fetchall())

    async def _fingerprint(self, version):
        where, args = (" WHERE version = ?", (version,)) if version is not None else ("", ())
        row = self.conn.execute(f"SELECT count(*), max(id), total(value), total(visits) FROM programs{where}",
                                args).fetchone()
        return {"rows": row[0], "max_id": row[1], "value_sum": round(row[2], 9), "visits_sum": int(row[3])}


class PostgresStore(Store):
    """PostgreSQL through an asyncpg pool; every query parameterized and retried when transient."""

    def __init__(self, url: str, **options):
        self.url = str(url)
        self.options = {**DEFAULTS, **options}
        self.pool = None
        self._reader = None

    def _retrying(self):
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        def before_sleep(state):
            log.warning("%s: %s; retry %d in %.2f s", redact(self.url), type(state.outcome.exception()).__name__,
                        state.attempt_number, state.next_action.sleep)

        return AsyncRetrying(stop=stop_after_attempt(self.options["retries"] + 1),
                             wait=wait_exponential(multiplier=self.options["backoff_initial_s"],
                                                   max=self.options["backoff_max_s"]),
                             retry=retry_if_exception_type(_transient_errors()), reraise=True,
                             before_sleep=before_sleep)

    async def open(self) -> None:
        import asyncpg

        async for attempt in self._retrying():
            with attempt:
                try:
                    self.pool = await asyncpg.create_pool(
                        self.url, min_size=self.options["pool_min"], max_size=self.options["pool_max"],
                        timeout=self.options["connect_timeout_s"],
                        server_settings={"application_name": self.options["application_name"]})
                except asyncpg.InvalidCatalogNameError:
                    raise DifflabError(f"{redact(self.url)}: database does not exist") from None
                except asyncpg.InvalidPasswordError:
                    raise DifflabError(f"{redact(self.url)}: authentication failed") from None

    async def close(self) -> None:
        await self._drop_reader()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def _run(self, method: str, *args):
        """conn.<method>(*args) on a pooled connection, retried on transient errors."""
        async for attempt in self._retrying():
            with attempt:
                async with self.pool.acquire() as conn:
                    return await getattr(conn, method)(*args)

    async def migrate(self) -> None:
        await self._run("execute", (MIGRATIONS / "001_programs.postgresql.sql").read_text())

    async def columns(self) -> list[str]:
        rows = await self._run("fetch", "SELECT column_name FROM information_schema.columns "
                                        "WHERE table_name = 'programs' AND table_schema = current_schema()")
        return [r[0] for r in rows]

    async def existing_ids(self, ids: list[int]) -> set[int]:
        rows = await self._run("fetch", "SELECT id FROM programs WHERE id = ANY($1::bigint[])", ids)
        return {r[0] for r in rows}

    async def upsert(self, records: list[dict], batch_size: int = 5000) -> None:
        """COPY into a temporary staging table, batch by batch, then one INSERT .. ON CONFLICT DO UPDATE
        (re-imports are idempotent); the parent key is checked at commit, so the dump's order is free."""
        cols = list(COLUMNS)
        rows = [tuple(r[c] for c in cols) for r in records]
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")

        async def load(conn):
            async with conn.transaction():
                await conn.execute("CREATE TEMPORARY TABLE programs_import (LIKE programs INCLUDING DEFAULTS) "
                                   "ON COMMIT DROP")
                for start in range(0, len(rows), batch_size):
                    await conn.copy_records_to_table("programs_import", records=rows[start:start + batch_size],
                                                     columns=cols)
                await conn.execute(f"INSERT INTO programs ({', '.join(cols)}) SELECT {', '.join(cols)} "
                                   f"FROM programs_import ON CONFLICT (id) DO UPDATE SET {updates}")

        async for attempt in self._retrying():
            with attempt:
                async with self.pool.acquire() as conn:
                    await load(conn)

    async def _drop_reader(self, broken: bool = False) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            if broken:  # never reuse a connection a query failed on: the pool opens a new one
                reader.terminate()
            await self.pool.release(reader)

    async def fetch_page(self, columns, version, after, limit):
        select = ", ".join(f"{c}::text" if c in JSON_COLUMNS else c for c in columns)
        where, args = ("version = $3 AND ", (version,)) if version is not None else ("", ())
        sql = f"SELECT {select} FROM programs WHERE {where}id > $1 ORDER BY id LIMIT $2"
        async for attempt in self._retrying():
            with attempt:
                if self._reader is None:
                    self._reader = await self.pool.acquire()
                try:
                    return [tuple(r) for r in await self._reader.fetch(sql, after, limit, *args)]
                except BaseException:
                    await self._drop_reader(broken=True)
                    raise

    async def _fingerprint(self, version):
        # the value sum in numeric: exact, so the same rows give the same sum in any scan order
        where, args = (" WHERE version = $1", (version,)) if version is not None else ("", ())
        row = await self._run("fetchrow", "SELECT count(*), max(id), coalesce(sum(value::numeric), 0), "
                                          f"coalesce(sum(visits), 0) FROM programs{where}", *args)
        return {"rows": row[0], "max_id": row[1], "value_sum": round(float(row[2]), 9), "visits_sum": int(row[3])}

    async def backend_pid(self) -> int | None:
        """The server process serving the current paged read (tests terminate it)."""
        return None if self._reader is None else self._reader.get_server_pid()


def open_store(url: str, **options) -> Store:
    """A store for a database URL (not yet opened)."""
    return PostgresStore(url, **options) if is_postgres(url) else SQLiteStore(url, **options)


# --------------------------------------------------------------------------- sync entry points


def _run(coro):
    """Run a coroutine to completion, also from code already inside an event loop (Snakemake's DAG)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def migrate(url: str, **options) -> None:
    async def go():
        async with open_store(url, **options) as store:
            await store.check_table()
            await store.migrate()

    _run(go())


def import_dump(url: str, path: str | Path, *, batch_size: int = 5000, **options) -> dict:
    """Create the table if needed and upsert a JSONL dump; every parent must be in the dump or the database."""
    records = read_dump(path)

    async def go():
        async with open_store(url, **options) as store:
            await store.check_table()
            await store.migrate()
            ids = {r["id"] for r in records}
            wanted = sorted({r["parent_id"] for r in records if r["parent_id"] is not None} - ids)
            present = await store.existing_ids(wanted) if wanted else set()
            for record in records:
                parent = record["parent_id"]
                if parent is not None and parent not in ids and parent not in present:
                    raise DifflabError(f"{path}: record {record['_line']}: field 'parent_id': program {parent} "
                                       f"is neither in the dump nor in {redact(url)}")
            await store.upsert(records, batch_size)
            return await store.fingerprint(None)

    total = _run(go())
    return {"file": str(path), "database": redact(url), "imported": len(records), "table": total}


def read_programs(url: str, version: str | None = None, *, page_size: int | None = None,
                  on_page: Callable[[int, Store], object] | None = None, **options) -> "pd.DataFrame":
    """The `programs` rows (of one version, or all) as a DataFrame in id order, streamed in pages.

    `on_page(rows_so_far, store)` runs after each page (may be a coroutine function): progress, or a
    test that kills the connection mid-stream.
    """
    import pandas as pd

    page_size = page_size or options.pop("page_size", DEFAULTS["page_size"])
    options.pop("page_size", None)

    async def go():
        frames = []
        async with open_store(url, **options) as store:
            columns = await store.readable_columns()
            count = 0
            async for rows in store.pages(version, page_size, columns):
                frames.append(pd.DataFrame.from_records(rows, columns=columns))
                count += len(rows)
                if on_page is not None:
                    result = on_page(count, store)
                    if asyncio.iscoroutine(result):
                        await result
        return frames, columns

    frames, columns = _run(go())
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    try:
        return normalize_frame(frame)
    except DifflabError as exc:
        raise DifflabError(f"{redact(url)}: {exc}") from None


def normalize_frame(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Column types the pipeline relies on, whichever store the rows came from."""
    import pandas as pd

    frame = frame.copy()
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["id"] = frame["id"].astype("int64")
    frame["parent_id"] = frame["parent_id"].astype("Int64")
    frame["value"] = frame["value"].astype("float64").fillna(0.0)
    frame["visits"] = frame["visits"].fillna(0).astype("int64")
    if len(frame):
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, errors="coerce")
    for column in ("code", "response", "reasoning", "state_before", "state_after", "version"):
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    for column in JSON_COLUMNS:  # one canonical text (jsonb reorders keys)
        frame[column] = [_canonical_json(v, column, i) for v, i in zip(frame[column], frame["id"])]
    return frame[list(COLUMNS)]


def _canonical_json(value, column: str, program_id: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DifflabError(f"program {program_id}: field '{column}': not JSON ({exc.msg}: {value[:60]!r})") from None
    return json.dumps(value, sort_keys=True)


def fingerprint(url: str, version: str | None = None, **options) -> dict:
    """Row count, max id and sums of value and visits: changes when a search run adds or rescores programs."""
    async def go():
        async with open_store(url, **options) as store:
            return await store.fingerprint(version)

    return _run(go())
