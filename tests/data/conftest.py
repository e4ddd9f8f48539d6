"""Fixtures that write tiny datasets in each exact on-disk layout (see layouts.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.layouts import write_cityscapes, write_folder, write_pascal_context


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    """A 4-image Cityscapes val split (8×16) in the official layout."""
    return write_cityscapes(tmp_path / "cityscapes")


@pytest.fixture
def pascal_root(tmp_path: Path) -> Path:
    """A 4-image Pascal-Context val split (10×14) in mmsegmentation's converted layout."""
    return write_pascal_context(tmp_path / "pascal")


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """A 3-image generic folder (9×11) with a 3-class classes.txt."""
    return write_folder(tmp_path / "folder")
