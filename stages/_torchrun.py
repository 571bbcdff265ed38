"""The train stage's relaunch under torchrun (`train.nproc > 1`): glue that starts processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from stages._device import runtime
from tost import distributed
from tost.config import TrainConfig
from tost.errors import TrainingError
from tost.runtime import Runtime


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


def launched(
    cfg: TrainConfig, module: str, args: Sequence[str] | None
) -> tuple[distributed.Launch | None, Runtime] | None:
    """This process's launch (None outside torchrun) and runtime, or None once it has run `module`.

    With `train.nproc > 1` a process that is not a torchrun worker yet runs `module` again under
    torchrun (after `runtime` has checked the device settings) and returns None when that ends.
    """
    launch = distributed.from_env()
    nproc = cfg.nproc if launch is None else launch.local_world_size
    rt = runtime(cfg, nproc)
    if launch is None and nproc > 1:
        relaunch(nproc, module, args)
        return None
    return launch, rt
