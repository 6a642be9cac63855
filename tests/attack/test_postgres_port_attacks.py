"""The Postgres port tried as an attacker holding one of its logins would: switch to every role the login can reach
and read again, try to become someone else, plant code that runs with other rights, read the policies' values out
of the catalogue, and keep the server busy. Each attack goes through the real server and the real publication of
the sample. Skipped when no PostgreSQL answers, unless CI is set (then it fails)."""

import secrets
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from product_affinity.delivery import postgres, postgres_load, postgres_roles
from product_affinity.governance.policies import policies
from tests.test_postgres_port import SLICES, server  # noqa: F401 (server: the fixture, skips without PostgreSQL, fails under CI=true)

PREFIX = f"pa_gpg_{secrets.token_hex(3)}_"  # roles are cluster-wide and the server is shared: this session's own
TIMEOUT = 3.0  # seconds: short, so that the attacks on it end soon


@dataclass(frozen=True)
class Port:
    dsn: str

    def login(self, who: str) -> psycopg.Connection:
        return psycopg.connect(make_conninfo(self.dsn, user=f"{PREFIX}{who}"), autocommit=True)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)


@pytest.fixture(scope="module")
def port(published_sample, server) -> Port:  # noqa: F811 (the imported fixture)
    """The sample published into a database of this module's own, with its own roles; both dropped at the end."""
    dsn = make_conninfo(server, dbname=PREFIX.rstrip("_"))
    postgres.publish(published_sample, dsn, PREFIX, statement_timeout=TIMEOUT)
    yield Port(dsn)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(PREFIX.rstrip("_"))))
        for (role,) in admin.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", [PREFIX]).fetchall():
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def reachable(conn: psycopg.Connection) -> list[str]:
    """Every role other than the login that the login may SET ROLE to."""
    return [r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE pg_has_role(session_user, oid, 'MEMBER') "
                                       "AND rolname <> session_user ORDER BY 1")]


def fingerprints(conn: psycopg.Connection) -> dict[str, tuple]:
    """What the current role reads of each view it may read: for the columns it holds a privilege on, the number of
    rows and an order-free digest of them (the same rows give the same digest, masked values included)."""
    found = {}
    views = conn.execute("SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position) FROM information_schema.columns "
                         "WHERE table_schema = 'product_affinity' GROUP BY 1 ORDER BY 1").fetchall()
    for view, columns in views:
        found[view] = (columns, fingerprint(conn, view, columns))
    return found


def fingerprint(conn: psycopg.Connection, view: str, columns: list[str]) -> tuple:
    """One view's digest; of the sales view, a slice of the orders (as tests/test_postgres_port.py compares it), so that
    every role's reads stay well inside the statement timeout."""
    projection = sql.SQL(", ").join(map(sql.Identifier, columns))
    where = sql.SQL("WHERE {} < {}").format(sql.Identifier(SLICES[view][0]), SLICES[view][1]) if view in SLICES else sql.SQL("")
    return conn.execute(sql.SQL("SELECT count(*), sum(hashtextextended(t::text, 0)) FROM (SELECT {} FROM {} {}) AS t").format(
        projection, sql.Identifier("product_affinity", view), where)).fetchone()


def as_login(conn: psycopg.Connection, seen: dict[str, tuple]) -> dict[str, tuple]:
    """What the login itself reads of the same views and columns as `seen` (read under another role)."""
    role = conn.execute("SELECT current_user").fetchone()[0]
    conn.execute("SET ROLE NONE")
    found = {view: (columns, fingerprint(conn, view, columns)) for view, (columns, _) in seen.items()}
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return found


@pytest.mark.parametrize("who", list(policies().principals))
def test_switching_to_any_role_the_login_reaches_reads_exactly_what_the_login_reads(port, who):
    """The critical break: a login in two groups SET ROLE to one group's role and read every country, the other
    group's row filter gone. Whatever role the session runs as, it reads what its login reads (fewer columns at most)."""
    with port.login(who) as conn:
        roles, mine = reachable(conn), fingerprints(conn)
        assert roles == sorted(f"{PREFIX}group_{g}" for g in policies().principals[who].groups)
        for role in roles:
            switches = [sql.SQL("SET ROLE {}").format(sql.Identifier(role)),
                        sql.SQL("SELECT set_config('role', {}, false)").format(sql.Literal(role))]
            for switch in switches:
                conn.execute(switch)
                assert conn.execute("SELECT session_user, current_user").fetchone() == (f"{PREFIX}{who}", role)
                seen = fingerprints(conn)
                assert all(set(columns) <= set(mine[view][0]) for view, (columns, _) in seen.items()), role  # fewer columns only
                assert seen == as_login(conn, seen), f"{who} as {role} reads differently"
                conn.execute("RESET ROLE")
                assert fingerprints(conn) == mine
            with conn.transaction():  # SET LOCAL ROLE inside a transaction, as a connection pooler would
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                seen = fingerprints(conn)
                assert seen == as_login(conn, seen), f"{who} as {role} (SET LOCAL) reads differently"


@pytest.mark.parametrize("who", ["jon", "ana"])
def test_a_default_role_the_login_sets_on_itself_does_not_shed_its_filters(port, who):
    """Any role may ALTER ROLE itself SET a default; a default `role` starts every new session as the group."""
    with port.login(who) as conn:
        group = reachable(conn)[0]
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(group)))
        expected = as_login(conn, fingerprints(conn))
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("ALTER ROLE CURRENT_USER SET role = {}").format(sql.Literal(group)))
    try:
        with port.login(who) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (group,)
            assert fingerprints(conn) == expected
    finally:
        with port.admin() as admin:
            admin.execute(sql.SQL("ALTER ROLE {} RESET role").format(sql.Identifier(f"{PREFIX}{who}")))


@pytest.mark.parametrize("who", list(policies().principals))
def test_a_login_cannot_become_a_role_it_is_not_a_member_of(port, who):
    managed = [*postgres_roles.Roles(PREFIX).declared(), "postgres"]
    with port.login(who) as conn:
        mine = {f"{PREFIX}{who}", *reachable(conn)}
        for role in managed:
            if role not in mine:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            if role != f"{PREFIX}{who}":  # only a login that is a superuser may change who the session is
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(role)))
        assert conn.execute("SELECT session_user, current_user").fetchone() == (f"{PREFIX}{who}",) * 2


PLANTS = [  # objects that would run, or be read, with someone else's rights
    "CREATE FUNCTION public.probe() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'",
    "CREATE FUNCTION product_affinity.probe() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE FUNCTION pg_temp.probe() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE VIEW product_affinity.probe AS SELECT 1 AS x",
    "CREATE VIEW public.probe AS SELECT 1 AS x",
    "CREATE TEMP VIEW probe AS SELECT 1 AS x",
    "CREATE TEMP TABLE probe (x int)",
    "CREATE TABLE public.probe (x int)",
    "CREATE SCHEMA probe",
    "SELECT * FROM product_affinity_private.row_filter",
    "SELECT * FROM product_affinity_private.masking_key",
    "SELECT product_affinity_private.row_filter_values('regional_analyst', 1)",
    "SELECT product_affinity_private.is_current('x')",
    *(f"SELECT count(*) FROM {t.physical_name}" for t in postgres_load.published_tables()),
]


@pytest.mark.parametrize("who", list(policies().principals))
def test_no_role_a_login_reaches_can_plant_code_or_read_around_the_views(port, who):
    with port.login(who) as conn:
        for role in [None, *reachable(conn)]:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)) if role else sql.SQL("RESET ROLE"))
            for statement in PLANTS:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)


def test_every_function_that_runs_with_the_owners_rights_is_out_of_the_logins_reach(port):
    with port.admin() as admin:
        definers = admin.execute(
            """SELECT p.oid::regprocedure::text, r.rolname, n.nspname, coalesce(p.proconfig, '{}') FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles r ON r.oid = p.proowner
               WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')""").fetchall()
        assert definers, "the policies call SECURITY DEFINER functions: none found"
        for function, owner, schema, config in definers:
            assert owner == f"{PREFIX}owner" and schema == "product_affinity_private", function
            assert "search_path=pg_catalog, pg_temp" in config, f"{function} resolves names through the caller's search_path"
            for who in policies().principals:
                login = f"{PREFIX}{who}"
                assert admin.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", [login, schema]).fetchone() == (False,)


def attribute_values() -> set[str]:
    return {str(v) for p in policies().principals.values() for value in p.attributes.values()
            for v in (value if isinstance(value, list) else [value])}


def test_the_catalogue_and_plans_show_no_principals_attribute_values(port):
    """pg_policies is readable by every login, and EXPLAIN shows the policies' conditions. (The views' definitions may
    name countries: the model's own dimensions do, e.g. region; the attribute values are never in them.)"""
    secrets_ = attribute_values()
    logins = {f"{PREFIX}{p}" for p in policies().principals}
    assert secrets_, "the policies declare no attribute: nothing to look for"
    with port.login("storefront") as conn:
        texts = [q for (q,) in conn.execute("SELECT coalesce(qual, '') FROM pg_policies WHERE schemaname IN ('source_aligned', 'consumer_aligned')")]
        assert len(texts) > len(postgres_load.published_tables())
    with port.login("ana") as ana:
        for view in ("sales", "customer_360", "cross_sell"):
            texts += [line for (line,) in ana.execute(f"EXPLAIN (VERBOSE) SELECT count(*) FROM product_affinity.{view}")]
    leaked = {s for s in secrets_ | logins for text in texts if s in text}
    assert not leaked, f"readable by every login: {sorted(leaked)}"


@pytest.mark.slow
def test_a_logins_statement_is_cancelled_at_the_timeout_and_cannot_lift_it(port):
    with port.login("steward") as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == (f"{TIMEOUT:g}s",)
        for expensive in ("SELECT pg_sleep(600)",
                          "SELECT count(*) FROM product_affinity.sales a, product_affinity.sales b WHERE a.quantity + b.quantity < 0"):
            with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
                conn.execute(expensive)
        for lifted in ("0", "1h", f"{TIMEOUT + 1:g}s"):
            conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(lifted)))
            with pytest.raises(psycopg.errors.ConfigurationLimitExceeded, match="statement_timeout"):
                conn.execute("SELECT count(*) FROM product_affinity.sales a, product_affinity.sales b WHERE a.quantity + b.quantity < 0")
            conn.execute("RESET statement_timeout")
            conn.execute("SELECT set_config('statement_timeout', %s, false)", [lifted])
            with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
                conn.execute("SELECT count(*) FROM product_affinity.customer_360")
        conn.execute("SET statement_timeout = '1s'")  # lower is allowed
        assert conn.execute("SELECT count(*) FROM product_affinity.customer_360").fetchone()[0] > 0
        conn.execute("ALTER ROLE CURRENT_USER SET statement_timeout = 0")  # open to any role on itself
    with port.login("steward") as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            conn.execute("SELECT count(*) FROM product_affinity.customer_360")
    with port.admin() as admin:
        admin.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(sql.Identifier(f"{PREFIX}steward"), sql.Literal(int(TIMEOUT * 1000))))


def test_turning_row_security_off_refuses_the_read_instead_of_skipping_the_filter(port):
    with port.login("jon") as conn:
        conn.execute("SET row_security = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("SELECT count(*) FROM product_affinity.sales")
