"""FC weight update of hybrid training in integers (Yao 2020, equations 1-2).

    acc[m, n] = sum_i V_i[m] * delta_i[n]             (V: u8 FC inputs, delta: Q1.15, batch of 100)
    dI[m, n]  = -((acc * M + 2**(sh-1)) >> sh)        (desired change of the weight's read current,
                                                        in verify LSBs of 20 nA; descent on the loss)
    program (m, n) only if |dI| >= TH_CODE            (Th = 1.5 uS = 0.3 uA at 0.2 V = 15 LSBs)

(M, sh) encodes the learning rate: one unit of acc is eta * s_v / 2**15 of float weight, one float
weight unit is 1 / s_w conductance steps of 2.5 uS, i.e. 2.5 * 0.2 * 1000 / 20 = 25 verify LSBs.
Commands come out row by row in the order the cells sit on the PEs (PE, SL row, BL).

Sign rule (Bennett 2019's sign Widrow-Hoff, eq. 7; a layer's rule "sign", golden/insitu.py): the
same acc with delta = `sign_error` (e = (O - T) / 2 in {-1, 0, 1}: the descent convention of
p - onehot), then d = -sign(acc) = sign(sum_i V_i (T - O) / 2) for every acc != 0 (`sign_rule`):
one identical pulse per device of the pair in that direction (golden/pair_pulser.py), no
threshold, no learning rate. Sign-backprop (rule "signbp"): the same sign_rule on the acc of the
ordinary deltas (softmax at the output, transposed reads below).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import model
from .datapath import SOFTMAX_FRAC
from .cell import G_STEP_US, V_READ
from .write_verify import VERIFY_LSB_NA

TH_NA = 300                          # Yao 2020: Th = 1.5 uS (0.3 uA at 0.2 V)
TH_CODE = TH_NA // VERIFY_LSB_NA     # 15
CODES_PER_STEP = G_STEP_US * V_READ * 1000.0 / VERIFY_LSB_NA  # 25 verify LSBs per 2.5 uS step


def accumulate(v, delta):
    """V (B, n_in) u8, delta (B, n_out) Q1.15 -> acc (n_in, n_out) int64 = sum_i V_i x delta_i."""
    v, d = np.asarray(v, dtype=np.int64), np.asarray(delta, dtype=np.int64)
    if v.ndim != 2 or d.ndim != 2 or len(v) != len(d):
        raise ValueError(f"V and delta must be (batch, n) with the same batch, got {v.shape} and {d.shape}")
    return v.T @ d


def eta_params(eta: float, q: model.QuantConfig, layer: str = "FC") -> tuple[int, int]:
    """(M, sh) for a float learning rate eta, from the layer's input and weight scales."""
    s_w = q.w_scale[layer]
    s_v = q.logit_scale / s_w  # float value of one FC input code
    return model.requant_params(eta * s_v / (1 << SOFTMAX_FRAC) / s_w * CODES_PER_STEP)


def weight_update(acc, m: int, sh: int):
    """acc -> dI in verify LSBs (signed), round half up of acc*M/2**sh then negated."""
    a = np.asarray(acc, dtype=np.int64)
    return -((a * m + (1 << (sh - 1))) >> sh)


def threshold(d_i, th_code: int = TH_CODE):
    """Threshold rule: updates with |dI| < Th become 0 (those cells are not programmed)."""
    d = np.asarray(d_i, dtype=np.int64)
    return np.where(np.abs(d) >= th_code, d, 0)


def sign_error(logits, labels):
    """Sign-WH error of the output layer (eq. 7): O_k = sign(A_k) (A_k <= 0 counts as -1), T_k = +1
    for the label else -1; -> e = (O - T) / 2 (B, n_out) int64 in {-1, 0, 1}."""
    a = np.asarray(logits, dtype=np.int64)
    o = a > 0
    t = np.zeros(a.shape, dtype=bool)
    t[np.arange(len(a)), np.asarray(labels)] = True
    return o.astype(np.int64) - t.astype(np.int64)


def sign_rule(acc):
    """Sign rule: d = -sign(acc) in {-1, 0, 1} (one pulse per device of the pair where d != 0)."""
    return -np.sign(np.asarray(acc, dtype=np.int64))


@dataclass(frozen=True)
class ProgramCommand:
    pe: int
    row_pos: int    # SL row of G+ (G- is row_pos + 1)
    bl: int
    m: int          # FC input index
    n: int          # FC output index
    d_code: int     # desired change of G+ - G- read current, verify LSBs (20 nA)


def commands(d_i, mapping, layer: str = "FC") -> list[ProgramCommand]:
    """Programming commands for the non-zero updates, row by row: (PE, SL row, BL) order."""
    d = np.asarray(d_i)
    out = []
    for g in sorted(mapping.groups[layer], key=lambda g: (g.pe, g.row_base)):
        for n in range(g.n_out):
            for j, m in enumerate(g.inputs):
                if d[m, n]:
                    out.append(ProgramCommand(g.pe, g.row_base + 2 * n, j, m, n, int(d[m, n])))
    return out
