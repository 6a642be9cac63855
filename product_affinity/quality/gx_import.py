"""Great Expectations, imported without pyspark.

GE imports pyspark whenever it is installed (the spark extra installs it) to offer Spark dataframes. This product
never gives GE a dataframe: DuckDB measures every rule and GE only draws the Data Docs (data_docs.py) and checks
the suites' arguments (suites.py). Letting GE import pyspark costs time, and worse, pyspark's Spark Connect
module calls `sys.exit(0)` when the main module has no file (it takes that for a doctest run): under pytest-xdist's
workers, or any runner whose `__main__` is not a file, importing GE ended the process in the middle of a check.
So GE is imported with every pyspark module hidden, and they are put back afterwards: the spark engine, in the
same process before or after, finds pyspark as it left it.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def great_expectations() -> ModuleType:
    """The `great_expectations` module, imported once per process with pyspark out of its sight."""
    if (loaded := sys.modules.get("great_expectations")) is not None:
        return loaded
    hidden = {name: module for name, module in sys.modules.items() if name == "pyspark" or name.startswith("pyspark.")}
    for name in hidden:
        del sys.modules[name]
    sys.modules["pyspark"] = None  # `import pyspark` raises ImportError, which GE takes for "not installed"
    try:
        return importlib.import_module("great_expectations")
    finally:
        del sys.modules["pyspark"]
        sys.modules.update(hidden)
