"""A SIGKILL at an exact point, for the kill-and-rerun tests (no sleeps, no timing).

Python imports this module at start-up only in a test's subprocess whose PYTHONPATH names this folder
(`tests.stages.conftest.kill_env`). With TOST_KILL_AFTER=NAME:NTH:FORWARDS the process kills itself
with SIGKILL at the FORWARDS-th module forward after the NTH time a file named NAME was renamed into
place, which is how tost writes every file: a kill in the middle of the next epoch, always the same one.
FORWARDS=0 kills right after that write (between one output file and the next).
"""

import os
import signal

_spec = os.environ.get("TOST_KILL_AFTER")
if _spec:
    import torch.nn.modules.module as _module

    _name, _nth, _forwards = _spec.rsplit(":", 2)
    _state = {"writes": 0, "forwards": -1}
    _replace = os.replace

    def _noting_replace(src, dst, *args, **kwargs):
        _replace(src, dst, *args, **kwargs)
        if os.path.basename(os.fspath(dst)) == _name:
            _state["writes"] += 1
            if _state["writes"] == int(_nth):
                if int(_forwards) == 0:
                    os.kill(os.getpid(), signal.SIGKILL)
                _state["forwards"] = 0

    def _count_forward(_module_, _args, _output) -> None:
        if _state["forwards"] >= 0:
            _state["forwards"] += 1
            if _state["forwards"] == int(_forwards):
                os.kill(os.getpid(), signal.SIGKILL)

    os.replace = _noting_replace
    _module.register_module_forward_hook(_count_forward)
