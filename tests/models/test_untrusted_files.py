"""A model file is data: no loading path runs code carried by the file.

Every path certseg loads models through gets a file carrying a payload: a pickled object whose
unpickling creates a marker file (pathlib.Path.touch — the stand-in for any code), or a code
string where torch would evaluate one. After the load (and a forward pass when it loads), the
marker must not exist, and the load either refuses with a ModelFileError naming the file or
loads the data only. `test_payload_is_live` shows the payload does run when unpickled freely.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certseg.errors import ModelFileError
from certseg.models import SegmenterSpec, build_segmenter
from tests.models.contract import MEAN, STD
from tests.models.nets import DictNet, TinyNet


class Payload:
    """Unpickling this creates `marker`: what a hostile model file would do with pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def torch_payload(marker: Path, wrap: Callable[[Any], Any] = lambda p: p) -> bytes:
    """A torch.save (zip format) file holding the payload."""
    buffer = io.BytesIO()
    torch.save(wrap(Payload(marker)), buffer)
    return buffer.getvalue()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PAYLOAD_RAN"


def test_payload_is_live(marker: Path) -> None:
    """The payload is real: torch.load with weights_only=False runs it (so the tests can fail)."""
    torch.load(io.BytesIO(torch_payload(marker)), weights_only=False)
    assert marker.exists()
    marker.unlink()
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def rewrite_zip(source: Path, target: Path, members: dict[str, Callable[[bytes], bytes]]) -> Path:
    """Copy a zip archive, passing the members whose name ends with a key through its function
    (a key absent from the archive is added under the archive's root folder)."""
    with zipfile.ZipFile(source) as zin:
        infos = zin.infolist()
        root = infos[0].filename.split("/", 1)[0]
        seen = set()
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
            for info in infos:
                data = zin.read(info.filename)
                for suffix, change in members.items():
                    if info.filename.endswith(suffix):
                        data = change(data)
                        seen.add(suffix)
                zout.writestr(info.filename, data)
            for suffix, change in members.items():
                if suffix not in seen:
                    zout.writestr(f"{root}/{suffix}", change(b""))
    return target


def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def spec_for(family: str, path: Path, **extra: Any) -> SegmenterSpec:
    fields: dict[str, Any] = {"num_classes": 4, "mean": MEAN, "std": STD}
    fields.update(extra)
    return SegmenterSpec(family=family, path=str(path), **fields)  # type: ignore[arg-type]


# --- state-dict .pt (family "module") ----------------------------------------------------------


@pytest.mark.parametrize("layout", ["torch-zip", "plain-pickle"])
def test_state_dict_pt_payload_is_refused(tmp_path: Path, marker: Path, layout: str) -> None:
    path = tmp_path / "weights.pt"
    if layout == "torch-zip":
        path.write_bytes(torch_payload(marker, lambda p: {"head.weight": p}))
    else:
        path.write_bytes(pickle.dumps({"head.weight": Payload(marker)}, protocol=2))
    spec = spec_for("module", path, options={"module": TinyNet()})
    with pytest.raises(ModelFileError, match=r"weights\.pt.*weights_only"):
        build_segmenter(spec)
    assert not marker.exists()


# --- TorchScript (family "torchscript", torch.jit.load) ----------------------------------------


def scripted_file(tmp_path: Path) -> Path:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(TinyNet().eval()), str(path))
    return path


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
def test_torchscript_pickled_payload_is_refused(tmp_path: Path, marker: Path, member: str) -> None:
    evil = pickle.dumps(Payload(marker), protocol=2)
    path = rewrite_zip(scripted_file(tmp_path), tmp_path / "evil.pt", {member: lambda _: evil})
    with pytest.raises(ModelFileError, match=r"evil\.pt.*TorchScript"):
        build_segmenter(spec_for("torchscript", path))
    assert not marker.exists()


def test_torchscript_python_in_code_section_is_refused(tmp_path: Path, marker: Path) -> None:
    """The archive's code section is TorchScript, compiled by TorchScript: no Python builtins."""
    call = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    def inject(code: bytes) -> bytes:
        text = code.decode()
        head, sep, rest = text.partition("    x: Tensor) -> Tensor:\n")
        assert sep, text
        return f"{head}{sep}    {call}\n{rest}".encode()

    code = f"code/__torch__/{TinyNet.__module__.replace('.', '/')}.py"  # the class's module
    path = rewrite_zip(scripted_file(tmp_path), tmp_path / "evil.pt", {code: inject})
    with pytest.raises(ModelFileError, match=r"evil\.pt.*TorchScript"):
        segmenter = build_segmenter(spec_for("torchscript", path))
        segmenter(images())
    assert not marker.exists()


def test_torch_save_file_given_as_torchscript_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "pickled.pt"
    path.write_bytes(torch_payload(marker))
    with pytest.raises(ModelFileError, match=r"pickled\.pt.*TorchScript"):
        build_segmenter(spec_for("torchscript", path))
    assert not marker.exists()


# --- torch.export .pt2 (family "torchscript", certseg.models.exported) -------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = DictNet(4).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        net, (torch.rand(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}}
    )
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    torch.export.save(program, str(path))
    return path


def _edit_program(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        program = json.loads(data)
        change(program)
        return json.dumps(program).encode()

    return edit


def _touch(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def _sympy_payload(marker: Path) -> Callable[[dict[str, Any]], None]:
    def change(program: dict[str, Any]) -> None:
        values = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
        size = next(v for v in values if "as_expr" in v)
        size["as_expr"]["expr_str"] = f"{_touch(marker)} or {size['as_expr']['expr_str']}"

    return change


def _guards_payload(marker: Path) -> Callable[[dict[str, Any]], None]:
    def change(program: dict[str, Any]) -> None:
        program["guards_code"] = [f"{_touch(marker)} is None"]

    return change


def _target_payload(marker: Path) -> Callable[[dict[str, Any]], None]:
    def change(program: dict[str, Any]) -> None:
        graph = program["graph_module"]["graph"]
        graph["tensor_values"]["sys_out"] = graph["tensor_values"]["x"]
        graph["nodes"].insert(
            1,
            {
                "target": "torch.os.system",
                "inputs": [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}],
                "outputs": [{"as_tensor": {"name": "sys_out"}}],
                "metadata": {},
                "is_hop_single_tensor_return": None,
                "name": "sys_call",
            },
        )

    return change


def _arg_name_payload(marker: Path) -> Callable[[dict[str, Any]], None]:
    def change(program: dict[str, Any]) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        signature["forward_arg_names"] = [f"x={_touch(marker)}"]

    return change


def _pickled_weight(marker: Path) -> dict[str, Callable[[bytes], bytes]]:
    def config(data: bytes) -> bytes:
        payload = json.loads(data)
        entry = payload["config"]["aux.bias"]
        entry["use_pickle"] = True
        entry["path_name"] = "weight_payload"
        return json.dumps(payload).encode()

    return {
        "data/weights/model_weights_config.json": config,
        "data/weights/weight_payload": lambda _: torch_payload(marker),
    }


def _opaque_constant(marker: Path) -> dict[str, Callable[[bytes], bytes]]:
    config = {
        "config": {
            "evil": {
                "path_name": "opaque_obj_0",
                "is_param": False,
                "use_pickle": True,
                "tensor_meta": None,
            }
        }
    }
    return {
        "data/constants/model_constants_config.json": lambda _: json.dumps(config).encode(),
        "data/constants/opaque_obj_0": lambda _: pickle.dumps(Payload(marker)),
    }


PT2_ATTACKS: dict[str, tuple[Callable[[Path], dict[str, Callable[[bytes], bytes]]], str | None]] = {
    # torch.export.load unpickles the sample inputs with weights_only=False when the safe read
    # fails (the payload ran on the old code); certseg never reads them: the program loads.
    "sample-inputs-pickle": (
        lambda m: {"data/sample_inputs/model.pt": lambda _: torch_payload(m)},
        None,
    ),
    "pickled-weight": (_pickled_weight, r"weight_payload is not a weights_only tensor pickle"),
    "opaque-constant": (_opaque_constant, r"opaque Python object"),
    "sympy-expression": (
        lambda m: {"models/model.json": _edit_program(_sympy_payload(m))},
        r"symbolic expression",
    ),
    # torch compiles guards_code into Python that runs on every call; certseg drops it.
    "guards-code": (lambda m: {"models/model.json": _edit_program(_guards_payload(m))}, None),
    "node-target": (
        lambda m: {"models/model.json": _edit_program(_target_payload(m))},
        r"'torch\.os\.system' is not a registered operator",
    ),
    "argument-name": (
        lambda m: {"models/model.json": _edit_program(_arg_name_payload(m))},
        r"forward_arg_names.*not a plain name",
    ),
}


@pytest.mark.parametrize("attack", sorted(PT2_ATTACKS))
def test_pt2_payload_never_runs(exported: Path, tmp_path: Path, marker: Path, attack: str) -> None:
    genuine = exported
    members, refusal = PT2_ATTACKS[attack]
    path = rewrite_zip(genuine, tmp_path / "evil.pt2", members(marker))
    spec = spec_for("torchscript", path)
    if refusal is None:
        segmenter = build_segmenter(spec)
        with torch.no_grad():
            got = segmenter(images())
            expected = build_segmenter(spec_for("torchscript", genuine))(images())
        assert torch.equal(got, expected)  # the data loaded, nothing else
    else:
        with pytest.raises(ModelFileError, match=rf"evil\.pt2.*{refusal}"):
            build_segmenter(spec)
    assert not marker.exists()


def test_pt2_loads_the_exported_program(exported: Path) -> None:
    """certseg's reader gives what torch.export.load gives on a genuine file, bit for bit."""
    path = exported
    from certseg.models.exported import load_exported_module

    x = images()
    with torch.no_grad():
        ours = load_exported_module(path)(x)
        theirs = torch.export.load(str(path)).module()(x)
    assert torch.equal(ours["out"], theirs["out"])
    assert torch.equal(ours["aux"], theirs["aux"])


class VariedNet(nn.Module):
    """What real exports carry: a Sequential (numeric attribute paths), a non-persistent buffer,
    a lifted tensor constant, a string argument (einsum), a higher-order op with subgraphs
    (torch.cond), and dynamic batch, height and width."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)
        )
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)
        self.weights = torch.linspace(0.5, 1.5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bchw,c->bchw", self.body(x) * self.scale, self.weights)
        pooled = F.interpolate(F.avg_pool2d(y, 2), size=x.shape[-2:], mode="bilinear")
        return torch.cond(x.mean() > 0.5, lambda a: a + 1, lambda a: a - 1, (y + pooled,))


def test_pt2_reader_loads_varied_programs(tmp_path: Path) -> None:
    """The checks refuse code, not ordinary programs: same output as torch.export.load."""
    from certseg.models.exported import load_exported_module

    torch.manual_seed(0)
    dims = {
        "x": {
            0: torch.export.Dim("b", max=8),
            2: torch.export.Dim("h", min=8, max=64),
            3: torch.export.Dim("w", min=8, max=64),
        }
    }
    program = torch.export.export(
        VariedNet().eval(), (torch.rand(2, 3, 32, 48),), dynamic_shapes=dims
    )
    path = tmp_path / "varied.pt2"
    torch.export.save(program, str(path))
    x = torch.rand(3, 3, 40, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(load_exported_module(path)(x), torch.export.load(str(path)).module()(x))


def test_pt2_not_an_archive_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "pickled.pt2"
    path.write_bytes(torch_payload(marker))
    with pytest.raises(ModelFileError, match=r"pickled\.pt2"):
        build_segmenter(spec_for("torchscript", path))
    assert not marker.exists()


# --- guided-diffusion (ADM) .pt (certseg.adm via load_denoiser) --------------------------------


def test_adm_checkpoint_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    from certseg.denoise import load_denoiser

    path = tmp_path / "256x256_diffusion_uncond.pt"
    path.write_bytes(torch_payload(marker, lambda p: {"state_dict": {"time_embed.0.weight": p}}))
    with pytest.raises(ModelFileError, match=r"256x256_diffusion_uncond\.pt.*weights_only"):
        load_denoiser(path)
    assert not marker.exists()


# --- diffusers folder with a .bin (certseg.denoise.load_denoiser) ------------------------------


def test_diffusers_bin_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    from certseg.denoise import load_denoiser

    folder = tmp_path / "denoiser"
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    unet.save_pretrained(str(folder / "unet"), safe_serialization=False)
    DDPMScheduler().save_pretrained(str(folder / "scheduler"))
    weights = folder / "unet" / "diffusion_pytorch_model.bin"
    assert weights.is_file()
    weights.write_bytes(torch_payload(marker, lambda p: {"conv_in.weight": p}))
    with pytest.raises(ModelFileError, match=r"diffusion_pytorch_model\.bin"):
        load_denoiser(folder)
    assert not marker.exists()


# --- SegFormer folder (transformers from_pretrained, local files only) -------------------------


def _segformer_folder(folder: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    from tests.models.test_segformer_adapter import tiny_config

    model = transformers.SegformerForSemanticSegmentation(tiny_config(4))
    model.save_pretrained(folder)
    return folder


def test_segformer_bin_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    folder = _segformer_folder(tmp_path / "segformer")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(
        torch_payload(marker, lambda p: {"decode_head.classifier.weight": p})
    )
    with pytest.raises(ModelFileError, match=r"segformer"):
        build_segmenter(SegmenterSpec(family="segformer", path=str(folder), mean=MEAN, std=STD))
    assert not marker.exists()


def test_segformer_remote_code_is_not_imported(tmp_path: Path, marker: Path) -> None:
    """config.json may name Python code (auto_map, for trust_remote_code); it is never run."""
    folder = _segformer_folder(tmp_path / "segformer")
    (folder / "evil_modeling.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "evil_modeling.EvilConfig",
        "AutoModelForSemanticSegmentation": "evil_modeling.EvilModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    segmenter = build_segmenter(
        SegmenterSpec(family="segformer", path=str(folder), mean=MEAN, std=STD)
    )
    with torch.no_grad():
        segmenter(images())
    assert not marker.exists()
