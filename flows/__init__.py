"""Prefect flows, installed as certseg.flows: they only sequence tasks (certseg.tasks).

The folder is the repository's top-level flows/, so Prefect deploys them by path
(flows/certify_dataset.py:certify_dataset); setuptools maps it to certseg.flows (pyproject.toml).
"""
