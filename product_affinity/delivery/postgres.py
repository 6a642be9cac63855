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
"""

from __future__ import annotations

import getpass
import io
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import duckdb
import psycopg
import pyarrow.csv as arrow_csv
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from product_affinity.defaults import POSTGRES_STATEMENT_TIMEOUT
from product_affinity.contract.odcs import Column, Table, table
from product_affinity.semantic.access import AccessDenied, Principal, RowFilter
from product_affinity.governance.policies import Group, policies
from product_affinity.governance.audit import AuditLog
from product_affinity.governance.credentials import masking_key
from product_affinity.publication import published_snapshot
from product_affinity.semantic.model import Join, View
from product_affinity.semantic.loader import model
from product_affinity.semantic.compiler import condition, mask_sql, view_rows

DSN_VARIABLE = "PRODUCT_AFFINITY_POSTGRES_DSN"
FALLBACK_DSN = "postgresql://postgres@127.0.0.1:5432/product_affinity"
VIEWS = "product_affinity"
PRIVATE = "product_affinity_private"
STAGING = "_next"  # suffix of the schemas a publication loads before it swaps them in
PUBLICATION_VIEW = "publication"
BATCH_ROWS = 100_000
TYPES = {"DOUBLE": "double precision", "VARCHAR": "text", "VARCHAR[]": "text[]"}  # the contract's other types are Postgres's too
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# A row filter's value, kept as text in the owner-only table: the Postgres type it is cast back to, by the Python
# type the compiler gives it (semantic.compiler._typed: a number is a float).
FILTER_VALUE_TYPES = [(bool, "boolean"), (float, "double precision"), (datetime, "timestamp"), (str, "text")]
APPLICATION = "product-affinity publish-postgres"


class PublishError(RuntimeError):
    """Nothing was published; readers see what they saw before."""


class ReadersBusy(PublishError):
    """Readers held the published views in open transactions for longer than the publisher would wait."""


def default_dsn() -> str:
    return os.environ.get(DSN_VARIABLE, FALLBACK_DSN)


def safe_dsn(dsn: str) -> str:
    """Where a DSN points, as a URL without password or options: fit for messages and the audit log."""
    parts = conninfo_to_dict(dsn)
    user, port = (f"{parts['user']}@" if parts.get("user") else ""), (f":{parts['port']}" if parts.get("port") else "")
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


@dataclass(frozen=True)
class Roles:
    """The role names of one deployment."""

    prefix: str = "pa_"

    @property
    def owner(self) -> str:
        return f"{self.prefix}owner"

    def group(self, name: str) -> str:
        return f"{self.prefix}group_{name}"

    def principal(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def declared(self) -> dict[str, bool]:
        """Every role a publication manages, and whether it logs in; PublishError if names are invalid or collide."""
        names = [(self.owner, False), *((self.group(g), False) for g in policies().groups),
                 *((self.principal(p), True) for p in policies().principals)]
        if bad := [n for n, _ in names if not ROLE_NAME.match(n)]:
            raise PublishError(f"not valid Postgres role names (lower case, digits, _; at most 63): {bad}")
        if len(dict(names)) < len(names):
            raise PublishError(f"with the prefix {self.prefix!r}, a principal's role name is the same as a group's or the owner's")
        return dict(names)


@dataclass(frozen=True)
class Reader:
    """A session holding a lock on the published relations: what a publication waits for."""

    pid: int
    role: str | None
    application: str
    state: str
    since: datetime | None

    def __str__(self) -> str:
        since = f" since {self.since:%Y-%m-%d %H:%M:%S}" if self.since else ""
        return f"pid {self.pid} ({self.role or 'a server process'}, {self.application or 'no application name'}, {self.state}{since})"


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


def published_tables() -> list[Table]:
    """The tables the semantic views read, each once, in the model's order."""
    names = dict.fromkeys(model().cubes[cube].contract_table for view in model().views.values() for cube in view.paths)
    return [table(name) for name in names]


def _cleared(declared: dict[str, Principal]) -> tuple[list[Principal], dict[str, str]]:
    """Principals the engine can answer for, and why the others get nothing (a row filter needs an attribute they lack)."""
    cleared, refused = [], {}
    for who in declared.values():
        try:
            for group in who.groups:
                for f in policies().groups[group].row_filters:
                    f.resolve(who.attributes)
            cleared.append(who)
        except AccessDenied as error:
            refused[who.name] = str(error)
    return cleared, refused


class _Deployment:
    """What one publication creates in the database once its tables are loaded: schemas, views, row-level
    security, grants and memberships, compiled from the model and policies.yaml."""

    def __init__(self, conn: psycopg.Connection, roles: Roles, cleared: list[Principal], publication_id: str,
                 statement_timeout_ms: int) -> None:
        self.conn, self.roles, self.cleared, self.publication_id = conn, roles, cleared, publication_id
        self.statement_timeout_ms = statement_timeout_ms
        self.filter_values: dict[tuple[str, str, int], list[str]] = {}  # (login, group, filter) -> its values as text

    def install(self, data_schemas: list[str], key: str, snapshot: str) -> dict[str, list[str]]:
        """Swap the staged tables in and recreate everything readers use; the logins and their groups."""
        pg, owner = self.conn, sql.Identifier(self.roles.owner)
        pg.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, [VIEWS, PRIVATE, *data_schemas]))))
        for schema in data_schemas:
            pg.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(schema + STAGING), sql.Identifier(schema)))
        for schema in (VIEWS, PRIVATE):
            pg.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema), owner))
        pg.execute(sql.SQL("SET LOCAL ROLE {}").format(owner))  # the owner owns, and grants, everything
        for statement in _private():
            pg.execute(statement)
        pg.execute(f"INSERT INTO {PRIVATE}.masking_key VALUES (%s)", [key])
        pg.execute(f"INSERT INTO {PRIVATE}.publication VALUES (%s, %s, now(), %s)", [self.publication_id, snapshot, self.statement_timeout_ms])
        for cube in dict.fromkeys(c for v in model().views.values() for c in v.paths):
            for statement in self.row_security(cube):
                pg.execute(statement)
        with pg.cursor() as cursor:  # the values the policies just compiled look up, never in their text
            cursor.executemany(f"INSERT INTO {PRIVATE}.row_filter VALUES (%s, %s, %s, %s)",
                               [(*key, values) for key, values in self.filter_values.items()])
        for view in model().views.values():
            for statement in self.view(view):
                pg.execute(statement)
        groups = sql.SQL(", ").join(sql.Identifier(self.roles.group(g)) for g in policies().groups)
        publication = sql.Identifier(VIEWS, PUBLICATION_VIEW)
        pg.execute(sql.SQL("CREATE VIEW {} AS SELECT snapshot, published_at FROM {}").format(publication, sql.Identifier(PRIVATE, "publication")))
        pg.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(publication, groups))
        pg.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(VIEWS), groups))
        for function in ("is_current(text)", "row_filter_values(text, integer)"):  # called by the policies as the reader
            pg.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {}.{} FROM PUBLIC").format(sql.Identifier(PRIVATE), sql.SQL(function)))
            pg.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}.{} TO {}").format(sql.Identifier(PRIVATE), sql.SQL(function), groups))
        pg.execute("RESET ROLE")
        return _sync_roles(pg, self.roles, self.cleared, self.statement_timeout_ms)

    def q(self, *names: str) -> str:
        return sql.Identifier(*names).as_string(self.conn)

    def literal(self, value) -> str:
        return sql.Literal(value).as_string(self.conn)

    def member_of(self, group: Group) -> str:
        """True when the login reading belongs to the group (evaluated once per statement). The login, session_user,
        not current_user: SET ROLE to one group's role would otherwise shed the other groups' filters and masks."""
        return f"(SELECT pg_has_role(session_user, {self.literal(self.roles.group(group.name))}, 'MEMBER'))"

    # -- row-level security ----------------------------------------------------------------------
    def row_security(self, cube_name: str) -> list[str]:
        target = model().cubes[cube_name].table
        # Every row of this publication, for a snapshot that sees it (see _private). In a policy, not in the views,
        # so that the planner still drops the joins a query does not need.
        current = f"(SELECT {self.q(PRIVATE, 'is_current')}({self.literal(self.publication_id)}))"
        statements = [f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY", f"ALTER TABLE {target} FORCE ROW LEVEL SECURITY",
                      f"CREATE POLICY {self.q('every row')} ON {target} FOR SELECT USING ({current})"]
        for group in policies().groups.values():
            for n, f in enumerate(group.row_filters, 1):
                path = model().path(cube_name, f.cube, safe_only=True)
                if path is None:  # no row of this table belongs to a filtered row
                    continue
                alias = target.split(".")[-1]
                using = f"NOT {self.member_of(group)} OR {self._belongs(alias, path, lambda a: self._holds(group, f, n, a))}"
                statements.append(f"CREATE POLICY {self.q(f'{group.name} row filter {n}')} ON {target} AS RESTRICTIVE FOR SELECT USING ({using})")
        return statements

    def _belongs(self, alias: str, joins: list[Join], holds: Callable[[str], str], depth: int = 0) -> str:
        """True when the row `alias` reaches, along the many-to-one `joins`, a row where `holds`."""
        if not joins:
            return holds(alias)
        join, inner = joins[0], f"through_{depth}"
        mine = ", ".join(f"{self.q(alias)}.{self.q(a)}" for a, _ in join.on)
        theirs = ", ".join(f"{self.q(inner)}.{self.q(b)}" for _, b in join.on)
        rest = self._belongs(inner, joins[1:], holds, depth + 1)
        return f"({mine}) IN (SELECT {theirs} FROM {model().cubes[join.cube].table} AS {self.q(inner)} WHERE {rest})"

    def _holds(self, group: Group, f: RowFilter, n: int, alias: str) -> str:
        """The filter for the login reading: the compiler's condition over the values the owner-only table holds for
        that login, looked up once per statement. The condition's shape depends only on how many values a member
        has, so there is one branch per count, and no value or login name in the policy's text."""
        dimension = model().cubes[f.cube].dimensions[f.dimension]
        expr, member = dimension.sql.replace("{CUBE}", self.q(alias)), f"{f.cube}.{f.dimension}"
        lookup = f"(SELECT {self.q(PRIVATE, 'row_filter_values')}({self.literal(group.name)}, {n}))"
        branches = {}
        for who in self.cleared:
            if group.name not in who.groups:
                continue
            found: list[str] = []
            where = f"group {group.name}, row filter {n} ({member}), for {who.name}"
            compiled = condition(expr, dimension.type, f.operator, list(f.resolve(who.attributes)), member,
                                 partial(_looked_up, lookup, found, where), "postgres")
            if branches.setdefault(len(found), compiled) != compiled:  # the compiler typed two members' values differently
                raise PublishError(f"{where}: the condition differs from another member's with as many values: {compiled}")
            self.filter_values[(self.roles.principal(who.name), group.name, n)] = found
        whens = " ".join(f"WHEN {count} THEN {compiled}" for count, compiled in sorted(branches.items()))
        # A login with no values (an undeclared member of the group) sees nothing. coalesce: set/notSet have no values.
        return f"CASE coalesce(cardinality({lookup}), -1) {whens} ELSE false END" if whens else "false"

    # -- views -----------------------------------------------------------------------------------
    def view(self, view: View) -> list[str]:
        rows, names = view_rows(view)
        columns = ",\n  ".join(self._column(view, name, i) for i, name in enumerate(names))
        name = self.q(VIEWS, view.name)
        statements = [
            f"CREATE VIEW {name} AS\nSELECT {columns}\nFROM ({rows}) AS r",
            f"COMMENT ON VIEW {name} IS {self.literal(f'{view.title}: {view.description}')}",
        ]
        for column in names:
            member = view.members[column].member
            note = " Personal data: masked unless one of your groups may see it in clear." if member.pii else ""
            text = f"{member.title}. {member.description}".strip() + note
            statements.append(f"COMMENT ON COLUMN {name}.{self.q(column)} IS {self.literal(text)}")
        for group in policies().groups.values():
            allowed = [self.q(column) for column in names if group.may_read(view, column)]  # the engine's rule, lineage included
            if allowed:
                statements.append(f"GRANT SELECT ({', '.join(allowed)}) ON {name} TO {self.q(self.roles.group(group.name))}")
        return statements

    def _column(self, view: View, name: str, index: int) -> str:
        vm, raw = view.members[name], f"r.d{index}"
        dimension = vm.member
        if not dimension.pii:
            return f"{raw} AS {self.q(name)}"
        ref = f"{vm.cube}.{name}"
        allowing = [g for g in policies().groups.values() if g.may_read(view, name)]
        salt = f"(SELECT key FROM {self.q(PRIVATE, 'masking_key')})"

        def masked(mask) -> str:
            return mask_sql(raw, mask, dimension.type, salt, "postgres")

        clear = " OR ".join(self.member_of(g) for g in allowing if g.sees_in_clear(vm)) or "false"
        own = "".join(f" WHEN {self.member_of(g)} THEN {masked(g.masks[ref])}" for g in allowing if ref in g.masks)
        return f"CASE WHEN {clear} THEN {raw}{own} ELSE {masked(dimension.mask)} END AS {self.q(name)}"


def _looked_up(lookup: str, found: list[str], where: str, value) -> str:
    """A row filter's value as the policy reads it: appended, as text, to the login's values in the owner-only
    table (`found`), and read back from `lookup` cast to its type."""
    cast = next((t for kind, t in FILTER_VALUE_TYPES if isinstance(value, kind)), None)
    if cast is None:
        raise PublishError(f"{where}: {value!r} is not a text, number, boolean or time")
    found.append(value.isoformat(" ") if isinstance(value, datetime) else str(value).lower() if isinstance(value, bool) else str(value))
    return f"CAST({lookup}[{len(found)}] AS {cast})"


def _copied(column: Column) -> str:
    """A column as COPY's CSV format reads it: a list spelled as a Postgres array literal, its elements quoted."""
    name = f'"{column.name}"'
    if not column.type.endswith("[]"):
        return name
    element = r"""coalesce('"' || replace(replace(x, '\', '\\'), '"', '\"') || '"', 'NULL')"""
    return f"'{{' || array_to_string(list_transform({name}, lambda x: {element}), ',') || '}}'"


def _load(pg: psycopg.Connection, duck: duckdb.DuckDBPyConnection, tables: list[Table], owner: str) -> dict[str, int]:
    """Create the staging schemas, and in them, as the owner, each table: filled, keyed and analyzed. Rows are
    streamed from DuckDB in batches (Arrow, written as CSV for COPY), so memory stays flat whatever the size."""
    for schema in sorted({t.schema for t in tables}):
        pg.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema + STAGING), sql.Identifier(owner)))
    pg.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
    rows, options = {}, arrow_csv.WriteOptions(include_header=False)
    for t in tables:
        target = sql.Identifier(t.schema + STAGING, t.physical_name.split(".")[-1])
        columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in t.columns)
        typed = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(TYPES.get(c.type, c.type))) for c in t.columns)
        pg.execute(sql.SQL("CREATE TABLE {} ({})").format(target, typed))
        reader = duck.sql(f"SELECT {', '.join(_copied(c) for c in t.columns)} FROM {t.physical_name}").to_arrow_reader(BATCH_ROWS)
        rows[t.name] = 0
        # FREEZE: the table is new in this transaction, so its rows can be written frozen (no hint-bit rewrite on first read).
        with pg.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, FREEZE)").format(target, columns)) as copy:
            for batch in reader:
                buffer = io.BytesIO()
                arrow_csv.write_csv(batch, buffer, options)
                copy.write(buffer.getbuffer())
                rows[t.name] += batch.num_rows
        if t.primary_key:
            pg.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(target, sql.SQL(", ").join(map(sql.Identifier, t.primary_key))))
        pg.execute(sql.SQL("ANALYZE {}").format(target))
    pg.execute("RESET ROLE")
    return rows


def _readers(pg: psycopg.Connection, schemas: list[str]) -> list[Reader]:
    found = pg.execute(
        """SELECT DISTINCT a.pid, a.usename, a.application_name, a.state, a.xact_start
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE l.locktype = 'relation' AND l.granted AND a.pid <> pg_backend_pid()
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND n.nspname = ANY(%s)
           ORDER BY a.pid""", [schemas]).fetchall()
    return [Reader(*row) for row in found]


def _swap(pg: psycopg.Connection, schemas: list[str], apply: Callable[[], None], wait: float,
          on_busy: Callable[[list[Reader]], None] | None) -> int:
    """Run `apply` holding every relation of `schemas` exclusively; the number of attempts it took.

    The locks are taken NOWAIT: a reader's open transaction makes the attempt fail at once (and undoes
    it) instead of making the publisher queue, which would make every later reader queue behind it.
    """
    deadline, pause, attempt = time.monotonic() + wait, 0.05, 0
    while True:
        attempt += 1
        try:
            with pg.transaction():  # a savepoint: a refused lock undoes this attempt alone, not the load
                held = pg.execute("""SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
                                     JOIN pg_namespace n ON n.oid = c.relnamespace
                                     WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'v', 'p')""", [schemas]).fetchall()
                if held:
                    pg.execute(f"LOCK TABLE {', '.join(r for (r,) in held)} IN ACCESS EXCLUSIVE MODE NOWAIT")
                apply()
            return attempt
        except psycopg.errors.LockNotAvailable:
            readers = _readers(pg, schemas)
            if time.monotonic() + pause > deadline:
                raise ReadersBusy(
                    f"readers kept the published views in open transactions for more than {wait:g}s: "
                    f"{'; '.join(map(str, readers)) or 'they have just finished'}. Nothing changed; try again, or end them "
                    "(SELECT pg_terminate_backend(pid))") from None
            if on_busy:
                on_busy(readers)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def _sync_roles(pg: psycopg.Connection, roles: Roles, cleared: list[Principal], statement_timeout_ms: int) -> dict[str, list[str]]:
    """Memberships exactly as policies.yaml declares them: each login in its groups and nothing else, nobody else
    in the groups or the owner. Statement logging and the statement timeout on for every login; the database open
    to the groups alone."""
    declared, database = roles.declared(), pg.info.dbname
    desired = {(roles.group(g), roles.principal(who.name)) for who in cleared for g in who.groups}
    current = set(pg.execute(
        """SELECT r.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid
           JOIN pg_roles m ON m.oid = a.member WHERE r.rolname = ANY(%(managed)s) OR m.rolname = ANY(%(managed)s)""",
        {"managed": list(declared)}).fetchall())
    for role, member in sorted(current - desired):
        pg.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(role), sql.Identifier(member)))
    for role, member in sorted(desired - current):
        pg.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member)))
    for role, login in declared.items():
        if login:  # the API's audit log cannot see psql: Postgres logs every statement a principal runs
            pg.execute(sql.SQL("ALTER ROLE {} SET log_statement = 'all'").format(sql.Identifier(role)))
            # A default the login could lift with SET; is_current() refuses reads while it is lifted or raised.
            pg.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(sql.Identifier(role), sql.Literal(statement_timeout_ms)))
    groups = sql.SQL(", ").join(sql.Identifier(roles.group(g)) for g in policies().groups)
    pg.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
    pg.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), groups))
    return {roles.principal(who.name): [roles.group(g) for g in who.groups] for who in cleared}


def _create_database(dsn: str) -> str:
    name = conninfo_to_dict(dsn).get("dbname")
    if not name:
        raise PublishError(f"the DSN {safe_dsn(dsn)!r} names no database")
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, application_name=APPLICATION) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            try:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # created meanwhile by another publisher
    return name


def _private() -> list[str]:
    """The owner-only schema's objects: the hash mask's key, the publication record, the row filters' values, and
    the functions the policies call as the owner (SECURITY DEFINER, a fixed search_path):

    - is_current: every table's policy checks that the reader's snapshot sees this publication (a REPEATABLE READ
      transaction that began before it would otherwise find the new tables empty), and that a login has not
      lifted or raised its statement timeout (a superuser is trusted with its own);
    - row_filter_values: the values of one group's row filter for the login reading, by session_user, which
      neither SET ROLE nor a SECURITY DEFINER function changes; NULL for a login with none."""
    return [
        f"CREATE TABLE {PRIVATE}.masking_key (key text NOT NULL)",
        f"""CREATE TABLE {PRIVATE}.publication (id text NOT NULL, snapshot text NOT NULL, published_at timestamptz NOT NULL,
            statement_timeout_ms integer NOT NULL)""",
        f"""CREATE TABLE {PRIVATE}.row_filter (login name NOT NULL, "group" text NOT NULL, filter integer NOT NULL,
            "values" text[] NOT NULL, PRIMARY KEY (login, "group", filter))""",
        f"""CREATE FUNCTION {PRIVATE}.is_current(publication text) RETURNS boolean
            LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
            DECLARE
              published {PRIVATE}.publication;
              timeout interval := current_setting('statement_timeout')::interval;  -- as SHOW spells it: 0, 1500ms, 1min
            BEGIN
              SELECT * INTO published FROM {PRIVATE}.publication;
              IF publication IS DISTINCT FROM published.id THEN
                RAISE EXCEPTION 'the Product Affinity views were republished after this transaction took its snapshot'
                  USING ERRCODE = 'serialization_failure', HINT = 'Start a new transaction to read them.';
              END IF;
              IF timeout = interval '0' OR timeout > published.statement_timeout_ms * interval '1ms' THEN
                IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
                  RAISE EXCEPTION 'statement_timeout is %: the Product Affinity views are read with at most %',
                    current_setting('statement_timeout'), published.statement_timeout_ms * interval '1ms'
                    USING ERRCODE = 'configuration_limit_exceeded', HINT = 'RESET statement_timeout, or set it lower.';
                END IF;
              END IF;
              RETURN true;
            END $$""",
        f"""CREATE FUNCTION {PRIVATE}.row_filter_values("group" text, filter integer) RETURNS text[]
            LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
              SELECT f."values" FROM {PRIVATE}.row_filter AS f WHERE f.login = session_user AND f."group" = $1 AND f.filter = $2
            $$""",
    ]


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
