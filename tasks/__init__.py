"""Prefect tasks, installed as certseg.tasks: thin wrappers around certseg.run (retries are
declared here; no formulas). The folder is the repository's top-level tasks/ (pyproject.toml maps
it to certseg.tasks)."""
