"""The 1T1R cell (Yao et al. 2020): read voltage, conductance levels, read-current quantisation.

The one source of these physics numbers: the golden datapath, the analog and crossbar models and
the testbenches take them from here. The device models (what a pulse does) are golden/devices.py.
"""
V_READ = 0.2          # V, BL read pulse (Yao 2020, Methods)
G_MIN_US = 2.5        # uS, lowest of the 8 target levels (Yao 2020, Fig. 1c)
G_STEP_US = 2.5       # uS between adjacent levels
N_LEVELS = 8          # levels per device -> 15 weight levels per differential pair
G_WINDOW_US = (2.0, 20.0)  # programmable window (REFERENCE.md section 1)
I_UNIT_UA = V_READ * G_STEP_US  # 0.5 uA: read current of one conductance step at V_READ
# Cell read currents are quantised to I_Q = I_UNIT / 2**10 (~0.49 nA, far below any device
# effect) so that SL sums are exact integers: the HDL array model of the co-simulation
# (tb/cosim/hdl/pe_model.v) then reproduces the golden ADC codes bit for bit.
I_Q_FRAC = 10
I_Q_UA = I_UNIT_UA / (1 << I_Q_FRAC)


def current_units(i_ua):
    """Read current(s) in uA -> integer units of I_Q (round half up)."""
    import numpy as np
    return np.floor(np.asarray(i_ua, dtype=np.float64) / I_Q_UA + 0.5).astype(np.int64)


def level_conductance_us(level):
    """Target conductance (uS) of level 0..7: 2.5, 5.0, ..., 20.0 uS."""
    return G_MIN_US + G_STEP_US * level


def weight_to_levels(w):
    """Integer weight -7..7 -> (level of G+, level of G-), each 0..7, with G+ - G- = w steps."""
    import numpy as np
    w = np.asarray(w)
    if w.size and (w.min() < -(N_LEVELS - 1) or w.max() > N_LEVELS - 1):
        raise ValueError(f"weights must be integers in [{-(N_LEVELS - 1)}, {N_LEVELS - 1}], "
                         f"got range [{w.min()}, {w.max()}]")
    return np.maximum(w, 0).astype(np.int8), np.maximum(-w, 0).astype(np.int8)
