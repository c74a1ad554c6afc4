"""How the tables write numbers: a value without its leading zero and its interval,
`.215 [.189, .243]`, bold when it is the best in its column, and p-values; '-' for what is not
there. Shared by the domain baseline table and every section of the report."""
from __future__ import annotations

import math


def num(v, digits: int = 3) -> str:
    """A number without its leading zero (.215, -.050, 1.020); '-' for None / NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = f"{v:.{digits}f}"
    if s.startswith("0."):
        return s[1:]
    if s.startswith("-0."):
        return "-" + s[2:]
    return s


def interval(ci, digits: int = 3) -> str:
    """` [low, high]` in the cells' number style; "" when there is no interval."""
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{num(ci[0], digits)}, {num(ci[1], digits)}]"


def cell(v, ci=None, digits: int = 3, bold: bool = False) -> str:
    """One metric cell: the value (bold if best) and its interval, e.g. `.215 [.189, .243]`."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = num(v, digits)
    return (f"**{s}**" if bold else s) + interval(ci, digits)


def p_cell(p) -> str:
    """A p-value as a table writes it: `.008`, `<.001`; '-' for None / NaN."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return "<.001" if p < 0.001 else num(p, 3)
