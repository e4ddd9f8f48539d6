"""The `sequential` config block: off by default, validated against n and α, and part of config_id
only when enabled (absent or off, the pinned ids of tests/test_config.py hold)."""

from __future__ import annotations

import copy
import json

import pytest

from certseg.config import RunConfig, SequentialConfig, config_from_dict
from certseg.stats.sequential import LookSchedule
from tests.test_config import MINIMAL_CONFIG, MINIMAL_CONFIG_ID, TINY_CONFIG_ID, _tiny


def _minimal(**sequential: object) -> dict:
    data = copy.deepcopy(MINIMAL_CONFIG)
    data["n"] = 100
    data["sequential"] = dict(sequential)
    return data


def test_absent_or_off_keeps_the_pinned_config_ids() -> None:
    absent = config_from_dict(copy.deepcopy(MINIMAL_CONFIG))
    assert absent.sequential is None and absent.look_schedule() is None
    assert "sequential" not in json.loads(absent.to_json())  # the pinned JSON is unchanged
    off = copy.deepcopy(MINIMAL_CONFIG)
    off["sequential"] = {"enabled": False, "looks": [1, 2, 4], "fraction_tolerance": 0.3}
    assert config_from_dict(off).config_id == MINIMAL_CONFIG_ID
    assert config_from_dict(off).look_schedule() is None
    tiny = _tiny()
    tiny["sequential"] = {"enabled": False}
    assert config_from_dict(tiny).config_id == TINY_CONFIG_ID


def test_enabled_enters_config_id_and_gives_the_schedule() -> None:
    base = config_from_dict(_minimal())
    on = config_from_dict(_minimal(enabled=True, looks=[50, 100], alpha_weights=[1, 3]))
    assert on.config_id != base.config_id
    other = config_from_dict(_minimal(enabled=True, looks=[60, 100], alpha_weights=[1, 3]))
    assert other.config_id != on.config_id
    schedule = on.look_schedule()
    assert schedule == LookSchedule.weighted((50, 100), on.alpha, (1, 3))
    equal = config_from_dict(_minimal(enabled=True, looks=[50, 100], alpha_weights=None))
    assert equal.look_schedule() is not None
    assert equal.look_schedule().alphas  # type: ignore[union-attr] == pytest.approx((0.0005, 0.0005))
    assert config_from_dict(json.loads(on.to_json())).config_id == on.config_id  # round trip
    assert isinstance(config_from_dict(_minimal()), RunConfig)


@pytest.mark.parametrize(
    ("sequential", "message"),
    [
        (
            {"enabled": True, "looks": [50, 80], "alpha_weights": None},
            r"sequential.looks: the last look must equal n",
        ),
        (
            {"enabled": True, "looks": [80, 50, 100], "alpha_weights": None},
            "sequential: .*strictly increasing",
        ),
        ({"enabled": True, "looks": [50, 100], "alpha_weights": [1]}, "one entry per look"),
        ({"enabled": True, "looks": [50, 100], "alpha_weights": [1, 0]}, "finite and > 0"),
        ({"fraction_tolerance": 1.5}, "fraction_tolerance"),
        ({"looks": [0, 100]}, "looks"),
        ({"window": 3}, "window"),
    ],
)
def test_bad_sequential_blocks_name_the_field(sequential: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(_minimal(**sequential))


def test_defaults_are_the_measured_schedule() -> None:
    """docs/sequential.md chooses these defaults from the measurement; the schedule is valid."""
    block = SequentialConfig()
    assert not block.enabled and block.fraction_tolerance == 0.0
    assert block.schedule(0.001) == LookSchedule.weighted((60, 100), 0.001, (1, 3))
    demo = config_from_dict(_minimal(enabled=True))  # the defaults fit the demo's n = 100
    assert demo.look_schedule() == block.schedule(demo.alpha)
