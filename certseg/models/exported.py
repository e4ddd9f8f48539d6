"""Load a torch.export program (`.pt2`) as data: nothing in the file is run or unpickled freely.

`torch.export.load` (torch 2.13) is not safe on a file from elsewhere: when its weights_only read
of a pickled member fails it retries with weights_only=False (the sample inputs are always
pickled), it `pickle.loads` "opaque" constants, loads AOTInductor shared libraries, parses the
symbolic shape expressions with `sympy.sympify` (an `eval`), and `.module()` compiles the file's
`guards_code` strings into Python. `load_exported_module` reads the archive itself instead:

- the program JSON is checked before torch deserializes it: every node target is a registered
  operator (`torch.ops.<namespace>.<op>[.<overload>]`) or one of torch's symbolic-arithmetic
  builtins; every symbolic expression is a formula of sympy / torch shape functions, symbols and
  numbers (checked on its Python syntax tree, before sympy sees it); every other string (names,
  attribute paths, device types) is plain `[A-Za-z0-9_.]` without dunder parts, except string
  arguments, pytree specs, the torch version and the range-constraint keys, which are only
  ever used as values; node
  metadata (stack traces, module stacks) and guard code are dropped;
- weights and tensor constants are raw tensor bytes, or torch pickles read with
  weights_only=True that must hold a tensor;
- sample inputs, extra files and AOTInductor / ExecuTorch members are never read; torchbind or
  opaque constants and the legacy layouts are refused.

Anything else raises ModelFileError naming the file and what was expected. torch's archive
reader and program deserializer (private torch modules) do the rest, on checked input only.
"""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certseg.errors import ModelFileError, loader_reason

if TYPE_CHECKING:
    import torch
    from torch import nn

_PLAIN = re.compile(r"[A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\Z")
_OPERATOR = re.compile(
    r"torch\.ops\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?\Z"
)
_FREE_TEXT = frozenset({"as_string", "as_strings", "in_spec", "out_spec", "torch_version"})
"""Keys whose strings are only ever values (a string argument, a JSON pytree spec, a version)."""

_SYMPY_NAMES = frozenset(
    {
        # sympy's own classes as sympy.srepr writes them
        "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs",
        "floor", "ceiling", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality",
        "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "And", "Or", "Not",
        "Piecewise", "ExprCondPair", "oo", "zoo", "nan", "true", "false", "True", "False",
        "Half", "One", "Zero", "NegativeOne", "Infinity", "NegativeInfinity", "BooleanTrue",
        "BooleanFalse",
        # torch.utils._sympy.functions, as torch's deserializer names them
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
        "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
        "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
        "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
    }
)  # fmt: skip
_SYMPY_NODES = (
    ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.Tuple,
    ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.USub, ast.UAdd,
)  # fmt: skip


def _refuse(path: Path, what: str) -> ModelFileError:
    return ModelFileError(
        f"{path}: {what}; certseg loads a .pt2 only as data (a torch.export program of "
        "registered operators, tensors stored raw or as weights_only pickles)"
    )


def _check_expression(path: Path, text: str) -> None:
    """A symbolic shape expression must be sympy.srepr-style arithmetic (no attribute access,
    no unknown names): it is handed to sympy.sympify, which evaluates it."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise _refuse(path, f"symbolic expression {text!r} does not parse") from error
    for node in ast.walk(tree):
        if not isinstance(node, _SYMPY_NODES):
            raise _refuse(
                path, f"symbolic expression {text!r} contains {type(node).__name__} syntax"
            )
        if isinstance(node, ast.Name) and node.id not in _SYMPY_NAMES:
            raise _refuse(path, f"symbolic expression {text!r} names {node.id!r}")
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            raise _refuse(path, f"symbolic expression {text!r} calls a non-function")


def _symbolic_builtins() -> frozenset[str]:
    """The serialized names of torch's symbolic-arithmetic node targets (operator.add, ...)."""
    from torch._export.serde.serialize import _SYM_OPS

    return frozenset(f"{op.__module__}.{op.__name__}" for op in _SYM_OPS)


def _check_plain(path: Path, text: str, where: str) -> None:
    if not _PLAIN.match(text) or any(part.startswith("__") for part in text.split(".")):
        raise _refuse(path, f"{where} {text!r} is not a plain name")


def _check_json(path: Path, value: Any, key: str, builtins: frozenset[str]) -> None:
    """Walk a parsed JSON member; raise on any string that could be read as code."""
    if isinstance(value, dict):
        for name, item in value.items():
            if key != "range_constraints":  # its keys (e.g. "8*s0") are only looked up
                _check_plain(path, str(name), "key")
            _check_json(path, item, str(name), builtins)
    elif isinstance(value, list):
        for item in value:
            _check_json(path, item, key, builtins)
    elif isinstance(value, str):
        if key == "expr_str":
            _check_expression(path, value)
        elif key == "target":
            if not (_OPERATOR.match(value) or value in builtins):
                raise _refuse(path, f"graph node target {value!r} is not a registered operator")
        elif key not in _FREE_TEXT:
            _check_plain(path, value, f"field {key!r}")


def _strip_program(program: dict[str, Any]) -> None:
    """Drop what certseg never needs and torch would turn into code or imports: guard code and
    every node's metadata (stack traces, module stacks, source functions)."""
    program["guards_code"] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "target" in value and "inputs" in value and "metadata" in value:
                value["metadata"] = {}
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(program)
    graph_module = program.get("graph_module")
    if isinstance(graph_module, dict):
        graph_module["metadata"] = {}


def _read_json(reader: Any, path: Path, member: str) -> Any:
    try:
        return json.loads(reader.read_string(member))
    except (RuntimeError, UnicodeDecodeError, ValueError) as error:
        raise _refuse(path, f"member {member} is not readable JSON ({error})") from error


def _read_tensors(
    reader: Any, path: Path, config_file: str, base_dir: str, *, constants: bool
) -> dict[str, torch.Tensor]:
    """Weights or constants of the program: raw bytes, or torch pickles read weights_only."""
    import torch
    from torch._export.serde import schema
    from torch._export.serde.serialize import (
        _dict_to_dataclass,
        deserialize_size,
        deserialize_storage_offset,
        deserialize_stride,
    )
    from torch.export.pt2_archive._package import _build_file_map
    from torch.export.pt2_archive.constants import TENSOR_CONSTANT_FILENAME_PREFIX

    if config_file not in reader.get_file_names():
        raise _refuse(path, f"member {config_file} is missing")
    raw = _read_json(reader, path, config_file)
    _check_json(path, raw, "", frozenset())
    config = _dict_to_dataclass(schema.PayloadConfig, raw)  # type: ignore[no-untyped-call]
    for name, meta in config.config.items():
        if constants and not meta.path_name.startswith(TENSOR_CONSTANT_FILENAME_PREFIX):
            raise _refuse(
                path, f"constant {name!r} is a torchbind or opaque Python object, not a tensor"
            )
    files = _build_file_map(reader, config, base_dir)
    tensors: dict[str, torch.Tensor] = {}
    for name, meta in config.config.items():
        if meta.use_pickle:
            member = f"{base_dir}{meta.path_name}"
            try:
                value = torch.load(
                    io.BytesIO(reader.read_bytes(member)), map_location="cpu", weights_only=True
                )
            except Exception as error:
                raise _refuse(
                    path,
                    f"member {member} is not a weights_only tensor pickle ({loader_reason(error)})",
                ) from error
            if not isinstance(value, torch.Tensor):
                raise _refuse(path, f"member {member} holds {type(value).__name__}, not a tensor")
            tensors[name] = value
            continue
        if meta.tensor_meta is None:
            raise _refuse(path, f"tensor {name!r} has no tensor_meta")
        tensor = torch.as_strided(
            files[meta.path_name],
            size=deserialize_size(meta.tensor_meta.sizes),
            stride=deserialize_stride(meta.tensor_meta.strides),
            storage_offset=deserialize_storage_offset(meta.tensor_meta.storage_offset),
        )
        if meta.is_param:
            tensor = torch.nn.Parameter(tensor, requires_grad=meta.tensor_meta.requires_grad)
        tensors[name] = tensor
    return tensors


def load_exported_module(path: str | Path) -> nn.Module:
    """The module of the torch.export program "model" in a `.pt2` archive (torch.export.save).

    Reads only the program JSON (checked, then deserialized by torch), its weights and its
    tensor constants (raw or weights_only); see the module docstring. ModelFileError when the
    file is missing, not a current-format .pt2 archive, or holds anything but that data.
    """
    source = Path(path)
    if not source.is_file():
        raise ModelFileError(f"torch.export file {source} does not exist (expected a .pt2 file)")
    try:
        from torch._export.serde import schema
        from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass
        from torch.export.pt2_archive._package import PT2ArchiveReader
        from torch.export.pt2_archive.constants import (
            ARCHIVE_VERSION_PATH,
            ARCHIVE_VERSION_VALUE,
            CONSTANTS_CONFIG_FILENAME_FORMAT,
            CONSTANTS_DIR,
            MODELS_FILENAME_FORMAT,
            WEIGHTS_CONFIG_FILENAME_FORMAT,
            WEIGHTS_DIR,
        )
    except ImportError as error:  # pragma: no cover - depends on the torch version
        raise ModelFileError(
            f"{source}: this torch has no .pt2 archive reader (torch.export.pt2_archive)"
        ) from error

    try:
        reader = PT2ArchiveReader(str(source))
        names = set(reader.get_file_names())
        version = reader.read_string(ARCHIVE_VERSION_PATH) if ARCHIVE_VERSION_PATH in names else ""
    except (RuntimeError, AssertionError, UnicodeDecodeError) as error:
        raise _refuse(source, f"not a torch.export .pt2 archive ({error})") from error
    if version != ARCHIVE_VERSION_VALUE:
        raise _refuse(
            source,
            f"archive version {version or 'missing'}, expected {ARCHIVE_VERSION_VALUE} "
            "(re-save it with torch.export.save from this torch version)",
        )
    model = "model"
    program_file = MODELS_FILENAME_FORMAT.format(model)
    if program_file not in names:
        raise _refuse(source, f"no exported program {program_file}")
    for legacy in (f"{WEIGHTS_DIR}{model}.pt", f"{CONSTANTS_DIR}{model}.pt"):
        if legacy in names:
            raise _refuse(source, f"legacy pickled member {legacy}")
    program = _read_json(reader, source, program_file)
    if not isinstance(program, dict):
        raise _refuse(source, f"member {program_file} is not a JSON object")
    _strip_program(program)
    _check_json(source, program, "", _symbolic_builtins())
    weights = _read_tensors(
        reader,
        source,
        WEIGHTS_CONFIG_FILENAME_FORMAT.format(model),
        WEIGHTS_DIR,
        constants=False,
    )
    constants = _read_tensors(
        reader,
        source,
        CONSTANTS_CONFIG_FILENAME_FORMAT.format(model),
        CONSTANTS_DIR,
        constants=True,
    )
    try:
        serialized = _dict_to_dataclass(  # type: ignore[no-untyped-call]
            schema.ExportedProgram, program
        )
        exported = ExportedProgramDeserializer().deserialize(serialized, weights, constants, None)
        module: nn.Module = exported.module()
    except ModelFileError:
        raise
    except Exception as error:
        raise _refuse(source, f"the exported program does not deserialize ({error})") from error
    return module
