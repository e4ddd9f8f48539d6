"""SegmenterSpec validation and the registry; importing certseg.models does not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from certseg.models import FAMILY_NAMES, SEGMENTER_FAMILIES, SegmenterSpec, build_segmenter


def test_registry_covers_every_family() -> None:
    assert (
        set(SEGMENTER_FAMILIES)
        == set(FAMILY_NAMES)
        == {
            "compact",
            "module",
            "torchscript",
            "segformer",
        }
    )
    for name, family in SEGMENTER_FAMILIES.items():
        assert family.name == name and callable(family.build)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"family": "torchvision"}, "family"),
        ({"family": "module", "num_classes": 1}, "num_classes"),
        ({"family": "module", "mean": (0.5, 0.5)}, "mean"),
        ({"family": "module", "mean": (0.5,) * 3, "std": (0.0, 1.0, 1.0)}, "std"),
        ({"family": "module", "mean": (0.5,) * 3}, "together"),
    ],
)
def test_spec_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SegmenterSpec(**kwargs)  # type: ignore[arg-type]


def test_torchscript_needs_existing_path() -> None:
    with pytest.raises(ValueError, match="path"):
        build_segmenter(SegmenterSpec(family="torchscript", num_classes=3))


def test_importing_models_does_not_import_torch() -> None:
    code = "import sys, certseg.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
