"""Schedules that move once per epoch: the epoch window every trick and GMP ramp over.

A window is written as fractions of the run, so the same params mean the same thing at 8 epochs and
at 182. It lives outside the tricks package so that mask methods (gmp) can use it without depending
on the tricks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Where a schedule moves, as fractions of the run: constant before `start`, done from `end` on."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"start/end must satisfy 0 <= start <= end <= 1, got {self.start}, {self.end}")

    def ramp(self, epoch: int, epochs: int) -> float:
        """Fraction of the way from 0 (before `start`) to 1 (from `end` on), linear in between.

        `epoch` is 0-based and counted at its start, so `epoch / epochs` is the fraction of training
        already done. A window with start == end is a hard switch.
        """
        t = epoch / epochs
        if t <= self.start:
            return 0.0 if t < self.end else 1.0
        if t >= self.end:
            return 1.0
        return (t - self.start) / (self.end - self.start)
