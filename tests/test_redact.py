"""certseg.redact and the config's public (redacted) views: what is hidden, what is kept, and that
config_id and the demo's persisted config do not change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from certseg.config import config_from_dict, load_config
from certseg.redact import (
    REDACTED,
    check_unredacted,
    contains_redacted,
    redact_config_dict,
    redact_options,
    redact_text,
    redact_url,
)

REPO = Path(__file__).resolve().parents[1]
KEY, SECRET, PASSWORD = "AKIAPLANTED123", "PLANTED-SECRET-VALUE", "PLANTED-URL-PASSWORD"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://k:s@bucket/x.zarr", f"s3://{REDACTED}@bucket/x.zarr"),
        # an AWS secret key may hold '/' and '+'
        ("s3://AKIA:ab/c+d@bucket/run.zarr", f"s3://{REDACTED}@bucket/run.zarr"),
        ("https://user:pass@host/store.zarr", f"https://{REDACTED}@host/store.zarr"),
        ("postgresql://u:p@ss@db:5432/mlflow", f"postgresql://{REDACTED}@db:5432/mlflow"),
        ("http://user:pass@mlflow:5000", f"http://{REDACTED}@mlflow:5000"),
        ("tcp://token@scheduler:8786", f"tcp://{REDACTED}@scheduler:8786"),
        ("simplecache::s3://k:s@b/x", f"simplecache::s3://{REDACTED}@b/x"),
        ("https://h/x?X-Amz-Signature=abc&v=1", f"https://h/x?X-Amz-Signature={REDACTED}&v=1"),
        ("postgresql://db/m?password=pw", f"postgresql://db/m?password={REDACTED}"),
        # nothing secret: unchanged
        ("s3://bucket/people/a@example.org/x.zarr", "s3://bucket/people/a@example.org/x.zarr"),
        ("sqlite:///mlruns.db", "sqlite:///mlruns.db"),
        ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("certseg-runs/demo.zarr", "certseg-runs/demo.zarr"),
        ("memory://certseg/run.zarr", "memory://certseg/run.zarr"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent


def test_redact_text_finds_every_url_in_a_message() -> None:
    message = "store 'https://a:PW1@h/s.zarr' differs from s3://k:PW2@b/t (see http://docs/x)"
    out = redact_text(message)
    assert "PW1" not in out and "PW2" not in out
    assert out == (
        f"store 'https://{REDACTED}@h/s.zarr' differs from s3://{REDACTED}@b/t (see http://docs/x)"
    )


def test_redact_options_keeps_every_key_and_hides_every_value() -> None:
    options = {"key": KEY, "secret": SECRET, "client_kwargs": {"region_name": "x"}, "anon": False}
    assert redact_options(options) == {k: REDACTED for k in options}
    assert redact_options({}) == {} and redact_options(None) == {}


def _planted(data: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(data))
    out["store"] = {
        "url": f"https://planted-user:{PASSWORD}@host/store.zarr",
        "storage_options": {"key": KEY, "secret": SECRET},
    }
    out["tracking"] = {**out.get("tracking", {}), "uri": f"http://u:{PASSWORD}@mlflow:5000"}
    out["dask"] = {**out.get("dask", {}), "address": f"tcp://u:{PASSWORD}@scheduler:8786"}
    return out


def _tiny() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_public_views_hold_no_planted_secret_and_config_id_is_unchanged() -> None:
    plain = config_from_dict(_tiny())
    planted = config_from_dict(_planted(_tiny()))
    assert planted.config_id == plain.config_id  # store/tracking/dask are not identity
    for text in (
        planted.to_public_json(),
        json.dumps(planted.flat_params()),
        yaml.safe_dump(planted.public_dict()),
    ):
        for secret in (KEY, SECRET, PASSWORD):
            assert secret not in text
    public = planted.public_dict()
    assert public["store"]["storage_options"] == {"key": REDACTED, "secret": REDACTED}
    assert public["store"]["url"] == f"https://{REDACTED}@host/store.zarr"
    assert public["tracking"]["uri"] == f"http://{REDACTED}@mlflow:5000"
    assert public["dask"]["address"] == f"tcp://{REDACTED}@scheduler:8786"
    # The persisted form still parses (recertify reads it) and keeps the identity.
    again = config_from_dict(json.loads(planted.to_public_json()))
    assert again.config_id == planted.config_id
    # The full form keeps the true values: it is what connects (never persisted).
    assert SECRET in planted.to_json()


@pytest.mark.parametrize("name", ["demo.yaml", "tiny.yaml"])
def test_redaction_is_a_no_op_without_secrets(name: str) -> None:
    """The demo's store attributes, config.yaml and params stay byte-identical."""
    data = yaml.safe_load((REPO / "configs" / name).read_text())
    assert redact_config_dict(data) == data
    config = config_from_dict(data)
    assert config.to_public_json() == config.to_json()
    assert config.public_dict() == config.model_dump(mode="json")


def test_redact_config_dict_does_not_modify_its_input() -> None:
    data = _planted(_tiny())
    before = json.dumps(data, sort_keys=True)
    redact_config_dict(data)
    assert json.dumps(data, sort_keys=True) == before


def test_a_redacted_value_is_never_used_to_connect(tmp_path: Path) -> None:
    from certseg.aggregate import dask_client
    from certseg.run.context import run_context

    assert not contains_redacted({"store": {"url": "s3://b/x"}})
    with pytest.raises(ValueError, match=r"store\.storage_options: holds the placeholder"):
        check_unredacted({"key": REDACTED}, "store.storage_options")
    # A results folder's config.yaml run again: loads, but its placeholders never reach a backend.
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(config_from_dict(_planted(_tiny())).public_dict()))
    config = load_config(saved)
    with pytest.raises(ValueError, match=r"^store\.url: holds the placeholder"):
        run_context(config)
    with pytest.raises(ValueError, match=r"^store\.storage_options: holds the placeholder"):
        run_context(config, store_url="memory://certseg-redact/x.zarr")
    with pytest.raises(ValueError, match=r"^tracking\.uri: holds the placeholder"):
        run_context(config, store_url="memory://x", storage_options={"anon": True})
    ctx = run_context(config, store_url="memory://x", storage_options={"anon": True}, track=False)
    assert (ctx.store_url, ctx.storage_options) == ("memory://x", {"anon": True})
    assert "anon" not in repr(ctx)  # storage_options may hold credentials: never in the repr
    with pytest.raises(ValueError, match=r"^dask\.address: holds the placeholder"):  # noqa: SIM117
        with dask_client(config.dask.address):
            pass
