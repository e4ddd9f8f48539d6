"""Reading a config: a YAML file → its mapping → a validated `RunConfig`, with errors that name
the file and each bad field as ``config.<path>``, and the optional base_dir override that relative
model and dataset paths resolve against.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from certseg.config.core import RunConfig

_NAMES_ITS_FIELD = re.compile(r"^[\w.-]+: ")
"""A check across fields starts its message with the field's path below its location."""


def _format_error(error: ValidationError, prefix: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join([prefix, *(str(part) for part in item["loc"])])
        message = item["msg"].removeprefix("Value error, ")
        if _NAMES_ITS_FIELD.match(message):
            lines.append(f"{where}.{message}")
            continue
        shown = ""
        if (
            "input" in item
            and item["type"] != "missing"
            and not isinstance(item["input"], dict)
            and "got " not in message
        ):
            shown = f", got {item['input']!r}"
        lines.append(f"{where}: {message}{shown}")
    return "; ".join(lines)


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> RunConfig:
    """Validate a mapping into a RunConfig; ValueError naming each bad field as `config.<path>`."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ValueError(f"{source}: expected a mapping at the top level, got {kind}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ValueError(f"{source}: {_format_error(error, 'config')}") from None


def read_config_mapping(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a config file (not yet validated as a RunConfig).

    Raises ValueError naming the file when it is missing, not YAML or not a mapping.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"config file {str(file)!r} does not exist")
    text = file.read_text()
    key = (str(file.resolve()), hashlib.sha256(text.encode()).hexdigest())
    if key not in _PARSED:  # the CLI's preflight and the flow it starts share one parse
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"config file {str(file)!r} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a mapping at the top level")
        if len(_PARSED) >= 16:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = data
    return copy.deepcopy(_PARSED[key])


_PARSED: dict[tuple[str, str], dict[str, Any]] = {}
"""Parsed config files of this process by (absolute path, sha256 of the text): a file is parsed
once per process while its content is unchanged (callers get deep copies)."""


def load_config(path: str | Path, *, base_dir: str | Path | None = None) -> RunConfig:
    """Read and validate a YAML config file.

    base_dir: directory relative model/dataset paths resolve against (default: keep the file's
    `base_dir` key, else the CWD at use time). Raises ValueError naming the file and the field.
    """
    data = read_config_mapping(path)
    if base_dir is not None:
        data = {**data, "base_dir": str(base_dir)}
    return config_from_dict(data, source=str(path))
