"""Small shape helpers shared by the model families."""
from __future__ import annotations


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``min_value``), going
    one step up if rounding would lose more than ``1 - round_limit`` of ``v``.  Same rule as
    timm's ``make_divisible`` (the MobileNet rounding), which decides many reference channel
    counts."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


__all__ = ["make_divisible"]
