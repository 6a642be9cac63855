"""The README shows the metric definitions, the semantic model's views and the access groups exactly as the code declares them."""

import re
from pathlib import Path

import pytest

from product_affinity import governance, semantic
from product_affinity.consumer_aligned import metrics

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("marker, module", [("metrics", metrics), ("views", semantic), ("groups", governance)])
def test_readme_tables_are_generated_from_their_source(marker, module):
    shown = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", README.read_text(), re.S).group(1)
    assert shown == module.markdown_table(), f"regenerate with: python -c 'from {module.__name__} import markdown_table; print(markdown_table())'"


def test_every_metric_states_grain_window_and_formula():
    for row in metrics.definitions():
        assert all(row[part] for part in ("grain", "window", "formula")), row["metric"]
