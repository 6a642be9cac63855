"""Nothing a policy masks or hides leaves by the side doors: /meta, the descriptor (/product) and error messages,
on REST and GraphQL, for every principal. (/slo is tested with the quality checks.)

- /meta lists, for a principal, exactly what they may ask for: no member whose columns they may not see (worked out
  by tests.attack.oracle, independently of the engine), and no personal data or hidden value in its text.
- The descriptor carries no value from the data.
- Asking for a member one may not see is refused (403, FORBIDDEN) before anything about it is checked: the error
  neither echoes the value asked for nor names any other member the principal may not see, and is the same whether
  the member is asked for as a measure, a dimension or a filter.
"""

import json

import pytest

from product_affinity.governance.policies import policies, readable_views
from product_affinity.semantic.loader import model
from tests.attack.oracle import column_visibility, expectation
from tests.attack.service import api, sql  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
PROBE = "probe-7c1f-4e0b"  # a value nobody stores: if an error carries it, errors carry what the filter holds
PRINCIPALS = list(policies().principals)


def refused(who) -> set[str]:
    """view.member for every member of every view the principal may not get (refused by the oracle, or not granted)."""
    principal = policies().principals[who]
    readable, visibility = readable_views(principal), column_visibility(principal)
    out = set()
    for view in model().views.values():
        for name in [*view.members, *view.metrics]:
            granted = readable.get(view.name)
            if granted is None or name not in granted.members or expectation(view, name, visibility) == "refused":
                out.add(f"{view.name}.{name}")
    return out


def stored_personal_values(sql) -> set[str]:  # noqa: F811
    """Every personal-data value the sample stores (text of five characters or more), and every income."""
    rows = sql("SELECT first_name, last_name, email, phone, CAST(income AS VARCHAR) FROM source_aligned.customer")
    return {v for row in rows for v in row if isinstance(v, str) and len(v) >= 5}


def meta(api, who: str) -> tuple[dict, dict]:  # noqa: F811
    rest = api.client.get("/meta", headers=api.headers(who))
    graphql = api.graphql_document(who, "{ meta }")
    assert rest.status_code == 200 and "errors" not in graphql.json(), graphql.text
    return rest.json(), graphql.json()["data"]["meta"]


@pytest.mark.parametrize("who", PRINCIPALS)
def test_meta_lists_nothing_the_principal_may_not_see(api, sql, who):  # noqa: F811
    hidden, personal = refused(who), stored_personal_values(sql)
    for answer in meta(api, who):
        listed = {m["name"] for view in answer["views"] for m in view["members"]}
        assert not listed & hidden, f"{who}'s /meta lists members they may not read: {sorted(listed & hidden)}"
        text = json.dumps(answer)
        assert not [name for name in hidden if f'"{name}"' in text], f"{who}'s /meta names members they may not read"
        assert not [v for v in personal if v in text], f"{who}'s /meta carries stored personal data"


def test_the_descriptor_carries_no_data(api, sql):  # noqa: F811
    personal = stored_personal_values(sql)
    for who in PRINCIPALS:
        rest = api.client.get("/product", headers=api.headers(who))
        graphql = api.graphql_document(who, "{ product }")
        assert rest.status_code == 200
        assert rest.json() == graphql.json()["data"]["product"]
        text = json.dumps(rest.json())
        assert not [v for v in personal if v in text], f"the descriptor carries stored personal data ({who})"


@pytest.mark.parametrize("who", [who for who in PRINCIPALS if refused(who)])
def test_an_error_on_a_hidden_member_says_nothing_about_it(api, who):  # noqa: F811
    hidden = refused(who)
    for member in sorted(hidden):
        view, _, name = member.partition(".")
        is_measure = name in model().views[view].metrics or model().views[view].members[name].is_measure
        asked = {"measures" if is_measure else "dimensions": [member]}
        probes = [asked, {**asked, "filters": [{"member": member, "operator": "equals", "values": [PROBE]}]},
                  {**asked, "filters": [{"member": member, "operator": "gt", "values": [PROBE]}]}]
        for query in probes:
            rest = api.rest(who, query)
            errors = api.graphql(who, query).json().get("errors") or []
            assert rest.status_code == 403, f"{who} asking for {member}: {rest.status_code} {rest.text}"
            assert errors and errors[0]["extensions"]["code"] == "FORBIDDEN", f"{who} asking for {member}: {errors}"
            for message in (rest.json()["error"], errors[0]["message"]):
                assert PROBE not in message, f"the error echoes the value filtered on: {message}"
                others = [m for m in hidden if m != member and m in message.replace("'", "").split()]
                assert not others, f"the error names members {who} may not read: {message}"
