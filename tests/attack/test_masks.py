"""Masks that mask: an attacker who reads masked personal data at customer grain must not recover it.

For every principal and every personal-data member the policy engine masks for them, the test reads every
customer's masked value through REST and GraphQL and runs three attacks against the values in clear (the
published snapshot, ground truth):
- the masked part: a value showing some of itself (***3177) is matched against the values people have; if only
  one fits, it is that one (every sample phone is +1-555-NNNN, so the last four digits are the number);
- known pairs: the attacker knows the real value of one customer in ten (their own record, a colleague's) and
  reads every other customer with the same masked value as having it (a stable hash of a first name);
- counting: masked values and real values ranked by how often they occur, matched rank for rank.
None may guess more customers right than guessing everyone has the most common value, plus two points.
"""

from collections import Counter

import pytest

from product_affinity.governance.policies import access, policies
from product_affinity.semantic.model import Dimension
from tests.attack.service import api, sql  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
VIEW, KEY = "customer_360", "customer_id"
MARGIN = 0.02


def masked_members() -> list[tuple[str, str]]:
    """(principal, member) for every personal-data member of the view the engine masks for a principal."""
    found = []
    for who in policies().principals.values():
        if not any(g.grant(VIEW) for g in policies().groups.values() if g.name in who.groups):
            continue
        granted = access(who, VIEW)
        for name in sorted(granted.members & granted.view.members.keys()):
            vm = granted.view.members[name]
            if isinstance(vm.member, Dimension) and f"{vm.cube}.{name}" in granted.masks:
                found.append((who.name, name))
    return found


def by_masked_part(masked: dict, population: Counter) -> dict:
    """Guess each value from what the mask leaves visible: the most common real value that starts and ends alike."""
    guesses = {}
    for key, value in masked.items():
        if not isinstance(value, str) or "***" not in value:
            continue
        start, _, end = value.partition("***")
        fits = [(n, v) for v, n in population.items() if str(v).startswith(start) and str(v).endswith(end)]
        if fits:
            guesses[key] = max(fits)[1]
    return guesses


def by_known_pairs(masked: dict, clear: dict, known: set) -> dict:
    """Guess every customer sharing a masked value with a customer whose real value is known."""
    learned: dict = {}
    for key in known:
        learned.setdefault(masked[key], Counter())[clear[key]] += 1
    return {key: learned[value].most_common(1)[0][0] for key, value in masked.items() if value in learned}


def by_counting(masked: dict, population: Counter) -> dict:
    """Match the masked values to the real ones by how often each occurs (equally common ones in their own sort
    order on each side: the attacker cannot tell them apart)."""
    ranked = [v for v, _ in sorted(population.items(), key=lambda item: (-item[1], str(item[0])))]
    masked_ranked = sorted(Counter(masked.values()).items(), key=lambda item: (-item[1], str(item[0])))
    order = {value: ranked[i] for i, (value, _) in enumerate(masked_ranked) if i < len(ranked)}
    return {key: order[value] for key, value in masked.items() if value in order}


@pytest.mark.parametrize("who, member", masked_members())
def test_a_masked_value_cannot_be_recovered(api, sql, who, member):  # noqa: F811
    query = {"dimensions": [f"{VIEW}.{KEY}", f"{VIEW}.{member}"], "limit": 50_000}
    rest = api.rest(who, query)
    graphql = api.graphql(who, query)
    assert rest.status_code == 200, rest.text
    rows = rest.json()["data"]
    assert rows == graphql.json()["data"]["load"]["rows"]
    masked = {row[f"{VIEW}.{KEY}"]: row[f"{VIEW}.{member}"] for row in rows}
    clear = {k: v for k, v in sql(f"SELECT customer_id, {member} FROM source_aligned.customer") if v is not None and k in masked}
    masked = {k: v for k, v in masked.items() if k in clear}
    assert len(masked) > 100, "too few customers to attack"
    population = Counter(clear.values())
    baseline = population.most_common(1)[0][1] / len(clear)
    known = {k for i, k in enumerate(sorted(clear)) if i % 10 == 0}
    attacks = {"masked part": by_masked_part(masked, population), "known pairs": by_known_pairs(masked, clear, known),
               "counting": by_counting(masked, population)}
    for attack, guesses in attacks.items():
        targets = [k for k in clear if k not in known]
        recovered = sum(guesses.get(k) == clear[k] for k in targets) / len(targets)
        assert recovered <= baseline + MARGIN, (
            f"{who} recovers {recovered:.0%} of {member} by {attack} (guessing the commonest value: {baseline:.0%})")
