"""The Postgres port: Login, group and owner roles: their names, who is cleared for which, and keeping them in step with policies.yaml."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from product_affinity.semantic.access import AccessDenied, Principal
from product_affinity.governance.policies import policies
from product_affinity.delivery.postgres_common import PublishError


ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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

