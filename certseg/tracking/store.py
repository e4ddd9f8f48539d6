"""Preparing the MLflow tracking store before a run samples: a missing sqlite database created
whole (never half-made), any store opened once, and `TrackingError` for every failure to track.

A new sqlite database is built under a temporary name and hard-linked into place only when
complete, so a kill -9 or a second process during its creation never leaves a half-made database
behind. With a sqlite URI, artifacts go to an `mlartifacts/` folder beside the database file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


class TrackingError(ValueError):
    """The tracking store could not be used; the message names it and what to do next."""


def _sqlite_path(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :])


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri[len("sqlite:///") :])
    return (database.resolve().parent / "mlartifacts" / experiment).as_uri()


def prepare_tracking_store(tracking_uri: str) -> None:
    """Make sure the tracking store can be used, before a run spends any time sampling.

    A missing sqlite database is created whole: MLflow's tables are made in a temporary file
    beside it, which is then hard-linked to the final name (atomic, and it never replaces an
    existing file), so a killed creator leaves no half-made database and two first users end
    with one. Any store is then opened once. Raises TrackingError naming the URI and the cause.
    """
    path = _sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        _create_sqlite_store(path)
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as error:
        hint = ""
        if path is not None:
            hint = (
                f" If {path} was left half-made by an interrupted run, move it aside (e.g. "
                f"`mv {path} {path}.broken`) and run again: a new database is created whole."
            )
        raise TrackingError(
            f"MLflow tracking store {tracking_uri!r} cannot be used: "
            f"{type(error).__name__}: {_first_line(error)}.{hint} "
            "Or pass another --tracking-uri, or --no-track."
        ) from error


def _create_sqlite_store(path: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    artifact_root = (path.resolve().parent / "mlartifacts").as_uri()
    try:
        store = SqlAlchemyStore(f"sqlite:///{partial}", artifact_root)  # type: ignore[no-untyped-call]
        store.engine.dispose()
        with contextlib.suppress(FileExistsError):  # another creator won: use theirs
            os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
