"""The README shows the metric definitions exactly as the docstrings state them."""

import re
from pathlib import Path

from product_affinity.consumer_aligned.metrics import definitions, markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_metric_table_is_generated_from_the_docstrings():
    shown = re.search(r"<!-- metrics:start -->\n(.*?)\n<!-- metrics:end -->", README.read_text(), re.S).group(1)
    assert shown == markdown_table(), "regenerate with: python -c 'from product_affinity.consumer_aligned.metrics import markdown_table; print(markdown_table())'"


def test_every_metric_states_grain_window_and_formula():
    for row in definitions():
        assert all(row[part] for part in ("grain", "window", "formula")), row["metric"]
