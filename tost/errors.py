"""One error family, so a stage can turn any user mistake into a single clear line.

Library code raises only these for problems a user can cause (bad params, missing files,
mismatched masks); anything else is a bug and keeps its traceback.
"""


def first_line(err: BaseException) -> str:
    """`Type: first line of the message`: an error from elsewhere, shown in one of our one-line errors.

    A first line that only announces the reason (torch's `Error(s) in loading state_dict for X:`)
    takes the next line with it, or the one line would say nothing.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    head = lines[0] if lines else ""
    if head.endswith(":") and len(lines) > 1:
        head = f"{head} {lines[1]}"
    return f"{type(err).__name__}: {head}"


class TostError(Exception):
    """Base of every error a user can fix; its message says what is wrong and how to fix it."""


class ConfigError(TostError):
    """params.yaml is malformed: unknown key, wrong type, out-of-range or unknown name."""


class DataError(TostError):
    """A dataset is missing, corrupted, or cannot be split as asked."""


class MaskError(TostError):
    """A mask does not fit the model, is not binary, or was violated during training."""


class CheckpointError(TostError):
    """A checkpoint or tensor file is unreadable, unsafe, or from another architecture."""


class TrainingError(TostError):
    """Training cannot go on: non-finite loss, bad device request."""
