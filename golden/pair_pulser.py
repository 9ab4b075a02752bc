"""Sign-rule programming of a differential pair: one identical pulse on each device (Bennett 2019).

RTL counterpart: rtl/pair_pulser.py. A command (golden.update.ProgramCommand) with d_code > 0 raises
the weight G+ - G-: the lowered device first, as golden.hybrid.PairProgrammer does - one RESET
pulse on G- (row_pos + 1), then one SET pulse on G+ (row_pos); d_code < 0 the mirror image (RESET
G+, then SET G-). Push-pull: both devices move on every update, so the device asymmetry (zeta)
acts on every update (docs/bennett.md). Blind: no verify read, no pair rule, no window check (the
device model clips at each cell's own bounds; stuck cells take the pulse and do not move).
"""
from __future__ import annotations

from dataclasses import dataclass

from .devices import RESET, SET


def pulse_plan(cmd) -> list[tuple[int, int, int, int]]:
    """[(pe, row, bl, direction), ...]: the two pulses of a command, in the order they are sent."""
    pos, neg = (cmd.pe, cmd.row_pos, cmd.bl), (cmd.pe, cmd.row_pos + 1, cmd.bl)
    up, down = (pos, neg) if cmd.d_code > 0 else (neg, pos)
    return [(*down, RESET), (*up, SET)]


@dataclass
class PairPulser:
    """Carries out sign-rule commands on a crossbar (module docstring)."""
    xb: object
    commands: int = 0
    pulses: int = 0

    def apply(self, cmd) -> int:
        if not cmd.d_code:
            raise ValueError("pair pulser: a command with d_code 0 (the sign rule never makes one)")
        for pe, row, bl, direction in pulse_plan(cmd):
            self.pulses += self.xb.open_loop(pe, row, bl, direction, 1)
        self.commands += 1
        return 2
