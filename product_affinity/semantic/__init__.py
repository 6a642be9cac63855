"""The semantic model: model (its parts), loader (from cubes/ and views/), access (what a principal may read),
query (what a consumer asks), compiler (the SQL that answers it)."""
