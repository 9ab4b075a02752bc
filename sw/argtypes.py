"""argparse types with ranges for every numeric option of `mcnn` (sw/cli.py, sw/board.py).

A value outside its range is refused by argparse with a one-line message naming the option and
the range ("argument --n: expected an integer in 1..10000, got '-5'"), exit code 2.
"""
from __future__ import annotations

import argparse
import math


def int_range(lo: int, hi: int | None = None):
    """An integer in lo..hi (hi None: no upper bound); Python's int syntax (0x.. allowed)."""
    want = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"

    def parse(s: str) -> int:
        try:
            v = int(s, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}")
        return v
    parse.__name__ = want
    return parse


def float_range(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """A finite float in [lo, hi] (an open end excludes it; hi None: no upper bound)."""
    want = (f"a number {'>' if lo_open else '>='} {lo:g}"
            + (f" and {'<' if hi_open else '<='} {hi:g}" if hi is not None else ""))

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}") from None
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo)
        if hi is not None:
            ok = ok and (v < hi if hi_open else v <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}")
        return v
    parse.__name__ = want
    return parse


SEED = int_range(0, 2**32 - 1)          # numpy's seed range
POSITIVE = float_range(0.0, lo_open=True)
NON_NEGATIVE = float_range(0.0)
PROBABILITY = float_range(0.0, 1.0)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): `mcnn eval: error: argument --n: ...`,
    exit code 2; --help shows the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
