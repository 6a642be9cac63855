"""policies.yaml is checked against the model when it loads: a column a group hides or unmasks must be one the model reads."""

import pytest

from product_affinity.governance.policies import PolicyError, policies
from product_affinity.semantic.loader import model


@pytest.mark.parametrize("declared", ["hide: [customers.salary]", "hide: [nobody.income]", "unmask: [customers.wage]"])
def test_a_column_the_model_does_not_read_is_refused(tmp_path, declared):
    path = tmp_path / "policies.yaml"
    path.write_text(f"groups:\n  analysts:\n    views: {{sales: '*'}}\n    {declared}\n")
    with pytest.raises(PolicyError, match="is not a cube.column the semantic model reads"):
        policies(path)


def test_a_hidden_column_takes_every_member_reading_it_away(tmp_path):
    path = tmp_path / "policies.yaml"
    path.write_text("groups:\n  analysts:\n    views: {sales: '*'}\n    hide: [customers.birth_year, purchases.unit_price]\n")
    group = policies(path).groups["analysts"]
    sales = model().views["sales"]
    refused = {name for name in sales.members if not group.may_read(sales, name)}
    assert refused == {"age_group", "total_spend", "unit_price", "average_spend_per_purchase"}
