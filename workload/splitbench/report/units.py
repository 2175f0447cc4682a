"""Human units for the report's tables: KiB/MiB, ms/s, percent; 'n/a' instead of NaN."""
from __future__ import annotations

import math


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def size(v, per: str = "") -> str:
    """Bytes in B, KiB, MiB or GiB (binary prefixes), 4 significant digits."""
    if missing(v):
        return "n/a"
    v = float(v)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= scale:
            return f"{v / scale:,.4g} {unit}{per}"
    return f"{v:,.4g} B{per}" if v != int(v) else f"{int(v):,} B{per}"


def duration(v) -> str:
    if missing(v):
        return "n/a"
    v = float(v)
    if abs(v) >= 120:
        return f"{v / 60:,.3g} min"
    if abs(v) >= 1:
        return f"{v:,.3g} s"
    if abs(v) >= 1e-3:
        return f"{v * 1e3:,.3g} ms"
    return f"{v * 1e6:,.3g} µs"


def percent(v) -> str:
    return "n/a" if missing(v) else f"{100 * float(v):.1f}%"


def number(v) -> str:
    if missing(v):
        return "n/a"
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def with_spread(fmt, mean, low, high, n) -> str:
    """'mean ± half-width of the 95% interval' in the metric's unit; the plain mean when one
    repeat (no interval); n/a when not measured."""
    if missing(mean):
        return "n/a"
    if missing(low) or missing(high) or n is None or n < 2:
        return fmt(mean)
    half = (float(high) - float(low)) / 2
    if half == 0:
        return fmt(mean) + " ± 0"
    return f"{fmt(mean)} ± {fmt(half)}"
