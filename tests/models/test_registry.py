"""SegmenterSpec validation and the registry; importing certseg.models does not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import TypeAdapter, ValidationError

from certseg.models import FAMILY_NAMES, SEGMENTER_FAMILIES, SegmenterSpec, build_segmenter


def test_registry_covers_every_family() -> None:
    assert (
        set(SEGMENTER_FAMILIES)
        == set(FAMILY_NAMES)
        == {
            "compact",
            "module",
            "python",
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
        ({"family": "module", "num_classes": True}, "num_classes"),
        ({"family": "module", "mean": (0.5, 0.5)}, "mean"),
        ({"family": "module", "mean": (0.5,) * 3, "std": (0.0, 1.0, 1.0)}, "std"),
        ({"family": "module", "mean": (0.5,) * 3}, "mean"),
        ({"family": "module", "weights": "w.pt"}, "weights"),
    ],
)
def test_spec_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match="SegmenterSpec") as info:
        SegmenterSpec(**kwargs)  # type: ignore[arg-type]
    assert any(
        item["loc"][:1] == (field,)
        or item["msg"].removeprefix("Value error, ").startswith(f"{field}: ")
        for item in info.value.errors()
    ), info.value


def test_spec_is_positional_frozen_and_keeps_options_by_reference() -> None:
    """The README's spelling works; options (e.g. an nn.Module) are not copied; `name` labels
    the segmenter but is not part of the spec's serialized form (so never of a config_id)."""
    spec = SegmenterSpec("compact", "weights/segmenter-clean")
    assert spec == SegmenterSpec(family="compact", path="weights/segmenter-clean")
    assert spec.label == "compact" and SegmenterSpec("compact", name="clean").label == "clean"
    with pytest.raises(AttributeError):
        spec.path = "elsewhere"  # type: ignore[misc]
    marker = object()
    assert SegmenterSpec("module", options={"module": marker}).options["module"] is marker
    named = SegmenterSpec("compact", "w", mean=(0, 0, 0), std=(1, 1, 1), name="clean")
    assert named.mean == (0.0, 0.0, 0.0)
    assert TypeAdapter(SegmenterSpec).dump_python(named, mode="json") == {
        "family": "compact",
        "path": "w",
        "num_classes": None,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "options": {},
    }


def test_torchscript_needs_existing_path() -> None:
    with pytest.raises(ValueError, match="path"):
        build_segmenter(SegmenterSpec(family="torchscript", num_classes=3))


def test_importing_models_does_not_import_torch() -> None:
    code = "import sys, certseg.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
