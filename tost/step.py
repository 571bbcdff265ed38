"""One training (or evaluation) step as one function of device tensors, eager or replayed as a CUDA graph.

On a GPU a small network's step is launch-bound: hundreds of kernels of a few microseconds each, the
GPU idle while Python issues them. Captured once as a CUDA graph, the whole step (batch gather,
crop/flip/normalise, forward under autocast, loss, backward, SGD, mask enforcement, the per-epoch sums)
is one launch. What a replay may not do is read Python values, so everything that changes between
steps or epochs lives in device tensors: the batch's indices and augmentation draws are copied into
the graph's static inputs before each replay, and the LR, the soft-activation blend, the ghost-skip
gate and the smoothing α are device tensors the tricks and `sgd_step` read. A graph is captured again
only when the computation's structure changes (`Trick.graph_key`: the ghost jumps are dropped).

The same function runs uncaptured on the CPU, where it is the training loop, and for the last,
shorter batch of an epoch, which a fixed-shape graph cannot take. `Graphed` does the bookkeeping; the
backend (`CudaGraphs`, or an imitation in the tests) does the capturing.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tost import distributed
from tost.errors import first_line
from tost.loader import DeviceLoader
from tost.runtime import Runtime

log = logging.getLogger(__name__)


@torch.no_grad()
def sgd_step(opt: torch.optim.SGD, lr: float | Tensor) -> None:
    """Torch's SGD update (momentum, dampening, Nesterov, weight decay), with the LR a float or a tensor.

    A float gives exactly torch's own `step()` (the same elementwise operations in the same order, so
    CPU results are unchanged bit for bit); a device tensor lets a captured graph read each epoch's
    LR. Parameters without a gradient (frozen ghost jumps) are skipped, as torch does. The momentum
    buffers live in `opt.state`, so checkpoints and resume see the optimizer they always saw.
    """
    for group in opt.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        wd, momentum = group["weight_decay"], group["momentum"]
        if group.get("maximize", False):
            grads = torch._foreach_neg(grads)
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum != 0:
            bufs = _momentum(opt, params, grads, momentum, group["dampening"])
            grads = torch._foreach_add(grads, bufs, alpha=momentum) if group["nesterov"] else bufs
        if isinstance(lr, Tensor):  # one fused multiply: the LR tensor has the grads' dtype (fast path)
            torch._foreach_sub_(params, torch._foreach_mul(grads, lr))
        else:
            torch._foreach_add_(params, grads, alpha=-lr)


def _momentum(
    opt: torch.optim.SGD, params: list[Tensor], grads: list[Tensor], momentum: float, dampening: float
) -> list[Tensor]:
    """The momentum buffers after this step: b = momentum·b + (1 - dampening)·g, two fused ops.

    The first step makes each buffer a copy of its gradient, as torch does. Fused foreach ops run
    the same elementwise arithmetic as torch's per-parameter loop, so CPU results do not change;
    on a GPU they are two kernels for the whole network instead of two per parameter.
    """
    states = [opt.state[p] for p in params]
    if all("momentum_buffer" in s for s in states):
        bufs = [s["momentum_buffer"] for s in states]
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads, alpha=1 - dampening)
        return bufs
    bufs = []
    for state, g in zip(states, grads, strict=True):  # the first step (or a parameter new to training)
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.clone(g).detach()
        else:
            buf.mul_(momentum).add_(g, alpha=1 - dampening)
        bufs.append(buf)
    return bufs


class Backend(Protocol):
    """How a function is warmed up and captured; `capture` returns the replay."""

    def warm(self, fn: Callable[[], Any]) -> Any: ...

    def capture(self, fn: Callable[[], Any]) -> tuple[Callable[[], None], Any]: ...


class CudaGraphs:
    """`torch.cuda.CUDAGraph`: warm-up on a side stream, as the PyTorch docs ask, then capture."""

    def __init__(self) -> None:
        self.stream = torch.cuda.Stream()

    def warm(self, fn: Callable[[], Any]) -> Any:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = fn()
        torch.cuda.current_stream().wait_stream(self.stream)
        return out

    def capture(self, fn: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()  # recorded, not run: replay runs it
        return graph.replay, out


class Graphed:
    """`fn(*inputs)` run eagerly `warmup` times per structure key, then captured once and replayed.

    The inputs of a replay are copied into the static tensors the graph was captured with; a `None`
    input stays None. What `fn` returns at capture (tensors allocated by the graph, e.g. gradients)
    is kept alive as long as the graph. A capture that fails (an op CUDA graphs do not allow, a
    driver error) is logged once and the run goes on eagerly: slower, never wrong, and `failed` says
    why, for the metrics.
    """

    def __init__(self, fn: Callable[..., Any], backend: Backend, name: str, warmup: int = 2) -> None:
        # A bound method is held weakly: its owner holds this object, and a strong reference back
        # would be a cycle that keeps a finished Trainer and its graphs alive until a `gc` pass.
        self._fn = weakref.WeakMethod(fn) if inspect.ismethod(fn) else lambda: fn
        self.backend, self.name, self.warmup = backend, name, warmup
        self.key: Hashable = None
        self.calls = 0
        self.captures = 0
        self.failed = ""  # why capturing failed; then every call runs eagerly
        self.replay: Callable[[], None] | None = None
        self.static: list[Tensor | None] = []
        self.outputs: Any = None

    def release(self) -> None:
        """Drop the graph, its memory and static tensors now; a later call warms up and captures anew."""
        self.key, self.replay, self.static, self.outputs = None, None, [], None

    @property
    def fn(self) -> Callable[..., Any]:
        fn = self._fn()
        assert fn is not None, f"{self.name}: the step's owner is gone"
        return fn

    def __call__(self, key: Hashable, inputs: Sequence[Tensor | None]) -> None:
        if self.failed:
            self.fn(*inputs)
            return
        if key != self.key:
            if self.replay is not None:
                log.info("%s: the model's structure changed; the CUDA graph is captured again", self.name)
            self.key, self.calls, self.replay, self.static, self.outputs = key, 0, None, [], None
        if self.replay is None and self.calls < self.warmup:
            self.calls += 1
            self.backend.warm(lambda: self.fn(*inputs))
            return
        if self.replay is None:
            self.static = [None if x is None else x.clone() for x in inputs]
            fn = self.fn
            try:
                self.replay, self.outputs = self.backend.capture(lambda: fn(*self.static))
            except Exception as err:  # whatever the capture raised, the eager step is right
                self.failed = first_line(err)
                log.warning("%s: capturing the step as a CUDA graph failed (%s); continuing without",
                            self.name, self.failed)  # fmt: skip
                self.replay, self.static, self.outputs = None, [], None
                fn(*inputs)  # nothing ran during the capture: this step runs now
                return
            self.captures += 1
        else:
            for s, x in zip(self.static, inputs, strict=True):
                if s is not None:
                    s.copy_(x)
        self.replay()


def at_least_fp32(logits: Tensor) -> Tensor:
    """Losses in float32 when autocast gave bf16 logits; float64 runs (tests) stay float64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


class Evaluation:
    """Mean cross-entropy and top-1 accuracy (%) over one split, one host read at the end.

    Full batches run as a CUDA graph when a backend is given (captured again with the model's
    structure); the sums stay on the device until the end.
    """

    def __init__(self, model: nn.Module, loader: DeviceLoader, rt: Runtime, graphs: Backend | None) -> None:
        self.model, self.loader, self.rt = model, loader, rt
        self.loss = torch.zeros((), device=rt.device)
        self.correct = torch.zeros((), device=rt.device, dtype=torch.long)
        self.graph = Graphed(self._step, graphs, "evaluation") if graphs is not None else None

    @torch.no_grad()
    def _step(self, idx: Tensor) -> None:
        x, y = self.loader.batch(idx)
        with self.rt.autocast():
            logits = self.model(x)
        self.loss += F.cross_entropy(at_least_fp32(logits), y, reduction="sum")
        self.correct += (logits.argmax(1) == y).sum()

    def __call__(self, key: Hashable) -> tuple[float, float]:
        self.model.eval()
        self.loss.zero_()
        self.correct.zero_()
        for idx, _ in self.loader.plan():
            if self.graph is not None and len(idx) == self.loader.batch_size:
                self.graph(key, [idx])
            elif len(idx):  # an empty shard of a multi-process run (a host-known shape: no sync)
                self._step(idx)
        loss, correct = self.loss, self.correct
        if self.rt.world_size > 1:  # every rank saw its shard of the split: sum them
            loss, correct = distributed.all_sum(torch.stack([loss.double(), correct.double()])).unbind()
        n = self.loader.num_images
        return float(loss) / n, 100.0 * float(correct) / n


class EpochSums:
    """An epoch's loss and accuracy sums, kept on the device so that a step never waits for the host.

    The first non-finite step is remembered too (-1: none), from a device step counter, so that a
    captured step can record it; everything is read once, at the end of the epoch.
    """

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.bad_step = torch.full((), -1, device=device, dtype=torch.long)
        self.step = torch.zeros((), device=device, dtype=torch.long)

    def reset(self) -> None:
        for total in (self.loss, self.correct, self.step):
            total.zero_()
        self.bad_step.fill_(-1)

    def record(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        loss = loss.detach()
        first = (self.bad_step < 0) & ~torch.isfinite(loss)
        self.bad_step.copy_(torch.where(first, self.step, self.bad_step))
        self.loss += loss * y.numel()
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.step += 1

    def read(self, images: int, world_size: int) -> tuple[float, float, int]:
        """Mean loss, accuracy (%) and the first bad step (-1: none), over every rank of a run."""
        loss, correct, bad = self.loss, self.correct, self.bad_step
        if world_size > 1:  # once per epoch: the global sums, and the first bad step of any rank
            loss, correct = distributed.all_sum(torch.stack([loss.double(), correct.double()])).unbind()
            never = torch.iinfo(torch.long).max
            first = distributed.all_min(torch.where(bad < 0, never, bad))
            bad = torch.where(first == never, -1, first)
        return float(loss) / images, 100.0 * float(correct) / images, int(bad)
