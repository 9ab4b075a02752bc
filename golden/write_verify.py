"""Closed-loop write-verify: the control algorithm of one cell (Yao 2020, Methods).

After each programming pulse the cell is read at 0.2 V; the loop stops when the read current is
within target +/- margin, or fails after `max_pulses` pulses (never silently: the result says so).
Identical pulses: SET when the current is below the target window, RESET when above.

Verify reads go through the ADC in its fine range: full scale 5.12 uA over 8 bits, one LSB =
20 nA, so a single cell (at most 4 uA) is resolved well inside the +/-100 nA margin. Targets,
margins and read values are all integer codes of this range: that is what the RTL sequencer
compares. The device physics (what a pulse does) is pluggable: `pulse(direction)` and `read()`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .adc import ADC
from .cell import G_MIN_US, G_STEP_US, V_READ

VERIFY_ADC = ADC(bits=8, full_scale_ua=5.12)   # 20 nA per code
VERIFY_LSB_NA = 20
MARGIN_NA = 100       # +/-100 nA for 8 levels (Yao 2020, Methods)
MAX_PULSES = 500      # Yao 2020, Methods


class Pulse(enum.IntEnum):
    SET = 0    # V_WL 1.8 V, V_BL 2.0 V, V_SL 0, 50 ns: conductance up
    RESET = 1  # V_WL 4.7 V, V_BL 0, V_SL 1.8 V, 50 ns: conductance down


def level_target_code(level: int) -> int:
    """Verify code of the target read current of level 0..7 (0.5 .. 4.0 uA -> 25 .. 200)."""
    i_na = (G_MIN_US + G_STEP_US * level) * V_READ * 1000.0
    return int(round(i_na / VERIFY_LSB_NA))


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    pulses: int        # programming pulses applied
    reads: int         # verify reads made (pulses + 1)
    final_code: int    # last verify read


def write_verify(read, pulse, target_code: int, margin_code: int = MARGIN_NA // VERIFY_LSB_NA,
                 max_pulses: int = MAX_PULSES) -> VerifyResult:
    """Run the loop: read(); while outside [target - margin, target + margin]: pulse, read.

    read() -> int verify code; pulse(Pulse) applies one pulse. Returns after success or after
    max_pulses pulses without reaching the window (ok=False).
    """
    code = int(read())
    pulses = 0
    while abs(code - target_code) > margin_code:
        if pulses == max_pulses:
            return VerifyResult(False, pulses, pulses + 1, code)
        pulse(Pulse.SET if code < target_code else Pulse.RESET)
        pulses += 1
        code = int(read())
    return VerifyResult(True, pulses, pulses + 1, code)
