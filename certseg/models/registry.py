"""Segmenter adapters chosen by family name from a registry (never eval).

A `SegmenterSpec` (certseg.models.spec) names a family, a local path and the normalization;
`build_segmenter(spec)` looks the family up in `SEGMENTER_FAMILIES` and returns a
`certseg.models.segmenter.Segmenter` (eval mode, [0, 1] input, (B, C, H, W) logits at the input
size). torch, transformers and the
network code are imported only when a segmenter is built.

Trust: a model file is data. Weights load via safetensors or torch.load(weights_only=True);
TorchScript archives through torch.jit.load (TorchScript code and its restricted unpickler, no
Python); `.pt2` programs through certseg.models.exported (checked, never torch.export.load);
SegFormer folders with local files only, weights_only, no remote code. Two families run Python
code: "module" (an nn.Module given from Python, options["module"]) and "python" (a config's
options.factory, "package.module:function", imported and called: the only place a config runs
code, which `certseg check` prints as "runs code: ..."). A file that fails to load
raises ModelFileError (a ValueError: never retried) naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from certseg.errors import ModelFileError, loader_reason
from certseg.models.spec import SegmenterSpec

__all__ = [
    "SEGMENTER_FAMILIES",
    "SegmenterSpec",
    "build_segmenter",
    "load_state_dict_file",
    "read_tensor_file",
]

if TYPE_CHECKING:
    from torch import Tensor, nn

    from certseg.models.segmenter import Segmenter


def _normalization(
    spec: SegmenterSpec, default: tuple[Any, Any] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if spec.mean is not None and spec.std is not None:
        return spec.mean, spec.std
    if default is None:
        raise ValueError(
            f"SegmenterSpec.mean/std are required for family {spec.family!r} (the normalization "
            "the network was trained with, in [0, 1] units)"
        )
    return tuple(float(v) for v in default[0]), tuple(float(v) for v in default[1])


def _num_classes(spec: SegmenterSpec, found: int | None) -> int:
    if found is None:
        if spec.num_classes is None:
            raise ValueError(f"SegmenterSpec.num_classes is required for family {spec.family!r}")
        return spec.num_classes
    if spec.num_classes is not None and spec.num_classes != found:
        raise ValueError(
            f"SegmenterSpec.num_classes={spec.num_classes} but {spec.path} has {found} classes"
        )
    return found


def _wrap(
    spec: SegmenterSpec,
    model: nn.Module,
    *,
    found_classes: int | None,
    default_normalization: tuple[Any, Any] | None,
    output_key: str = "out",
) -> Segmenter:
    """Wrap a loaded network: normalization and class count from the spec, defaulted to (or
    checked against) what the family found in its files."""
    from certseg.models.segmenter import Segmenter

    mean, std = _normalization(spec, default_normalization)
    return Segmenter(
        model,
        num_classes=_num_classes(spec, found_classes),
        mean=mean,
        std=std,
        name=spec.label,
        output_key=output_key,
    )


def read_tensor_file(path: str | Path, what: str) -> Any:
    """The content of a `.safetensors` file, or of a torch file read with weights_only=True
    (tensors and plain containers only: no pickled object is ever built).

    what: the kind of file, for the messages ("weights file", "ADM checkpoint"). ModelFileError
    naming the file when it is missing or is not such a file.
    """
    import torch

    source = Path(path)
    if not source.is_file():
        raise ModelFileError(f"{what} {source} does not exist")
    try:
        if source.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(source))
        return torch.load(str(source), map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused, not a torch/safetensors file, truncated...
        raise ModelFileError(
            f"{what} {source} is not a safetensors file or a tensor-only torch file that "
            f"torch.load(weights_only=True) accepts ({loader_reason(error)}); certseg never "
            "unpickles other objects"
        ) from error


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from `.safetensors` or a torch file read with weights_only=True."""
    import torch

    state = read_tensor_file(path, "weights file")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path} does not hold a state dict of tensors")
    return state


class CompactFamily:
    """The shipped compact segmenter: a folder with config.json + model.safetensors."""

    name: ClassVar[str] = "compact"

    @staticmethod
    def build(spec: SegmenterSpec) -> Segmenter:
        from certseg.models.compact import load_compact_segmenter, read_compact_config

        folder = spec.require_path()
        config = read_compact_config(folder)
        return _wrap(
            spec,
            load_compact_segmenter(folder),
            found_classes=config.num_classes,
            default_normalization=(config.mean, config.std),
        )


class ModuleFamily:
    """Any torch nn.Module given in Python (options["module"]), returning (B, C, h, w) logits or
    a mapping / `.logits` object; optional state dict at `path`."""

    name: ClassVar[str] = "module"

    @staticmethod
    def build(spec: SegmenterSpec) -> Segmenter:
        from torch import nn

        module = spec.options.get("module")
        if not isinstance(module, nn.Module):
            raise ValueError(
                'SegmenterSpec.options["module"] must be a torch nn.Module (given from Python); '
                'a YAML config uses family "python" with options.factory instead'
            )
        return _python_module(spec, module)


def _python_module(spec: SegmenterSpec, module: Any) -> Segmenter:
    """An nn.Module built in Python (the module and python families): spec.path's state dict
    loaded strictly when given (a safetensors or plain tensor file, never code), then wrapped."""
    if spec.path is not None:
        module.load_state_dict(load_state_dict_file(spec.require_path()), strict=True)
    return _wrap(
        spec,
        module,
        found_classes=None,
        default_normalization=None,
        output_key=str(spec.options.get("output_key", "out")),
    )


def import_factory(factory: str) -> Any:
    """The object "package.module:attr.attr" names, imported. ValueError naming the factory when
    the module does not import or has no such attribute."""
    import importlib

    module_name, _, attributes = factory.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:
        raise ValueError(
            f"options.factory {factory!r}: module {module_name!r} does not import "
            f"({type(error).__name__}: {error}); expected an importable module (installed, or "
            "on PYTHONPATH)"
        ) from error
    for attribute in attributes.split("."):
        if not hasattr(target, attribute):
            raise ValueError(f"options.factory {factory!r}: {module_name!r} has no {attributes!r}")
        target = getattr(target, attribute)
    if not callable(target):
        raise ValueError(f"options.factory {factory!r} is not callable")
    return target


class PythonFamily:
    """A network built by a Python function a config names: options.factory
    "package.module:function" is imported and called with options.kwargs, and must return an
    nn.Module ((B, C, h, w) logits, a mapping with output_key, or a `.logits` object); optional
    state dict at `path`. The one place a config runs code."""

    name: ClassVar[str] = "python"

    @staticmethod
    def build(spec: SegmenterSpec) -> Segmenter:
        from torch import nn

        factory = str(spec.options["factory"])
        kwargs = dict(spec.options.get("kwargs", {}))
        try:
            module = import_factory(factory)(**kwargs)
        except ValueError:
            raise
        except Exception as error:
            raise ValueError(
                f"options.factory {factory!r} failed when called with {kwargs}: "
                f"{type(error).__name__}: {error}"
            ) from error
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"options.factory {factory!r} returned a {type(module).__name__}; expected a "
                "torch nn.Module"
            )
        return _python_module(spec, module)


class TorchScriptFamily:
    """A TorchScript file (torch.jit.save) or a torch.export program (`.pt2`), returning a
    tensor or a mapping with options["output_key"] (default "out", as torchvision's models).

    `.pt2` files are read by certseg.models.exported (never torch.export.load, which unpickles
    and evaluates parts of the file); TorchScript files by torch.jit.load, whose code is
    TorchScript and whose pickles are read by TorchScript's own restricted unpickler."""

    name: ClassVar[str] = "torchscript"

    @staticmethod
    def build(spec: SegmenterSpec) -> Segmenter:
        import torch

        from certseg.models.exported import load_exported_module
        from certseg.models.segmenter import ExportedModule

        path = spec.require_path()
        model: nn.Module
        if path.suffix == ".pt2":
            model = ExportedModule(load_exported_module(path))
        else:
            try:
                model = torch.jit.load(  # type: ignore[no-untyped-call]
                    str(path), map_location="cpu"
                )
            except Exception as error:
                raise ModelFileError(
                    f"{path} is not a TorchScript archive that torch.jit.load accepts "
                    f"({loader_reason(error)}); expected a torch.jit.save file (or a .pt2 "
                    "torch.export program)"
                ) from error
        return _wrap(
            spec,
            model,
            found_classes=None,
            default_normalization=None,
            output_key=str(spec.options.get("output_key", "out")),
        )


class SegformerFamily:
    """HuggingFace SegformerForSemanticSegmentation from a local folder (save_pretrained layout);
    logits at H/4 are upsampled to the input size. Normalization defaults to the folder's
    preprocessor_config.json (image_mean / image_std). Needs the optional `hf` extra."""

    name: ClassVar[str] = "segformer"

    @staticmethod
    def build(spec: SegmenterSpec) -> Segmenter:
        try:
            from transformers import SegformerForSemanticSegmentation
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ValueError(
                "family 'segformer' needs transformers (pip install 'certseg[hf]')"
            ) from error

        folder = spec.require_path()
        try:
            model = SegformerForSemanticSegmentation.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False, weights_only=True
            )
        except Exception as error:
            raise ModelFileError(
                f"SegFormer folder {folder} does not load ({loader_reason(error)}); expected a "
                "save_pretrained folder: config.json and model.safetensors (or a "
                "pytorch_model.bin of tensors only, read with weights_only=True)"
            ) from error
        default: tuple[Any, Any] | None = None
        preprocessor = folder / "preprocessor_config.json"
        if preprocessor.is_file():
            payload = json.loads(preprocessor.read_text())
            if "image_mean" in payload and "image_std" in payload:
                default = (payload["image_mean"], payload["image_std"])
        num_labels = model.config.num_labels
        if not isinstance(num_labels, int):
            raise ValueError(f"{folder}/config.json has no integer num_labels")
        return _wrap(spec, model, found_classes=num_labels, default_normalization=default)


SEGMENTER_FAMILIES: dict[str, Any] = {
    family.name: family
    for family in (CompactFamily, ModuleFamily, PythonFamily, TorchScriptFamily, SegformerFamily)
}
"""Family name → adapter class with a static `build(spec) -> Segmenter`."""


def build_segmenter(spec: SegmenterSpec) -> Segmenter:
    """Build the segmenter `spec` describes (eval mode, normalization inside)."""
    family = SEGMENTER_FAMILIES.get(spec.family)
    if family is None:
        raise ValueError(
            f"unknown segmenter family {spec.family!r}; known: {sorted(SEGMENTER_FAMILIES)}"
        )
    segmenter: Segmenter = family.build(spec)
    return segmenter
