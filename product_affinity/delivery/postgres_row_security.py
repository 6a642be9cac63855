"""The Postgres port: Views, masks, row-level security and grants compiled from the model and policies.yaml; the owner-only private schema."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

import psycopg
from psycopg import sql

from product_affinity.semantic.access import Principal, RowFilter
from product_affinity.sql import load as load_sql
from product_affinity.governance.policies import Group, policies
from product_affinity.semantic.model import Join, View
from product_affinity.semantic.loader import model
from product_affinity.semantic.compiler import condition, mask_sql, view_rows
from product_affinity.delivery.postgres_common import PRIVATE, PUBLICATION_VIEW, PublishError, STAGING, VIEWS
from product_affinity.delivery.postgres_roles import Roles, _sync_roles


# A row filter's value, kept as text in the owner-only table: the Postgres type it is cast back to, by the Python
# type the compiler gives it (semantic.compiler._typed: a number is a float).
FILTER_VALUE_TYPES = [(bool, "boolean"), (float, "double precision"), (datetime, "timestamp"), (str, "text")]


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


def _private() -> list[str]:
    """The owner-only schema's objects: the hash mask's key, the publication record, the row filters' values, and
    the functions the policies call as the owner (SECURITY DEFINER, a fixed search_path), each in a .sql file that
    says what it checks: is_current (this publication, the statement timeout) and row_filter_values (by session_user)."""
    return [
        f"CREATE TABLE {PRIVATE}.masking_key (key text NOT NULL)",
        f"""CREATE TABLE {PRIVATE}.publication (id text NOT NULL, snapshot text NOT NULL, published_at timestamptz NOT NULL,
            statement_timeout_ms integer NOT NULL)""",
        f"""CREATE TABLE {PRIVATE}.row_filter (login name NOT NULL, "group" text NOT NULL, filter integer NOT NULL,
            "values" text[] NOT NULL, PRIMARY KEY (login, "group", filter))""",
        *(load_sql(__file__, name).format(private=PRIVATE) for name in ("postgres_is_current.sql", "postgres_row_filter_values.sql")),
    ]

