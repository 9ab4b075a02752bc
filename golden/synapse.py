"""Vectorised device pulses and differential synapse arrays for in-situ learning (issue 16).

`step_array` is `golden.devices.step` on whole arrays: the same closed form of every pulse model,
operation by operation, so each element equals the scalar `step` exactly (tests/test_synapse.py).
`DiffArray` holds a weight matrix as differential conductance pairs W = G+ - G- (uS), every device
with its own device-to-device parameters from `devices.draw_cells`, and applies one programming
cycle from a matrix of update signs (Bennett 2019 eq. 7): every device takes one pulse whose size is
its own step (the device is the learning rate), multiplied by cycle-to-cycle noise c ~ N(1, c2c).

Pair scheme (the paper leaves it open; chosen here, stated in reports): dW > 0 SETs G+ and RESETs
G- of the pair, dW < 0 RESETs G+ and SETs G- (push-pull, both programming phases of a bipolar
crossbar), so the asymmetry zeta of RESET acts on every update. Option `pulse="alternate"`: one
device per pair and cycle (dW = one device step, the literal dW = c dG of eqs. 7 and 13), the
cycles alternating between the crossbar's two programming phases: odd cycles (the 1st, 3rd, ...)
the RESET phase (dW > 0: RESET G-, dW < 0: RESET G+), even cycles the SET phase (dW > 0: SET G+,
dW < 0: SET G-).
"""
from __future__ import annotations

import math

import numpy as np

from .devices import RESET, SET, DeviceParams, draw_cells


PULSES = ("push-pull", "alternate")     # pair schemes of DiffArray.program


def encode(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H*W + 1) float32: eq. 5 voltages in [-1, 1] and the bias input +1."""
    x = images.reshape(len(images), -1).astype(np.float32) * np.float32(2 / 255) - np.float32(1)
    return np.hstack([x, np.ones((len(x), 1), np.float32)])


def _libm(f, a: np.ndarray) -> np.ndarray:
    """f (a math function) of every element: the C library's result, as the scalar `step` gets it
    (NumPy's SIMD exp/pow differ from libm in the last bit for some inputs)."""
    a = np.asarray(a, dtype=np.float64)
    return np.fromiter(map(f, a.ravel().tolist()), np.float64, a.size).reshape(a.shape)


def step_array(p: DeviceParams, g, direction, lo, hi, k, c) -> np.ndarray:
    """State after one pulse of every element (arrays broadcast together; direction SET/RESET),
    element by element the arithmetic of `devices.step`, then clipped to [lo, hi]."""
    g, direction = np.broadcast_arrays(np.asarray(g, dtype=np.float64), direction)
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    k, c = np.asarray(k, dtype=np.float64), np.asarray(c, dtype=np.float64)
    is_set = np.asarray(direction) == SET
    if p.model == "yao2020":
        x = np.where(is_set, hi - g, g - lo) / (hi - lo)
        xp = np.where(x > 0, x, 0.0)
        gam = p.gamma
        mag = p.step_us * k * _libm(lambda v: v ** gam, xp) * c
        dg = np.where(x > 0, np.where(is_set, mag, -mag), 0.0)
    elif p.model == "linear":
        dg = np.where(is_set, k * c, -p.zeta * k * c)
    else:
        e = _libm(math.exp, -g / (hi - lo))
        up = p.alpha_set * (hi - g) * k * e * c
        down = p.zeta * p.alpha_reset * (g - lo) * k * e * c
        return _clip(np.where(is_set, g + up, g - down), lo, hi)
    return _clip(g + dg, lo, hi)


def _clip(g, lo, hi):
    """lo if g < lo, hi if g > hi, else g (the scalar step's order of tests)."""
    return np.where(g < lo, lo, np.where(g > hi, hi, g))


class DiffArray:
    """A (rows, cols) weight matrix of differential pairs W = G+ - G- in uS.

    Devices start in a random state between their own extrema (Bennett 2019 section II.C).
    `program(sign, scale)` applies one programming cycle: sign[i, j] in {-1, 0, +1} is the
    direction of dW; scale (optional, broadcastable, >= 0) multiplies every pulse's step (the L1/L2
    rules of Fig. 3; 1 for sign-WH). Returns the number of device pulses applied.
    """

    def __init__(self, p: DeviceParams, shape, rng: np.random.Generator, pulse: str = "push-pull"):
        if pulse not in PULSES:
            raise ValueError(f"unknown pair pulse scheme {pulse!r} (known: {', '.join(PULSES)})")
        self.p, self.shape, self.rng, self.pulse = p, tuple(shape), rng, pulse
        self.cycles = 0                                 # programming cycles applied
        cells = draw_cells(p, (2,) + self.shape, rng)
        self.lo, self.hi, self.k = cells.lo, cells.hi, cells.k
        self.g = self.lo + (self.hi - self.lo) * rng.random(self.lo.shape)
        self.pulses = 0

    @property
    def w(self) -> np.ndarray:
        return self.g[0] - self.g[1]

    @property
    def w_max(self) -> float:
        """Nominal largest |W| (uS): the nominal conductance range."""
        return self.p.g_hi_us - self.p.g_lo_us

    def program(self, sign, scale=None, cols=None) -> int:
        """One programming cycle; with cols, sign (and scale) cover only those columns (the error
        columns of one example). Every device of the covered block draws its c2c factor (G+ block,
        then G- block), pulsed or not, so the random stream depends only on the block's shape."""
        sel = (slice(None), slice(None), cols) if cols is not None else (slice(None),)
        sign = np.asarray(sign)
        g, lo, hi, k = self.g[sel], self.lo[sel], self.hi[sel], self.k[sel]
        if self.p.c2c_sigma == 0:
            c = np.ones(g.shape)
        else:
            c = 1.0 + self.p.c2c_sigma * self.rng.standard_normal(g.shape)
        if scale is not None:
            c = c * np.asarray(scale, dtype=np.float64)
        up = sign > 0
        dirn = np.stack([np.where(up, SET, RESET), np.where(up, RESET, SET)])
        new = step_array(self.p, g, dirn, lo, hi, k, c)
        self.cycles += 1
        hit = np.broadcast_to(sign != 0, g.shape)
        if self.pulse == "alternate":                  # one device: SET phase (even cycles) or RESET (odd)
            plus = up if self.cycles % 2 == 0 else ~up
            hit = hit & np.stack([plus, ~plus])
        self.g[sel] = np.where(hit, new, g)
        n = int(np.count_nonzero(hit))
        self.pulses += n
        return n
