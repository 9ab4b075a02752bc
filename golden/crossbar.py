"""Crossbar model of the board: 8 PEs of 128 SL x 16 BL 1T1R cells with per-device state.

`Crossbar.read(pe, bl_bits, rows)` is the read interface of golden.analog.IdealArray (as is the
transposed `read_t`, golden/transposed_read.py): SL currents (uA) of one bit-serial slot, every
driven cell contributing I = G * V_READ (SL clamped at 0 V, BLs without a pulse contribute nothing).
golden.datapath.Datapath(..., array=crossbar) runs inference
through it unchanged; the ADC and everything after it stay the golden integer datapath.

Programming goes through golden.write_verify.write_verify (the closed-loop algorithm the RTL
sequencer implements): `program_cell` gives it a verify read (the cell current through the verify
ADC, 20 nA codes) and a pulse function (the device model of golden/devices.py). Open-loop
programming (`open_loop`) applies a number of identical pulses without verify.

Randomness: one seed per board; independent streams for the fresh array (device-to-device
parameters, defects, initial state), programming (cycle-to-cycle noise, relaxation) and reads
(read noise), so the same seed and the same sequence of operations give the same result.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from .cell import I_Q_UA, V_READ, current_units
from .devices import NA_PER_US, RESET, SET, DeviceParams, draw_cells, make_stepper, preset
from .mapping import N_BL, N_PE, N_ROWS
from .write_verify import VERIFY_ADC, VERIFY_LSB_NA, VerifyResult, write_verify

_NOISE_BLOCK = 1 << 15


def verify_code(i_ua: float) -> int:
    """One verify conversion (golden.write_verify.VERIFY_ADC) of a scalar current: the same
    arithmetic as VERIFY_ADC.convert (float64 divide, + 1/2, floor, saturate), without NumPy's
    per-call overhead (tests check the two agree)."""
    c = math.floor(i_ua / _VERIFY_LSB + 0.5)
    return 0 if c < 0 else _VERIFY_MAX if c > _VERIFY_MAX else int(c)


_VERIFY_LSB = VERIFY_ADC.lsb_ua
_VERIFY_MAX = VERIFY_ADC.max_code


class Crossbar:
    def __init__(self, device: str | DeviceParams = "yao2020", seed: int = 0, n_pe: int = N_PE,
                 n_rows: int = N_ROWS, n_bl: int = N_BL, **overrides):
        self.p = preset(device, **overrides)
        self.seed = seed
        self.shape = (n_pe, n_rows, n_bl)
        s_init, s_prog, s_read = np.random.SeedSequence(seed).spawn(3)
        cells = draw_cells(self.p, self.shape, np.random.default_rng(s_init))
        self.lo, self.hi, self.k = cells.lo, cells.hi, cells.k
        self.stuck, self.nu_na, self.tail = cells.stuck, cells.nu_na, cells.tail
        self.g = cells.g0.astype(np.float64)            # the state: conductance, uS
        self.g_init = self.g.copy()
        self.t_s = 0.0                                   # board time (s) for drift
        self.t_prog = np.zeros(self.shape)               # time each cell was last programmed
        self._prog_rng = np.random.default_rng(s_prog)
        self._read_rng = np.random.default_rng(s_read)
        self._buf: list[float] = []
        self._pos = 0
        self._step = make_stepper(self.p)
        self._cur = None                                 # cached float32 currents
        self._exact = None                               # (currents, units, cache): see exact_units
        self.margin_code = int(self.p.margin_na // VERIFY_LSB_NA)
        self.max_pulses = int(self.p.max_pulses)
        # set_pulses + reset_pulses = pulses, by direction (golden/activity.py)
        self.counters = {"pulses": 0, "verify_reads": 0, "program_ops": 0, "failed_ops": 0,
                         "set_pulses": 0, "reset_pulses": 0}

    # ------------------------------------------------------------------ state access
    @property
    def n_pe(self):
        return self.shape[0]

    def currents_ua(self) -> np.ndarray:
        """Read current of every cell (uA, float32), what an inference read sums: G * V_READ
        quantised to I_Q (golden.cell), so SL sums are exact and the co-simulation's HDL array
        model reproduces them bit for bit."""
        if self._cur is None:
            self._cur = (self.i_units() * I_Q_UA).astype(np.float32)
        return self._cur

    @property
    def exact_units(self):
        """Integer cell currents (I_Q units) when reads are noise free, else None: golden.datapath
        may then replace slot reads by exact tables or one product (cached in linear_cache, which
        lives as long as this state: any state change replaces the currents object)."""
        if self.p.read_noise_rel > 0:
            return None
        cur = self.currents_ua()
        ex = getattr(self, "_exact", None)
        if ex is None or ex[0] is not cur:
            self._exact = ex = (cur, self.i_units(), {})
        return ex[1]

    @property
    def linear_cache(self) -> dict:
        """The datapath's tables of the current state (a throw-away dict while reads are noisy)."""
        return {} if self.exact_units is None else self._exact[2]

    def i_units(self) -> np.ndarray:
        """Read current of every cell in integer units of I_Q (what the HDL array model holds)."""
        return current_units(self.g * V_READ)

    def current_na(self, pe, row, bl) -> float:
        return float(self.g[pe, row, bl]) * NA_PER_US

    def set_conductance(self, g_us: np.ndarray):
        """Overwrite the state (tests, ideal boards). Stuck cells keep their value."""
        g = np.broadcast_to(np.asarray(g_us, dtype=np.float64), self.shape)
        self.g = np.where(self.stuck > 0, self.g, g)
        self._cur = None

    def __getstate__(self):
        d = self.__dict__.copy()
        d.pop("_step", None)
        d["_cur"] = d["_exact"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._step = make_stepper(self.p)

    def copy(self) -> "Crossbar":
        """An independent board with the same state and random streams."""
        return copy.deepcopy(self)

    def reseed(self, seed: int):
        """New programming and read-noise streams (same cells, same state): a copy that must not
        share the original's future noise (golden.hybrid.choose_step)."""
        _, s_prog, s_read = np.random.SeedSequence([int(seed), 0x5EED]).spawn(3)
        self._prog_rng = np.random.default_rng(s_prog)
        self._read_rng = np.random.default_rng(s_read)
        self._buf, self._pos = [], 0

    # ------------------------------------------------------------------ inference read
    def read(self, pe: int, bl_bits: np.ndarray, rows) -> np.ndarray:
        """bl_bits (M, n) of 0/1 on BL 0..n-1 -> SL currents (M, len(rows)) in uA."""
        i_cell = self.currents_ua()[pe, rows, :bl_bits.shape[-1]]
        b = bl_bits.astype(np.float32)
        cur = b @ i_cell.T
        if self.p.read_noise_rel > 0:
            # independent N(0, (r I)^2) per driven cell: the SL current has variance sum_j b_j (r I_j)^2
            var = b @ (np.float32(self.p.read_noise_rel) * i_cell).T ** 2
            cur = cur + np.sqrt(var) * self._read_rng.standard_normal(cur.shape, dtype=np.float32)
        return cur

    def read_t(self, pe: int, sl_bits: np.ndarray, rows, n_bl: int) -> np.ndarray:
        """Transposed read (golden/transposed_read.py): sl_bits (M, len(rows)) of 0/1 pulse the SL
        rows `rows` -> BL currents (M, n_bl) in uA of BLs 0..n_bl-1 (held at 0 V); read noise as
        in `read`, independent per pulsed cell."""
        i_cell = self.currents_ua()[pe, rows, :n_bl]
        b = sl_bits.astype(np.float32)
        cur = b @ i_cell
        if self.p.read_noise_rel > 0:
            var = b @ (np.float32(self.p.read_noise_rel) * i_cell) ** 2
            cur = cur + np.sqrt(var) * self._read_rng.standard_normal(cur.shape, dtype=np.float32)
        return cur

    # ------------------------------------------------------------------ programming
    def _normal(self) -> float:
        if self._pos >= len(self._buf):
            self._buf = self._prog_rng.standard_normal(_NOISE_BLOCK).tolist()
            self._pos = 0
        z = self._buf[self._pos]
        self._pos += 1
        return z

    def _read_code(self, g: float) -> int:
        i = g * V_READ
        if self.p.read_noise_rel > 0:
            i *= 1.0 + self.p.read_noise_rel * float(self._read_rng.standard_normal())
        return verify_code(i)

    def verify_read(self, pe: int, row: int, bl: int) -> int:
        """One verify read of one cell (20 nA codes)."""
        self.counters["verify_reads"] += 1
        return self._read_code(float(self.g[pe, row, bl]))

    def _relax(self, g: float, lo: float, hi: float) -> float:
        p = self.p
        if p.relax_na <= 0 and p.relax_rel <= 0:
            return g
        i_na = g * NA_PER_US
        sd = math.sqrt(p.relax_na ** 2 + (p.relax_rel * i_na) ** 2)
        g = g + sd * self._normal() / NA_PER_US
        return lo if g < lo else hi if g > hi else g

    def cell_session(self, pe: int, row: int, bl: int) -> "CellSession":
        """One closed-loop programming operation, step by step: the co-simulation serves the RTL
        write-verify sequencer's reads and pulses through it; program_cell runs it in a loop."""
        return CellSession(self, (pe, row, bl))

    def program_cell(self, pe: int, row: int, bl: int, target_code: int,
                     margin_code: int | None = None, max_pulses: int | None = None) -> VerifyResult:
        """Closed-loop write-verify of one cell to a verify code (golden.write_verify)."""
        s = self.cell_session(pe, row, bl)
        res = write_verify(s.read, s.pulse, int(target_code),
                           self.margin_code if margin_code is None else int(margin_code),
                           self.max_pulses if max_pulses is None else int(max_pulses))
        s.end(res.ok, res.pulses, res.reads)
        return res

    def open_loop(self, pe: int, row: int, bl: int, direction: int, n: int) -> int:
        """n identical pulses (SET or RESET) without verify; returns n."""
        idx = (pe, row, bl)
        stuck = bool(self.stuck[idx])
        g = float(self.g[idx])
        if not stuck:
            lo, hi, k = float(self.lo[idx]), float(self.hi[idx]), float(self.k[idx])
            for _ in range(int(n)):
                g = self._step(g, direction, lo, hi, k, 1.0 + self.p.c2c_sigma * self._normal())
        self._commit(idx, g, int(n), stuck)
        self._count_pulses(direction, int(n))
        self.counters["program_ops"] += 1
        return int(n)

    def _count_pulses(self, direction, n: int):
        k = "set_pulses" if direction == SET else "reset_pulses"
        self.counters[k] = self.counters.get(k, 0) + n      # .get: boards pickled before the key

    def _commit(self, idx, g, pulses, stuck):
        if pulses and not stuck:
            g = self._relax(g, float(self.lo[idx]), float(self.hi[idx]))
            self.g[idx] = g
            self.t_prog[idx] = self.t_s
            self._cur = None
        self.counters["pulses"] += pulses

    # ------------------------------------------------------------------ time
    def age(self, seconds: float):
        """Let `seconds` pass: every non-stuck cell drifts by nu * (log10(1 + t'/t0) - log10(1 + t/t0)),
        t = time since it was last programmed (tail cells have a larger nu)."""
        if seconds < 0:
            raise ValueError("age: seconds must be >= 0")
        t0 = self.p.drift_t0_s
        before = np.log10(1 + (self.t_s - self.t_prog) / t0)
        self.t_s += seconds
        after = np.log10(1 + (self.t_s - self.t_prog) / t0)
        dg = self.nu_na * (after - before) / NA_PER_US
        g = np.clip(self.g + dg, self.lo, self.hi)
        self.g = np.where(self.stuck > 0, self.g, g)
        self._cur = None


__all__ = ["Crossbar", "verify_code", "SET", "RESET"]


class CellSession:
    """The device side of one write-verify operation on one cell (see Crossbar.cell_session)."""

    def __init__(self, xb: Crossbar, idx):
        self.xb, self.idx = xb, idx
        self.stuck = bool(xb.stuck[idx])
        self.lo, self.hi, self.k = float(xb.lo[idx]), float(xb.hi[idx]), float(xb.k[idx])
        self.state = float(xb.g[idx])
        self.reads = 0

    def read(self) -> int:
        self.reads += 1
        return self.xb._read_code(self.state)

    def pulse(self, direction):
        self.xb._count_pulses(direction, 1)
        if not self.stuck:
            xb = self.xb
            self.state = xb._step(self.state, direction, self.lo, self.hi, self.k, 1.0 + xb.p.c2c_sigma * xb._normal())

    def end(self, ok: bool, pulses: int, reads: int | None = None):
        """Commit the cell (relaxation after programming) and count the operation."""
        xb = self.xb
        xb._commit(self.idx, self.state, pulses, self.stuck)
        xb.counters["verify_reads"] += self.reads if reads is None else reads
        xb.counters["program_ops"] += 1
        xb.counters["failed_ops"] += not ok
