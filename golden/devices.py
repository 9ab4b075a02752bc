"""Behavioural device models of a 1T1R cell, as named presets (issue 3).

A device model says what one identical programming pulse does to a cell's conductance, what
happens after a cell has been programmed (relaxation), which cells are defective (stuck), how a
read is disturbed (read noise) and how a programmed state moves with time (drift). The crossbar
(golden/crossbar.py) holds one state per cell and uses these functions; the write-verify loop
itself is golden/write_verify.py.

Units: conductance G in uS, read current I = G * V_READ in uA (verify codes of 20 nA).

Pulse models (`DeviceParams.model`), each step multiplied by cycle-to-cycle noise c ~ N(1, c2c):
  "yao2020"   SET   dG = +s k ((G_hi - G) / (G_hi - G_lo))**gamma * c
              RESET dG = -s k ((G - G_lo) / (G_hi - G_lo))**gamma * c
              (identical SET and RESET pulses; the step shrinks towards the bound it approaches)
  "linear"    Bennett 2019 eq. 1:  SET dG = +dG_L c,  RESET dG = -zeta dG_L c,  dG_L = r / (g - 1)
  "nonlinear" Bennett 2019 eqs. 2-4, 12:  dG = beta(G) exp(-G / r) c,
              beta_SET = a_SET (G_hi - G) dG_L,  beta_RESET = -zeta a_RESET (G - G_lo) dG_L
The state is then clipped to the cell's physical bounds [G_lo, G_hi].
Per-cell (device-to-device) parameters: G_lo, G_hi (bounds spread), and the step scale k
(yao2020: a log-normal multiplier; linear/nonlinear: the cell's own dG_L = r_cell / (g_cell - 1)).

After a programming operation that applied at least one pulse the state relaxes once by
dI ~ N(0, sqrt(relax_na**2 + (relax_rel * I)**2)) (nA of read current). The verify reads of the loop
see the state before relaxation; every later read sees the relaxed state.

yao2020 calibration (REFERENCE.md section 1, Yao 2020 Methods and ED Fig. 8): window 2.5-20 uS,
8 levels, margin +/-100 nA, at most 500 pulses; cells start above 4 uA (ED Fig. 8 protocol); the
pulse step s and c2c were chosen so the closed loop lands nearly uniformly in the +/-100 nA window
without a bias from the direction of approach (s.d. ~63 nA), and relax_na = 88 nA brings the final
error to N(0, 108 nA) (tests/test_devices.py checks both); the pulse count grows with the distance
from the start state (ED Fig. 8 shape). Yield 99.99 % (Methods): 1e-4 of the cells are stuck.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .cell import V_READ

SET, RESET = 0, 1          # == golden.write_verify.Pulse values
NA_PER_US = V_READ * 1000.0  # nA of read current per uS of conductance (200)


@dataclass(frozen=True)
class DeviceParams:
    name: str
    model: str                              # "yao2020" | "linear" | "nonlinear"
    g_lo_us: float                          # physical bounds of the conductance (nominal)
    g_hi_us: float
    # pulse response
    step_us: float = 0.0                    # yao2020: s
    gamma: float = 0.5                      # yao2020: state dependence of the step
    levels: int = 64                        # linear/nonlinear: writable levels g (dG_L = r / (g - 1))
    alpha_set: float = 0.0                  # nonlinear (1/uS)
    alpha_reset: float = 0.0
    zeta: float = 1.0                       # RESET asymmetry (Bennett eq. 12)
    c2c_sigma: float = 0.0                  # cycle-to-cycle: every step times c ~ N(1, c2c_sigma)
    # device-to-device
    d2d_step_sigma: float = 0.0             # yao2020: log-normal s.d. of the step multiplier k
    d2d_bounds_sigma: float = 0.0           # relative s.d. of G_lo and G_hi
    d2d_levels_sigma: float = 0.0           # relative s.d. of g (linear/nonlinear)
    # after programming
    relax_na: float = 0.0                   # s.d. of the relaxation, nA
    relax_rel: float = 0.0                  # relative s.d. of the relaxation (of I)
    # defects: stuck cells ignore pulses, relaxation and drift
    p_stuck_on: float = 0.0                 # stuck at G_hi
    p_stuck_off: float = 0.0                # stuck at G_lo (or at g_stuck_off_us)
    g_stuck_off_us: float | None = None     # stuck-OFF conductance below the window (Li 2018); None: G_lo
    p_stuck_mid: float = 0.0                # stuck near g_stuck_mid_us (inside the window)
    g_stuck_mid_us: tuple[float, float] = (10.0, 0.5)  # mean, s.d.
    # read
    read_noise_rel: float = 0.0             # s.d. of every cell current per read, relative
    # drift: dI = nu * (log10(1 + t'/t0) - log10(1 + t/t0)), t = time since the cell was programmed
    drift_na_per_decade: float = 0.0        # s.d. of nu for ordinary cells
    drift_tail_frac: float = 0.0            # fraction of tail cells
    drift_tail_na_per_decade: float = 0.0   # s.d. of nu for tail cells
    drift_t0_s: float = 1.0
    # fresh array: uniform in init_us (uS)
    init_us: tuple[float, float] = (20.2, 21.5)
    # programming (closed loop)
    window_us: tuple[float, float] = (2.5, 20.0)   # targets of the 8 levels lie in here
    margin_na: int = 100
    max_pulses: int = 500
    notes: str = field(default="", compare=False)

    def __post_init__(self):
        if self.model not in ("yao2020", "linear", "nonlinear"):
            raise ValueError(f"device {self.name}: unknown model {self.model!r}")
        if not 0 < self.g_lo_us < self.g_hi_us:
            raise ValueError(f"device {self.name}: bounds must satisfy 0 < g_lo < g_hi, got "
                             f"{self.g_lo_us}, {self.g_hi_us}")
        if self.levels < 2:
            raise ValueError(f"device {self.name}: levels must be >= 2")
        if self.margin_na < 0 or self.max_pulses < 0:
            raise ValueError(f"device {self.name}: margin and max_pulses must be >= 0")
        ps = self.p_stuck_on + self.p_stuck_off + self.p_stuck_mid
        if not 0 <= ps <= 1:
            raise ValueError(f"device {self.name}: stuck probabilities sum to {ps}")

    @property
    def dgl_us(self) -> float:
        """Nominal linear step dG_L = r / (g - 1)."""
        return (self.g_hi_us - self.g_lo_us) / (self.levels - 1)

    def nominal_k(self) -> float:
        """Step scale of a nominal cell (no device-to-device spread)."""
        return 1.0 if self.model == "yao2020" else self.dgl_us

    def mean_step_us(self, g_us: float, direction: int) -> float:
        """|mean step| of one pulse of a nominal cell at state g (c = 1): what an open-loop
        controller assumes."""
        g1 = step(self, g_us, direction, self.g_lo_us, self.g_hi_us, self.nominal_k(), 1.0)
        return abs(g1 - g_us)


def step(p: DeviceParams, g: float, direction: int, lo: float, hi: float, k: float, c: float) -> float:
    """State after one pulse (the closed form of every model; scalar floats)."""
    if p.model == "yao2020":
        if direction == SET:
            x = (hi - g) / (hi - lo)
            dg = p.step_us * k * x ** p.gamma * c if x > 0 else 0.0
        else:
            x = (g - lo) / (hi - lo)
            dg = -p.step_us * k * x ** p.gamma * c if x > 0 else 0.0
    elif p.model == "linear":
        dg = k * c if direction == SET else -p.zeta * k * c
    else:
        e = math.exp(-g / (hi - lo))
        if direction == SET:
            dg = p.alpha_set * (hi - g) * k * e * c
        else:
            dg = -p.zeta * p.alpha_reset * (g - lo) * k * e * c
    g = g + dg
    return lo if g < lo else hi if g > hi else g


def make_stepper(p: DeviceParams):
    """A fast scalar version of `step` specialised to one parameter set (same arithmetic)."""
    model, s, gam, zeta = p.model, p.step_us, p.gamma, p.zeta
    a_set, a_reset = p.alpha_set, p.alpha_reset
    exp = math.exp
    if model == "yao2020":
        def f(g, direction, lo, hi, k, c):
            if direction == SET:
                x = (hi - g) / (hi - lo)
                dg = s * k * x ** gam * c if x > 0 else 0.0
            else:
                x = (g - lo) / (hi - lo)
                dg = -s * k * x ** gam * c if x > 0 else 0.0
            g = g + dg
            return lo if g < lo else hi if g > hi else g
    elif model == "linear":
        def f(g, direction, lo, hi, k, c):
            g = g + (k * c if direction == SET else -zeta * k * c)
            return lo if g < lo else hi if g > hi else g
    else:
        def f(g, direction, lo, hi, k, c):
            e = exp(-g / (hi - lo))
            if direction == SET:
                g = g + a_set * (hi - g) * k * e * c
            else:
                g = g - zeta * a_reset * (g - lo) * k * e * c
            return lo if g < lo else hi if g > hi else g
    return f


def relax_sigma_na(p: DeviceParams, i_na):
    """s.d. of the post-programming relaxation at read current i (nA)."""
    return np.sqrt(p.relax_na ** 2 + (p.relax_rel * np.asarray(i_na, dtype=np.float64)) ** 2)


@dataclass
class CellParams:
    """Per-cell parameters drawn once per board (device-to-device spread, defects, drift)."""
    lo: np.ndarray        # uS
    hi: np.ndarray        # uS
    k: np.ndarray         # step scale (see module doc)
    stuck: np.ndarray     # int8: 0 ok, 1 stuck-ON, 2 stuck-OFF, 3 stuck-mid
    nu_na: np.ndarray     # drift rate, nA per decade
    tail: np.ndarray      # bool: drift tail cell
    g0: np.ndarray        # initial conductance, uS


STUCK_NAMES = {0: "ok", 1: "stuck-ON", 2: "stuck-OFF", 3: "stuck-mid"}


def draw_cells(p: DeviceParams, shape, rng: np.random.Generator) -> CellParams:
    """Draw every per-cell parameter of a fresh array (one generator, fixed order)."""
    n = int(np.prod(shape))
    z = rng.standard_normal((6, n))
    u = rng.random((3, n))
    lo = p.g_lo_us * (1 + p.d2d_bounds_sigma * z[0])
    hi = p.g_hi_us * (1 + p.d2d_bounds_sigma * z[1])
    lo = np.maximum(lo, 1e-3)
    hi = np.maximum(hi, lo + 1e-3)
    if p.model == "yao2020":
        k = np.exp(p.d2d_step_sigma * z[2])
    else:
        g = np.maximum(p.levels * (1 + p.d2d_levels_sigma * z[2]), 2.0)
        k = (hi - lo) / (g - 1)
    stuck = np.zeros(n, dtype=np.int8)
    c1 = p.p_stuck_on
    c2 = c1 + p.p_stuck_off
    c3 = c2 + p.p_stuck_mid
    stuck[u[0] < c3] = 3
    stuck[u[0] < c2] = 2
    stuck[u[0] < c1] = 1
    tail = u[1] < p.drift_tail_frac
    nu = np.where(tail, p.drift_tail_na_per_decade, p.drift_na_per_decade) * z[3]
    g0 = p.init_us[0] + (p.init_us[1] - p.init_us[0]) * u[2]
    g0 = np.clip(g0, lo, hi)
    g0 = np.where(stuck == 1, hi, g0)
    g0 = np.where(stuck == 2, lo if p.g_stuck_off_us is None else p.g_stuck_off_us, g0)
    mid = np.clip(p.g_stuck_mid_us[0] + p.g_stuck_mid_us[1] * z[4], lo, hi)
    g0 = np.where(stuck == 3, mid, g0)
    r = lambda a: a.reshape(shape)  # noqa: E731
    return CellParams(r(lo), r(hi), r(k), r(stuck), r(nu), r(tail), r(g0))


# ------------------------------------------------------------------------------------- presets

# Li 2018 (REFERENCE.md section 2) mapped onto the PE's read range: every conductance x 20/900, so
# Li's window top (900 uS) is the top of Yao's level range (20 uS, 4 uA at 0.2 V) and the forward and
# transposed reads, the ADCs and the verify codes are those of the board (docs/insitu.md).
LI_SCALE = 20.0 / 900.0
LI_G_LO_US, LI_G_HI_US = 100.0 * LI_SCALE, 900.0 * LI_SCALE          # 2.22, 20.0 uS
LI_STEP_US = (LI_G_HI_US - LI_G_LO_US) / 63                           # one nominal pulse: 0.28 uS
# Fresh cells: "a single pulse from a low-conductance state" (Li, Methods), the pulse's effect
# spread uniformly over 0-4 nominal steps (Li give no spread; with one as small as the 2 % update
# variation every pair's G+ - G- stays below the SL ADC's LSB, and a defect-free board cannot
# break the symmetry between hidden units: docs/insitu.md)
LI_INIT_US = (LI_G_LO_US, LI_G_LO_US + 4 * LI_STEP_US)                  # 2.22-3.35 uS

PRESETS: dict[str, DeviceParams] = {
    "yao2020": DeviceParams(
        "yao2020", "yao2020", g_lo_us=1.0, g_hi_us=24.0, step_us=2.5, gamma=0.5, c2c_sigma=0.6,
        d2d_step_sigma=0.1, d2d_bounds_sigma=0.03, relax_na=88.0,
        p_stuck_on=5e-5, p_stuck_off=5e-5,
        drift_na_per_decade=5.0, drift_tail_frac=0.02, drift_tail_na_per_decade=100.0,
        notes="Yao 2020: 8 levels 2.5-20 uS, closed loop +/-100 nA, <= 500 pulses, "
              "final error N(0, 108 nA), 99.99 % yield, tail cells drift (ED Fig. 3)"),
    "bennett2019": DeviceParams(
        "bennett2019", "nonlinear", g_lo_us=0.5, g_hi_us=22.5, levels=64,
        alpha_set=0.147, alpha_reset=0.150, zeta=1.25, c2c_sigma=0.3,
        d2d_bounds_sigma=0.05, d2d_levels_sigma=0.1,
        notes="Bennett 2019 non-linear asymmetric model (eqs. 2-4, 12), zeta 1.25, g = 64, "
              "c2c 30 %, d2d 5 % on Gmin/Gmax, 10 % on g; alphas give dG_L at the window centre"),
    "bennett2019-linear": DeviceParams(
        "bennett2019-linear", "linear", g_lo_us=0.5, g_hi_us=22.5, levels=64, zeta=1.0,
        c2c_sigma=0.3, d2d_bounds_sigma=0.05, d2d_levels_sigma=0.1,
        notes="Bennett 2019 linear ('perfect') model (eq. 1), g = 64, c2c 30 %, d2d as bennett2019"),
    "li2018": DeviceParams(
        "li2018", "linear", g_lo_us=LI_G_LO_US, g_hi_us=LI_G_HI_US, levels=64, c2c_sigma=0.0,
        relax_rel=0.02, p_stuck_off=0.11, g_stuck_off_us=10.0 * LI_SCALE,
        init_us=LI_INIT_US,
        window_us=(LI_G_LO_US, LI_G_HI_US), margin_na=40,
        notes="Li 2018 scaled by 20/900 onto the PE's read range: window 100-900 uS -> 2.22-20 uS, "
              "11 % stuck OFF at 10 uS -> 0.22 uS (below the window), 2 % update variation (s.d. of "
              "the conductance after every update), linear identical pulses of 1/63 of the window, "
              "fresh cells one pulse from the window floor, uniform in 2.22-3.35 uS (0-4 nominal steps)"),
    "ideal": DeviceParams(
        "ideal", "linear", g_lo_us=2.5, g_hi_us=20.0, levels=8, init_us=(2.5, 2.5),
        notes="exact 2.5 uS per pulse from 2.5 uS, no noise, no defects: transfers land on the levels"),
}


def preset(name: str | DeviceParams = "yao2020", **overrides) -> DeviceParams:
    """A named preset, optionally with fields overridden (e.g. margin_na=50, read_noise_rel=0.01)."""
    if isinstance(name, DeviceParams):
        p = name
    else:
        if name not in PRESETS:
            raise ValueError(f"unknown device preset {name!r} (known: {', '.join(PRESETS)})")
        p = PRESETS[name]
    return replace(p, **overrides) if overrides else p
