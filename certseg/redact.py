"""Secrets out of everything certseg writes or prints: storage_options values and URL credentials.

certseg never needs a credential in a config, a URL or a flow parameter: s3fs/botocore read
`AWS_ACCESS_KEY_ID`/`AWS_PROFILE`/`~/.aws/credentials`, MLflow reads `MLFLOW_TRACKING_USERNAME`/
`MLFLOW_TRACKING_PASSWORD`. Where a user puts one there anyway, the value is used to connect but
only its redacted form is persisted (store attributes, config files in the results folder, MLflow
params, tags and artifacts) or shown (logs, printed output, error messages):

- every value of `store.storage_options` becomes `REDACTED` (the keys stay, so the record says which
  options were set; any key, since fsspec backends name their secrets differently);
- the userinfo of every URL in a string (`s3://key:secret@bucket/...`, `https://user:pass@host`,
  `postgresql://user:pass@host/db`, `tcp://user@host:8786`) becomes `REDACTED`, and so does the
  value of a query parameter whose name looks secret (`?password=...`, `&X-Amz-Signature=...`).

A redacted value is never a credential: `check_unredacted` refuses one where certseg would connect
with it (a results folder's config.yaml run again, a store's persisted config in recertify).
Redaction is a pure string function: no I/O, no environment. It changes no `config_id` (the store,
tracking and Dask sections are not part of it; see certseg.config).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

REDACTED = "***redacted***"
"""The fixed marker that replaces a secret value."""

T = TypeVar("T")

# A URL inside free text: scheme "://" then everything up to whitespace, a quote or a bracket.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>`]*)")
# Query parameters whose value is a secret (matched on the parameter name, case-insensitive).
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;][^=&;#]*(?:pass|secret|token|key|signature|credential|auth)[^=&;#]*=)"
    r"(?P<value>[^&;#]*)",
    re.IGNORECASE,
)


def _userinfo_end(rest: str) -> int:
    """Index of the '@' that ends the userinfo of a URL's part after "://", or -1 when none.

    The userinfo runs to the first '@' when what precedes it has no '/', or has a ':' (user:secret,
    where the secret may contain '/', as AWS secret keys do). It errs on the safe side: the rare
    `https://host:8080/a@b` (an '@' in the path after a port) is redacted up to that '@'.
    An unencoded '@' in the secret (user:p@ss@host) is covered: the host follows the last '@'
    before the path.
    """
    at = rest.find("@")
    if at < 0:
        return -1
    before = rest[:at]
    if "/" in before and ":" not in before:
        return -1
    path = rest.find("/", at)
    return rest.rfind("@", 0, path if path >= 0 else len(rest))


def _redact_one(match: re.Match[str]) -> str:
    rest = match.group("rest")
    end = _userinfo_end(rest)
    if end >= 0:
        rest = REDACTED + rest[end:]
    rest = _SECRET_QUERY.sub(lambda m: m.group("name") + REDACTED, rest)
    return match.group("scheme") + rest


def redact_text(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by `REDACTED` (see the module).

    Text without a "scheme://" is returned unchanged, so redacting a path or a message that names
    no URL is a no-op.
    """
    if "://" not in text:
        return text
    return _URL.sub(_redact_one, text)


def redact_url(url: str) -> str:
    """A URL (or fsspec chain `a::b://...`) with its userinfo and secret query values redacted."""
    return redact_text(url)


def redact_options(options: Mapping[str, Any] | None) -> dict[str, str]:
    """storage_options with every value replaced by `REDACTED`, keys kept ({} stays {})."""
    return {str(key): REDACTED for key in (options or {})}


def redact_value(value: Any) -> Any:
    """Every string inside a JSON-like value (dicts, lists, tuples) passed through `redact_text`."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


def redact_config_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """A config mapping (parsed YAML or `RunConfig.model_dump(mode="json")`) safe to persist.

    `store.storage_options` values become `REDACTED` (keys kept) and every string anywhere is
    passed through `redact_text` (store.url, tracking.uri, dask.address, dataset roots, paths).
    The input is not modified. A mapping without secrets comes back equal to the input.
    """
    out: dict[str, Any] = redact_value(dict(data))
    store = data.get("store")
    if isinstance(store, Mapping) and isinstance(store.get("storage_options"), Mapping):
        out["store"] = {**out["store"], "storage_options": redact_options(store["storage_options"])}
    return out


def contains_redacted(value: Any) -> bool:
    """Whether the marker `REDACTED` occurs in any string (or key) of a JSON-like value."""
    if isinstance(value, str):
        return REDACTED in value
    if isinstance(value, Mapping):
        return any(contains_redacted(k) or contains_redacted(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_redacted(item) for item in value)
    return False


def check_unredacted(value: T, field: str) -> T:
    """`value` unchanged; ValueError naming `field` when it holds the marker `REDACTED`.

    Called where certseg connects with a value (store URL and storage_options, tracking URI, Dask
    address), so a placeholder written by certseg is never sent as a credential.
    """
    if contains_redacted(value):
        raise ValueError(
            f"{field}: holds the placeholder {REDACTED!r}, which certseg writes in place of "
            "secrets (this value comes from a config or store certseg saved); give the real "
            "location, with credentials from the environment (AWS_ACCESS_KEY_ID / AWS_PROFILE for "
            "S3, MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD for MLflow), not the "
            "placeholder"
        )
    return value
