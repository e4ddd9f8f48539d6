"""certseg's errors about models: a model file it will not load, a model output it will not use.

Both derive from ValueError: they are permanent (the same file or model fails the same way on
every try), so the flows never retry them (tasks/certify.py retries OSError / RuntimeError only).
"""

from __future__ import annotations


class ModelFileError(ValueError):
    """A model file or folder is missing, unreadable, or holds more than data (pickled objects,
    code strings, native libraries); the message names the path and what was expected."""


class NonFiniteOutputError(ValueError):
    """A model returned NaN or ±inf: nothing from that batch is kept, stored or certified.

    The message names the model, σ, the image and the sample indices. `items`: the positions in
    the batch whose output was not finite (empty when unknown, e.g. after pickling).
    """

    def __init__(self, message: str, items: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.items = tuple(items)


def loader_reason(error: BaseException) -> str:
    """The informative line of a model loader's error, for a ModelFileError message: torch's
    weights_only refusal (anywhere in the chain of causes: libraries re-raise it) names the
    offending global on its "WeightsUnpickler error" line, whose first line only suggests
    loading unsafely; otherwise the first line of `error`."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        for line in str(cause).splitlines():
            if line.strip().startswith("WeightsUnpickler error:"):
                return line.strip().split(" Please use")[0]
        cause = cause.__cause__ or cause.__context__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
