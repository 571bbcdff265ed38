"""The train stage's relaunch under torchrun (`train.nproc > 1`): glue that starts processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from tost.errors import TrainingError


def torchrun_command(nproc: int, module: str, args: Sequence[str]) -> list[str]:
    """`python -m torch.distributed.run` for one node with `nproc` workers running `python -m module`."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
        "-m", module, *args,
    ]  # fmt: skip


def relaunch(nproc: int, module: str, args: Sequence[str] | None) -> None:
    """Run `module` again under torchrun with `nproc` workers and wait; a failure is one clear error.

    `args` None: this process's own command-line arguments, as `argparse` reads them then. The
    workers print their own error lines; this adds the one that says the launch as a whole failed, so
    the stage still ends with a single `error:` line of its own and a non-zero exit code.
    """
    args = sys.argv[1:] if args is None else args
    rc = subprocess.run(torchrun_command(nproc, module, args), check=False).returncode
    if rc != 0:
        raise TrainingError(
            f"train.nproc={nproc}: a torchrun worker failed (exit code {rc}); its error is printed above"
        )
