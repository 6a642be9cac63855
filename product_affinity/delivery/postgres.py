"""The Postgres port for BI tools: the published snapshot in PostgreSQL, under the policy engine's rules.

`publish()` copies the tables the semantic views read (the output ports, and the source-aligned customer,
product and purchase) from the published DuckDB snapshot into PostgreSQL, and compiles policies.yaml and the
semantic model into roles, grants, row-level security and masking views, so psql, Superset, Metabase or
Tableau log in as a principal and see what the API shows that principal:

    product_affinity.<view>                 one view per semantic view: the API's ungrouped rows, masked
    product_affinity.publication            the snapshot published, and when
    source_aligned.*, consumer_aligned.*    the tables, with the names the model's SQL uses; owner only
    product_affinity_private                the masking key, the publication record; owner only

Roles are cluster-wide, so a prefix (pa_ by default) keeps deployments apart: `pa_owner` (NOLOGIN) owns every
table and view, and the views read the tables with its rights; `pa_group_<group>` (NOLOGIN) holds a group's
grants; `pa_<principal>` logs in, and is a member of its groups' roles and of nothing else.

- Members: column grants on the views, so a principal may read the union of its groups' columns.
- Masks: a personal-data column is a CASE on the reader's groups, in the engine's order: in clear if a
  group that allows it unmasks it, else the first such group's own mask, else the model's; the SQL is the
  compiler's mask_sql, so masked values are the API's byte for byte. The hash key stays in an owner-only table.
- Row filters: restrictive row-level security on every table whose rows belong to a filtered row (through
  the model's many-to-one joins, as the compiler joins), one policy per group and filter; the policies of all
  a reader's groups apply, so filters intersect. Each member's attribute values are kept in an owner-only
  table and looked up by a SECURITY DEFINER function, so the policy text (pg_policies, EXPLAIN) holds none.
- Who reads is the login, `session_user`, never `current_user`: masks and filters are decided on the login's
  groups, so `SET ROLE` to one of its group roles (which drops the other groups' filters from
  `current_user`) changes nothing but the column grants, which only shrink. `SET SESSION AUTHORIZATION`
  needs a superuser login, and no principal is one.
- Statement timeout: every login has `statement_timeout` set on its role, and a read of the published
  tables is refused while the session has lifted it (0) or raised it above that, so a BI query cannot run
  for longer than the publisher allowed.
- One transaction loads the new tables into staging schemas, then takes every lock readers hold (NOWAIT,
  retried, so readers never queue behind it), swaps the tables in and recreates views, policies and grants.
  A statement sees one publication whole; a transaction that has read the views keeps its publication until
  it ends (the publisher waits); a REPEATABLE READ transaction whose snapshot predates a publication gets a
  serialization failure, never the new tables half-visible.

The work is split by concern: postgres_roles, postgres_load, postgres_row_security and postgres_swap.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from product_affinity.defaults import POSTGRES_STATEMENT_TIMEOUT
from product_affinity.governance.policies import policies
from product_affinity.governance.audit import AuditLog
from product_affinity.governance.credentials import masking_key
from product_affinity.publication import published_snapshot
from product_affinity.semantic.loader import model
from product_affinity.delivery.postgres_common import APPLICATION, PRIVATE, PUBLICATION_VIEW, PublishError, VIEWS, default_dsn, safe_dsn
from product_affinity.delivery.postgres_roles import Roles, _cleared
from product_affinity.delivery.postgres_load import _create_database, _load, published_tables
from product_affinity.delivery.postgres_row_security import _Deployment
from product_affinity.delivery.postgres_swap import Reader, _swap


@dataclass(frozen=True)
class PostgresPublication:
    dsn: str  # without password
    snapshot: str
    rows: dict[str, int]  # contract table -> rows copied
    views: list[str]
    logins: dict[str, list[str]]  # login role -> its group roles
    refused: dict[str, str]  # principal -> why they have no access (as the API refuses them)
    load_seconds: float
    seconds: float
    attempts: int  # tries to take the readers' locks for the swap


def publish(warehouse: Path, dsn: str | None = None, prefix: str = "pa_", wait: float = 300.0,
            on_busy: Callable[[list[Reader]], None] | None = None,
            statement_timeout: float = POSTGRES_STATEMENT_TIMEOUT) -> PostgresPublication:
    """Publish the published snapshot of `warehouse` into the database of `dsn` (created if missing), as one transaction.

    Needs a superuser: it manages roles, their statement logging and timeout. A login's statements are cancelled
    after `statement_timeout` seconds. Appends one line to the audit log.
    """
    if not 0.001 <= statement_timeout < 2**31 / 1000:  # Postgres keeps it in whole milliseconds, an int; 0 means none
        raise PublishError(f"statement_timeout: {statement_timeout!r} s is not between 1 ms and 24 days")
    started, dsn = time.perf_counter(), dsn or default_dsn()
    audit, snapshot = AuditLog(warehouse), None
    entry = dict(principal=None, key_id=None, path="postgres publish", request={"dsn": safe_dsn(dsn), "role_prefix": prefix})
    try:
        snapshot = published_snapshot(warehouse)
        done = _publish(snapshot, dsn, Roles(prefix), masking_key(warehouse), wait, on_busy, started, round(statement_timeout * 1000))
    except Exception as error:
        audit.record(**entry, outcome="error", detail=f"{type(error).__name__}: {error}", snapshot=snapshot and snapshot.name,
                     duration_ms=(time.perf_counter() - started) * 1000)
        raise
    audit.record(**entry, outcome="ok", rows=sum(done.rows.values()), snapshot=done.snapshot, duration_ms=done.seconds * 1000,
                 policies={"logins": done.logins, "refused": done.refused},
                 detail=f"published by {getpass.getuser()} into {done.dsn}")
    return done


def _publish(snapshot: Path, dsn: str, roles: Roles, key: str, wait: float, on_busy, started: float,
             statement_timeout_ms: int) -> PostgresPublication:
    declared = roles.declared()
    if PUBLICATION_VIEW in model().views:
        raise PublishError(f"a semantic view may not be called {PUBLICATION_VIEW!r}: the port's own view has that name")
    cleared, refused = _cleared(policies().principals)
    tables = published_tables()
    data_schemas = sorted({t.schema for t in tables})
    database = _create_database(dsn)
    with duckdb.connect(str(snapshot), read_only=True) as duck, \
            psycopg.connect(dsn, autocommit=True, application_name=APPLICATION) as pg:
        duck.execute("SET enable_progress_bar = false")  # the summary says how long it took
        user, superuser = pg.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if not superuser:
            raise PublishError(f"{user} is not a superuser: publishing manages roles and their statement logging")
        with pg.transaction():
            if not pg.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [APPLICATION]).fetchone()[0]:
                raise PublishError(f"another publish-postgres is publishing into {database}; nothing changed")
            existing = {r for (r,) in pg.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(declared)])}
            for role, login in declared.items():  # attributes reset too: a role by that name must not bypass the policies
                pg.execute(sql.SQL("{} ROLE {} {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT").format(
                    sql.SQL("ALTER" if role in existing else "CREATE"), sql.Identifier(role), sql.SQL("LOGIN" if login else "NOLOGIN")))
            loading = time.perf_counter()
            rows = _load(pg, duck, tables, roles.owner)
            load_seconds = time.perf_counter() - loading
            publication_id = str(pg.execute("SELECT pg_current_xact_id()").fetchone()[0])
            deployment, logins = _Deployment(pg, roles, cleared, publication_id, statement_timeout_ms), {}
            attempts = _swap(pg, [VIEWS, PRIVATE, *data_schemas],
                             lambda: logins.update(deployment.install(data_schemas, key, snapshot.name)), wait, on_busy)
    return PostgresPublication(safe_dsn(dsn), snapshot.name, rows, [f"{VIEWS}.{v}" for v in model().views], logins, refused,
                               load_seconds, time.perf_counter() - started, attempts)


def summary(done: PostgresPublication) -> str:
    """What a publication printed for the person who ran it."""
    database = conninfo_to_dict(done.dsn)
    host, name = database.get("host", "localhost"), database.get("dbname")
    example = next(iter(done.logins), None)
    lines = [
        f"Published {done.snapshot} into {done.dsn} in {done.seconds:.1f}s (copying the tables {done.load_seconds:.1f}s)",
        "Tables: " + ", ".join(f"{name} {count:,}" for name, count in done.rows.items()),
        "Views: " + ", ".join(done.views),
        "Logins: " + ", ".join(f"{login} ({', '.join(groups)})" for login, groups in done.logins.items()),
        *(f"No access for {who}: {why}" for who, why in done.refused.items()),
    ]
    if example:
        lines.append(f"Connect as a principal: psql -h {host} -U {example} {name}")
    return "\n".join(lines)

