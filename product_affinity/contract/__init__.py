"""The data contract (ODCS v3, product_affinity.odcs.yaml): every table's columns, types, quality rules and SLOs, declared once and loaded by odcs.py."""
