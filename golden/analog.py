"""Ideal analog array: SL currents of a bit-serial slot from the cells' target conductances.

The interface `read(pe, bl_bits, rows) -> currents (uA)` is the one the device/crossbar model
of issue 3 implements with real device states; the golden datapath only ever sees the ADC codes.
`read_t(pe, sl_bits, rows, n_bl)` is the transposed read (golden/transposed_read.py): rows pulsed
from the SL side, the BL currents sensed, the same quantised cell currents summed.
"""
from __future__ import annotations

import numpy as np

from .cell import I_Q_UA, V_READ, current_units, level_conductance_us


class IdealArray:
    def __init__(self, levels: np.ndarray):
        """levels: (n_pe, n_rows, n_bl) target levels 0..7."""
        self.levels = np.asarray(levels)
        self.g_us = level_conductance_us(self.levels.astype(np.float32))  # (pe, row, bl)
        self.i_units = current_units(self.g_us * V_READ)  # read current of a pulsed cell, I_Q units
        self._i_ua = (self.i_units * I_Q_UA).astype(np.float32)  # exact: multiples of 2**-11 uA
        # Noise-free integer cell currents: golden.datapath.linear_weights may replace the
        # bit-serial reads of a layer by one exact matrix product (cached here per layer and ADC).
        self.exact_units = self.i_units
        self.linear_cache: dict = {}

    def read(self, pe: int, bl_bits: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
        """bl_bits (M, n_bl) of 0/1 -> SL currents (M, len(rows)) in uA (SL clamped at 0 V)."""
        i_cell = self._i_ua[pe, rows, :bl_bits.shape[-1]]
        return bl_bits.astype(np.float32) @ i_cell.T

    def read_t(self, pe: int, sl_bits: np.ndarray, rows: slice | np.ndarray, n_bl: int) -> np.ndarray:
        """sl_bits (M, len(rows)) of 0/1 on the SL rows `rows` -> BL currents (M, n_bl) in uA of
        BLs 0..n_bl-1 (BLs clamped at 0 V): the pulsed cells' read currents summed per BL."""
        i_cell = self._i_ua[pe, rows, :n_bl]
        return sl_bits.astype(np.float32) @ i_cell
