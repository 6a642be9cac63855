"""Great Expectations is imported with pyspark out of its sight (quality/gx_import.py), and pyspark survives it."""

import importlib.util
import subprocess
import sys

import pytest

SPARK = importlib.util.find_spec("pyspark") is not None
# `python -c`: the main module has no file, as under pytest-xdist's workers; pyspark's Spark Connect module then calls
# sys.exit(0) when GE imports it, and the process ends silently, exit code 0, before the next line. pyspark is loaded
# first, as the spark engine would have, so its modules are hidden from GE and must be put back as they were.
SCRIPT = f"""
import sys
{"from pyspark.sql import SparkSession" if SPARK else ""}
from product_affinity.quality.gx_import import great_expectations
gx = great_expectations()
assert gx.ExpectationSuite is not None
{"from pyspark.sql import SparkSession as again; assert again is SparkSession" if SPARK else ""}
print("imported", gx.__version__)
"""


@pytest.mark.slow  # a process that imports GE: about five seconds
def test_ge_imports_where_the_main_module_has_no_file_and_pyspark_is_left_as_it_was():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("imported "), f"the process ended before GE was imported: {done.stderr[-2000:]}"
