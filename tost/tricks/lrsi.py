"""Layer-wise rescaled sparse initialisation (LRsI): GradInit on the masked network.

ToST (Jaiswal et al., ICML 2022) rescales each layer of the sparse initialisation, because
pruning 90 % of a tensor's weights leaves its scale far from what the dense init was tuned for. It
uses GradInit (Zhu et al., NeurIPS 2021): learn one positive scale α per weight tensor so that one
virtual optimiser step, θ − η·d, lowers the loss as much as possible, subject to ‖∇L‖ ≤ γ. Scales
multiply whole tensors, so pruned weights stay exactly 0.

Deliberate differences from the original code: GradInit runs after masking (its "type 2", the one
behind the reported numbers) and the virtual step is masked too (pruned entries of d are 0, and
‖g‖ is the norm of the masked gradient), so the objective is evaluated on the sparse network rather
than on a densified lookahead; BN running statistics are left exactly as they were; the defaults
are the README's (lr 1e-2, γ 1, normalised direction), not the code's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from tost.errors import TrainingError
from tost.sparsity.mask import Mask
from tost.tricks.base import BatchFn, Trick, TrickEntry

BETAS, EPS = (0.9, 0.999), 1e-8
SCALED = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class Options:
    """`tricks.lrsi`: GradInit's knobs, named as upstream's `--gradinit-*` flags."""

    alg: Literal["sgd", "adam"]
    lr: float
    iters: int
    eta: float
    gamma: float
    min_scale: float
    grad_clip: float
    normalize_grad: bool

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.eta <= 0 or self.gamma <= 0:
            raise ValueError("lr, eta and gamma must be > 0")
        if self.iters < 0 or self.min_scale < 0 or self.grad_clip < 0:
            raise ValueError("iters, min_scale and grad_clip must be >= 0")


def scaled_params(model: nn.Module, min_scale: float) -> list[tuple[str, nn.Parameter, float]]:
    """(name, parameter, lower bound of its scale) in module order: weights ≥ min_scale, biases ≥ 0."""
    out = []
    for mname, m in model.named_modules():
        if isinstance(m, SCALED):
            for attr, floor in (("weight", min_scale), ("bias", 0.0)):
                p = getattr(m, attr, None)
                if isinstance(p, nn.Parameter):
                    out.append((f"{mname}.{attr}" if mname else attr, p, floor))
    return out


class ScaleAdam:
    """GradInit's RescaleAdam: one scalar Adam per tensor, p kept at ‖p‖ = α·‖p₀‖.

    Constraint and objective steps have their own first moments and step counts (they pull in
    different directions) but share the second moment; zero-norm tensors (BN β, fully pruned
    layers) are never touched. Only the lower bound of α is enforced, as upstream.
    """

    def __init__(self, params: list[Tensor], floors: list[float], lr: float, clip: float) -> None:
        self.params, self.lr, self.clip = params, lr, clip
        # float32 at least (bf16 weights), float64 in float64 runs: the scales are as precise as the net
        self.dtype = torch.promote_types(params[0].dtype, torch.float32)
        with torch.no_grad():
            self.n0 = torch.stack([p.detach().to(self.dtype).norm() for p in params])
        self.floor = torch.tensor(floors, device=self.n0.device, dtype=self.dtype)
        self.alpha = torch.ones_like(self.n0)
        self.m = {True: torch.zeros_like(self.n0), False: torch.zeros_like(self.n0)}
        self.v = torch.zeros_like(self.n0)
        self.steps = {True: 0, False: 0}

    @torch.no_grad()
    def step(self, grads: list[Tensor], constraint: bool) -> None:
        norms = torch.stack([p.to(self.dtype).norm() for p in self.params])
        live = (self.n0 > 0) & (norms > 0)
        dots = torch.stack(
            [(g.to(self.dtype) * p.to(self.dtype)).sum() for g, p in zip(grads, self.params, strict=True)]
        )
        g = dots * self.n0 / norms.clamp_min(1e-30)  # dL/dα by the chain rule through p = α·n0·p/‖p‖
        if self.clip > 0:
            g = g.clamp(-self.clip, self.clip)
        self.steps[constraint] += 1
        m = self.m[constraint]
        m.copy_(torch.where(live, BETAS[0] * m + (1 - BETAS[0]) * g, m))
        self.v.copy_(torch.where(live, BETAS[1] * self.v + (1 - BETAS[1]) * g * g, self.v))
        bc1 = 1 - BETAS[0] ** self.steps[constraint]
        bc2 = 1 - BETAS[1] ** (self.steps[True] + self.steps[False])
        new = (self.alpha - self.lr / bc1 * m / ((self.v / bc2).sqrt() + EPS)).maximum(self.floor)
        self.alpha.copy_(torch.where(live, new, self.alpha))
        factor = torch.where(live, self.alpha * self.n0 / norms.clamp_min(1e-30), torch.ones_like(norms))
        for p, f in zip(self.params, factor.unbind(), strict=True):
            p.mul_(f.to(p.dtype))


def grad_norm(grads: list[Tensor], alg: str) -> Tensor:
    """L2 norm for sgd, L1 for adam (whose direction is the sign), as upstream."""
    if alg == "adam":
        return sum(g.abs().sum() for g in grads)
    return torch.sqrt(sum((g * g).sum() for g in grads))


def direction(grads: list[Tensor], norm: Tensor, alg: str, normalize: bool) -> list[Tensor]:
    """The (detached) virtual-step direction d; masked because the gradients already are."""
    if alg == "adam":
        return [g.detach().sign() for g in grads]
    scale = norm.detach().clamp_min(1e-12) if normalize else 1.0
    return [g.detach() / scale for g in grads]


def _grads(value: Tensor, params: tuple[Tensor, ...]) -> list[Tensor]:
    """Gradients of `value` w.r.t. `params`, with zeros for tensors `value` does not depend on."""
    return list(torch.autograd.grad(value, params, allow_unused=True, materialize_grads=True))


def cycle(batches: BatchFn) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches forever, restarting the training split when it runs out (GradInit may need more)."""
    while True:
        empty = True
        for batch in batches():
            empty = False
            yield batch
        if empty:
            raise TrainingError("tricks.lrsi: the training split yields no batches")


class Lrsi(Trick):
    """Run mask-aware GradInit once in `prepare`; `scales`, `history` and `metrics()` report it."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.scales: dict[str, float] = {}
        self.history: list[tuple[float, bool]] = []  # (gradient norm, constraint step taken?)
        self.seconds = 0.0

    def prepare(self, model: nn.Module, mask: Mask, batches: BatchFn) -> nn.Module:
        start, o = time.perf_counter(), self.options
        names, params, floors = zip(*scaled_params(model, o.min_scale), strict=True)
        keep = [mask.tensors[n].to(p.device, p.dtype) if n in mask.tensors else None
                for n, p in zip(names, params, strict=True)]  # fmt: skip
        opt = ScaleAdam(list(params), list(floors), o.lr, o.grad_clip)
        draw, self.history = cycle(batches), []
        with batch_stats_only(model):
            for _ in range(o.iters):
                (x0, y0), (x1, y1) = next(draw), next(draw)
                loss = F.cross_entropy(model(torch.cat([x0, x1])), torch.cat([y0, y1]))
                grads = torch.autograd.grad(loss, params, create_graph=True)
                grads = [g if k is None else g * k for g, k in zip(grads, keep, strict=True)]
                norm = grad_norm(grads, o.alg)
                constraint = float(norm.detach()) > o.gamma
                if constraint:  # lower ‖g‖ itself: a second-order step
                    opt.step(_grads(norm, params), constraint=True)
                else:  # first-order: ∂[L(θ - η·d)/η]/∂θ with d detached
                    d = direction(grads, norm, o.alg, o.normalize_grad)
                    x2, y2 = next(draw)
                    ahead = {n: p - o.eta * di for n, p, di in zip(names, params, d, strict=True)}
                    logits = functional_call(model, ahead, (torch.cat([x0, x2]),))
                    obj = F.cross_entropy(logits, torch.cat([y0, y2])) / o.eta
                    opt.step(_grads(obj, params), constraint=False)
                self.history.append((float(norm.detach()), constraint))
        live = (opt.n0 > 0).tolist()
        self.scales = {n: a for n, a, ok in zip(names, opt.alpha.tolist(), live, strict=True) if ok}
        self.seconds = time.perf_counter() - start
        return model

    def metrics(self) -> dict[str, Any]:
        s = list(self.scales.values()) or [1.0]
        return {
            "lrsi_scale_min": min(s),
            "lrsi_scale_max": max(s),
            "lrsi_scale_mean": sum(s) / len(s),
            "lrsi_constraint_steps": sum(c for _, c in self.history),
            "lrsi_iters": len(self.history),
            "lrsi_seconds": self.seconds,
        }


@contextmanager
def batch_stats_only(model: nn.Module) -> Iterator[None]:
    """Eval mode except BN, which uses batch statistics without touching its running buffers."""
    saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in model.modules()]
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.track_running_stats = False
    try:
        yield
    finally:
        for m, training, track in saved:
            m.training = training
            if track is not None:
                m.track_running_stats = track


TRICK = TrickEntry(options=Options, make=Lrsi)
