"""Prefect tasks: thin wrappers around certseg (retries are declared here; no formulas)."""
