"""A sum of floats that is exact until the final rounding, whatever the order the values arrive in."""

from __future__ import annotations

import math


class ExactSum:
    """A running sum of floats that is exact until the final rounding, so it does not depend on the order the
    values arrive in (Shewchuk's algorithm, as math.fsum): rollouts finish in any order, resumed ones first,
    and the mean reward must not change with that. Usually one partial; adding one costs well under a us.

    Values are kept scaled down by 2**64 (exact: a power of two), so that rewards near the float maximum (1e308)
    never overflow a partial: an overflowed one turned every later partial into nan, one more per value, and the
    sum quadratic (20,000 rollouts at 1e308 took 49 s)."""

    SCALE = 2.0**-64

    def __init__(self) -> None:
        self._partials: list[float] = []

    def add(self, x: float) -> None:
        x *= self.SCALE
        partials = self._partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low:
                partials[i] = low
                i += 1
            x = high
        partials[i:] = [x]

    @property
    def value(self) -> float:
        """The sum (inf when it is beyond the float range)."""
        return math.fsum(self._partials) / self.SCALE

    def mean(self, count: int) -> float:
        """The sum divided by `count`, scaled back only after the division (a mean of 1e308s is 1e308)."""
        return math.fsum(self._partials) / count / self.SCALE
