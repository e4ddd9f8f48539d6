"""The tasks' retry condition: certseg's model errors are permanent, I/O errors are retried."""

from __future__ import annotations

from typing import Any

import pytest

from certseg.errors import ModelFileError, NonFiniteOutputError


class _State:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ModelFileError("unet/diffusion_pytorch_model.safetensors missing"), False),
        (NonFiniteOutputError("segmenter 'x' returned NaN", items=(1,)), False),
        (OSError("connection reset"), True),
        (RuntimeError("CUDA out of memory"), True),
    ],
)
def test_model_errors_are_never_retried(error: BaseException, retried: bool) -> None:
    from certseg.tasks.certify import _transient

    assert _transient(None, None, _State(error)) is retried


def test_model_errors_survive_pickling() -> None:
    """Dask and Prefect ship task errors between processes: type and message must survive."""
    import pickle

    for error in (ModelFileError("m.pt2: refused"), NonFiniteOutputError("NaN", items=(2,))):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
