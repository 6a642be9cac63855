"""Governance: policies (the one policy engine, declared in policies.yaml), credentials (API keys) and the audit log."""
