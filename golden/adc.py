"""ADC model: the boundary between the analog array and the digital datapath.

code = clip(floor(I / LSB + 1/2), 0, 2**bits - 1),  LSB = full_scale / 2**bits.
Round half up, saturate at both ends. The default full scale, 2**bits x 0.5 uA, makes one LSB
the read current of one 2.5 uS conductance step at 0.2 V, so ideal cells give exact codes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cell import I_UNIT_UA


@dataclass(frozen=True)
class ADC:
    bits: int = 8
    full_scale_ua: float | None = None  # None: 2**bits * I_UNIT_UA

    def __post_init__(self):
        if not 1 <= self.bits <= 16:
            raise ValueError(f"ADC bits must be in 1..16, got {self.bits}")
        if self.full_scale_ua is not None and not self.full_scale_ua > 0:
            raise ValueError(f"ADC full scale must be > 0 uA, got {self.full_scale_ua}")

    @property
    def lsb_ua(self) -> float:
        fs = self.full_scale_ua if self.full_scale_ua is not None else (1 << self.bits) * I_UNIT_UA
        return fs / (1 << self.bits)

    @property
    def max_code(self) -> int:
        return (1 << self.bits) - 1

    def convert(self, current_ua, dtype=np.uint16):
        """Currents (uA, any shape) -> codes. dtype float32 keeps the (exact, integer-valued) codes
        in floating point for the vectorised datapath; the values are identical."""
        cur = np.asarray(current_ua)
        ft = np.float32 if dtype == np.float32 else np.float64
        c = np.divide(np.atleast_1d(cur), ft(self.lsb_ua), dtype=ft)  # divide: exact half-way ties
        c += ft(0.5)
        np.floor(c, out=c)
        np.clip(c, 0, self.max_code, out=c)
        c = c.reshape(cur.shape)
        return c if dtype == np.float32 else c.astype(dtype)
