"""certseg's test suite, a package: helpers are imported as ``tests.<module>`` (e.g.
``from tests.pipeline_fixtures import ...``), never through sys.path edits.

pytest's default (prepend) import mode puts the repository root on sys.path, since every test
folder has an ``__init__.py``; spawned child processes inherit that sys.path, and the engine
processes get the repository root on PYTHONPATH (tests/engines/engine_procs.py).
"""
