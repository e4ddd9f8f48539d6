"""Prefect flows: they only sequence tasks (see tasks/)."""
