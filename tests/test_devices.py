"""Device presets against their closed forms (golden/devices.py)."""
import math

import numpy as np
import pytest

from golden import devices
from golden.crossbar import Crossbar, verify_code
from golden.devices import RESET, SET, preset, step
from golden.write_verify import VERIFY_ADC, Pulse, level_target_code


def test_pulse_constants_match_write_verify():
    assert SET == Pulse.SET and RESET == Pulse.RESET


def test_verify_code_equals_verify_adc():
    rng = np.random.default_rng(0)
    i = np.concatenate([rng.uniform(-0.5, 6.0, 20000), np.arange(-2, 260) * 0.02 + 0.01,  # ties
                        np.arange(0, 260) * 0.02])
    fast = np.array([verify_code(float(v)) for v in i])
    assert np.array_equal(fast, VERIFY_ADC.convert(i).astype(np.int64))


def test_yao2020_step_closed_form():
    p = preset("yao2020")
    lo, hi = p.g_lo_us, p.g_hi_us
    for g in (1.0, 2.5, 7.5, 12.0, 20.0, 23.9):
        up = step(p, g, SET, lo, hi, 1.0, 1.0)
        down = step(p, g, RESET, lo, hi, 1.0, 1.0)
        assert up == pytest.approx(min(g + p.step_us * ((hi - g) / (hi - lo)) ** p.gamma, hi))
        assert down == pytest.approx(max(g - p.step_us * ((g - lo) / (hi - lo)) ** p.gamma, lo))
    # identical pulses: the same magnitude law for SET and RESET, mirrored about the window centre
    c = (lo + hi) / 2
    assert step(p, c, SET, lo, hi, 1.0, 1.0) - c == pytest.approx(c - step(p, c, RESET, lo, hi, 1.0, 1.0))
    # the fast stepper of the crossbar is the same arithmetic
    f = devices.make_stepper(p)
    for g in np.linspace(lo, hi, 17):
        for d in (SET, RESET):
            assert f(float(g), d, lo, hi, 1.3, 0.7) == step(p, float(g), d, lo, hi, 1.3, 0.7)


def test_yao2020_closed_loop_error_is_n0_108na_and_pulses_grow_with_distance():
    xb = Crossbar("yao2020", seed=3, p_stuck_on=0.0, p_stuck_off=0.0)
    err, pulses, lv = [], [], []
    for pe in range(2):
        for r in range(128):
            for b in range(16):
                level = (r * 16 + b) % 8
                t = level_target_code(level)
                res = xb.program_cell(pe, r, b, t)
                assert res.ok and abs(res.final_code - t) <= 5
                err.append(xb.current_na(pe, r, b) - 20 * t)
                pulses.append(res.pulses)
                lv.append(level)
    err, pulses, lv = np.array(err), np.array(pulses), np.array(lv)
    assert abs(err.mean()) < 15
    assert 100 < err.std() < 116                              # Yao: N(0, 108 nA)
    assert abs(np.mean(((err - err.mean()) / err.std()) ** 4) - 3) < 0.5   # Gaussian-like tails
    per_level = [pulses[lv == k].mean() for k in range(8)]   # start > 4 uA: level 0 is the farthest
    assert all(a > b for a, b in zip(per_level, per_level[1:]))
    assert pulses.max() < preset("yao2020").max_pulses


def test_bennett_linear_closed_form():
    p = preset("bennett2019-linear", c2c_sigma=0.0)
    dgl = (p.g_hi_us - p.g_lo_us) / (p.levels - 1)
    assert p.dgl_us == pytest.approx(dgl)
    g = p.g_lo_us
    for n in range(1, 80):
        g = step(p, g, SET, p.g_lo_us, p.g_hi_us, dgl, 1.0)
        assert g == pytest.approx(min(p.g_lo_us + n * dgl, p.g_hi_us))
    pz = preset("bennett2019-linear", zeta=1.5)
    assert step(pz, 10.0, RESET, pz.g_lo_us, pz.g_hi_us, dgl, 1.0) == pytest.approx(10.0 - 1.5 * dgl)
    # cycle-to-cycle noise multiplies the step
    assert step(p, 10.0, SET, p.g_lo_us, p.g_hi_us, dgl, 1.2) == pytest.approx(10.0 + 1.2 * dgl)


def test_bennett_nonlinear_closed_form():
    p = preset("bennett2019")
    lo, hi = p.g_lo_us, p.g_hi_us
    r = hi - lo
    dgl = r / (p.levels - 1)
    for g in (1.0, 5.0, 11.0, 18.0, 22.0):
        e = math.exp(-g / r)
        assert step(p, g, SET, lo, hi, dgl, 1.0) == pytest.approx(g + p.alpha_set * (hi - g) * dgl * e)
        assert step(p, g, RESET, lo, hi, dgl, 1.0) == pytest.approx(g - p.zeta * p.alpha_reset * (g - lo) * dgl * e)
    # non-linear: SET steps shrink towards G_max, RESET steps towards G_min; RESET stronger (zeta)
    s = [step(p, g, SET, lo, hi, dgl, 1.0) - g for g in (3.0, 10.0, 18.0)]
    assert s[0] > s[1] > s[2] > 0
    # device-to-device: per-cell bounds spread and dG_L = r_cell / (g_cell - 1)
    cp = devices.draw_cells(p, (4000,), np.random.default_rng(0))
    assert np.std(cp.hi / p.g_hi_us) == pytest.approx(p.d2d_bounds_sigma, rel=0.1)
    g_cell = (cp.hi - cp.lo) / cp.k + 1
    assert np.std(g_cell / p.levels) == pytest.approx(p.d2d_levels_sigma, rel=0.1)


def test_li2018_stuck_and_write_error():
    p = preset("li2018")
    # Li's window 100-900 uS and stuck level 10 uS, x 20/900
    assert (p.g_lo_us, p.g_hi_us) == pytest.approx((100 / 45, 20.0)) and p.window_us == (p.g_lo_us, p.g_hi_us)
    cp = devices.draw_cells(p, (20000,), np.random.default_rng(1))
    frac = (cp.stuck == 2).mean()
    assert abs(frac - 0.11) < 4 * math.sqrt(0.11 * 0.89 / 20000) and not (cp.stuck % 2).any()
    assert np.all(cp.g0[cp.stuck == 2] == pytest.approx(10 / 45))           # stuck OFF, below the window
    # fresh cells: one pulse from the window floor, its effect uniform over 0-4 nominal steps
    fresh = cp.g0[cp.stuck == 0]
    step = p.mean_step_us(p.g_lo_us, devices.SET)
    assert step == pytest.approx((20 - 100 / 45) / 63)
    assert fresh.min() >= p.g_lo_us and fresh.max() <= p.g_lo_us + 4 * step
    assert np.mean(fresh) == pytest.approx(p.g_lo_us + 2 * step, rel=2e-3)
    # write error: relaxation of s.d. 2 % of the read current
    assert devices.relax_sigma_na(p, 3000.0) == pytest.approx(60.0)
    xb = Crossbar("li2018", seed=2, n_pe=1)
    g = np.full(xb.shape, 12.0)
    xb.set_conductance(g)
    ok = xb.stuck == 0
    out = np.array([xb._relax(12.0, p.g_lo_us, p.g_hi_us) for _ in range(4000)])
    assert np.std(out) / 12.0 == pytest.approx(0.02, rel=0.08)
    assert np.all(xb.g[ok] == 12.0) and np.all(xb.g[~ok] == pytest.approx(10 / 45))
    xb.open_loop(0, *np.argwhere(~ok[0])[0], devices.SET, 5)          # stuck cells ignore pulses
    assert np.all(xb.g[~ok] == pytest.approx(10 / 45))


def test_presets_and_overrides():
    assert set(devices.PRESETS) >= {"yao2020", "bennett2019", "bennett2019-linear", "li2018", "ideal"}
    p = preset("yao2020", margin_na=50, max_pulses=100)
    assert p.margin_na == 50 and p.max_pulses == 100 and preset("yao2020").margin_na == 100
    assert Crossbar("yao2020", seed=0, margin_na=50).margin_code == 2
    with pytest.raises(ValueError, match="unknown device preset"):
        preset("nope")
    with pytest.raises(ValueError):
        preset("yao2020", g_lo_us=30.0)
