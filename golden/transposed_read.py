"""Transposed read: a layer's error vector driven on the SL (row) side, the currents sensed on the BLs.

The golden counterpart of rtl/transposed_read.py. It gives the back-propagated error of the layer
below, T = W^T err, in fabric (Li 2018 computed it in software from read-back weights):

  err (M, n_out) signed integer codes, |err| < 2**bits (`error_code` makes them from a delta).
  Two phases, positive read voltages only (as the forward read), each `bits` slots, LSB first:
    phase P: G+ row of output o (g.row_base + 2o) pulsed with the bits of max(err_o, 0),
             G- row (+1) with the bits of max(-err_o, 0);
    phase N: the complement (G+ with max(-err_o, 0), G- with max(err_o, 0)).
  In a slot the rows whose bit is set get a read pulse (V_READ), BLs 0..len(g.inputs)-1 are held
  at 0 V and sensed: BL current = sum over pulsed rows of the cell read current (the same
  quantised cell currents the forward read sums, `array.read_t`). Each BL current -> a code of
  the BL-side ADC, codes shifted and added over the slots of a phase (S_P, S_N), T = S_P - S_N.
  Since in each phase only one row of a pair is pulsed per slot, S_P - S_N ~ sum_o err_o (I+ - I-).
  Reads: phase P then phase N, each one array.read_t call of bits * M slot rows, slot-major (the
  order of the read-noise draws on a noisy crossbar).

BL converter (an extension of Yao's board, which has ADCs on the SLs only): one ADC per BL,
16 per PE, the same 8-bit converter as the SL side at a 64 uA full scale (`BL_ADC`, LSB 0.25 uA =
512 I_Q: a power of two, so the float32 and float64 conversions agree and the HDL array model's
integer sums give the same codes). Why 64 uA: a BL of a read group sees at most one cell per
output per slot; li2018's widest transposed group has 10 outputs, at most 10 x 4 uA = 40 uA
(20 uS window top at 0.2 V), so 64 uA never saturates there, and it is the full scale of a
16-cell forward read group (16 x 4 uA), i.e. the SL converter's range reused, resolution half a
2.5 uS conductance step (0.5 uA) per slot. docs/insitu.md.

Error codes (`error_code`): a per-row block exponent. For each row i (one image) the shift
s_i = max(0, bitlen(max_o |d_io|) - bits), err = clip((d + 2**(s_i - 1)) >> s_i, +-(2**bits - 1))
(s_i = 0: err = d), so every image uses the converter's full input range; the back-propagated
value is restored by `hidden_error` as T << s_i.
"""
from __future__ import annotations

import numpy as np

from .adc import ADC
from .datapath import shift_add

BL_ADC = ADC(8, 64.0)      # one per BL (16 per PE): 8 bits, 64 uA full scale, LSB 0.25 uA
ERR_BITS = 8               # magnitude bits of the error codes driven on the SLs (|err| < 2**8)


def _check_err(err, bits: int, n_out: int) -> np.ndarray:
    e = np.asarray(err)
    if e.ndim != 2 or e.shape[1] != n_out:
        raise ValueError(f"err must be (M, {n_out}) for this read group, got shape {e.shape}")
    if not np.issubdtype(e.dtype, np.integer):
        raise ValueError(f"err must be signed integer codes, got dtype {e.dtype}")
    e = e.astype(np.int64)
    if e.size and np.abs(e).max() >= 1 << bits:
        raise ValueError(f"err codes must satisfy |err| < 2**{bits}, got max |err| = {np.abs(e).max()}")
    return e


def _phase_sums(array, g, pos, neg, bits: int, adc: ADC) -> np.ndarray:
    """One phase: G+ rows pulsed with the bits of `pos`, G- rows with those of `neg` -> S (M, n_bl)."""
    m = len(pos)
    k = np.arange(bits, dtype=np.int64)[:, None, None]
    sl = np.empty((bits, m, 2 * g.n_out), dtype=np.uint8)
    sl[..., 0::2] = (pos[None] >> k) & 1
    sl[..., 1::2] = (neg[None] >> k) & 1
    rows = slice(g.row_base, g.row_base + 2 * g.n_out)
    n_bl = len(g.inputs)
    cur = array.read_t(g.pe, sl.reshape(bits * m, 2 * g.n_out), rows, n_bl)     # (B*M, n_bl) uA
    codes = adc.convert(cur, dtype=np.int64).reshape(bits, m, n_bl)
    return shift_add(codes, axis=0)


def transposed_sums(array, g, err, bits: int, adc: ADC = BL_ADC) -> np.ndarray:
    """T (M, len(g.inputs)) int64 = S_P - S_N of read group g for error codes err (M, g.n_out)."""
    e = _check_err(err, bits, g.n_out)
    pos, neg = np.maximum(e, 0), np.maximum(-e, 0)
    return _phase_sums(array, g, pos, neg, bits, adc) - _phase_sums(array, g, neg, pos, bits, adc)


def layer_transposed(array, groups, err, bits: int, n_in: int, adc: ADC = BL_ADC) -> np.ndarray:
    """T (M, n_in) of a whole layer: every read group's BL sums placed at its fan-in indices
    (summed where several groups share an input)."""
    e = np.asarray(err)
    out = np.zeros((len(e), n_in), dtype=np.int64)
    for g in groups:
        np.add.at(out, (slice(None), list(g.inputs)), transposed_sums(array, g, e, bits, adc))
    return out


def error_code(d, bits: int = ERR_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Signed integer errors d (M, n) -> (err (M, n) with |err| < 2**bits, shift (M,)): the per-row
    block exponent of the module docstring."""
    d = np.asarray(d, dtype=np.int64)
    mx = np.abs(d).max(axis=1) if d.size else np.zeros(len(d), np.int64)
    blen = np.zeros(len(d), dtype=np.int64)
    nz = mx > 0
    blen[nz] = np.floor(np.log2(mx[nz])).astype(np.int64) + 1
    # log2 of a float64 can round up just below a power of two: correct it exactly
    blen[nz] -= (1 << (blen[nz] - 1)) > mx[nz]
    blen[nz] += (1 << blen[nz]) <= mx[nz]
    s = np.maximum(blen - bits, 0)
    half = np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)
    e = (d + half[:, None]) >> s[:, None]
    lim = (1 << bits) - 1
    return np.clip(e, -lim, lim), s


def hidden_error(t, shift) -> np.ndarray:
    """T (M, n) of the error codes with per-row shifts -> the back-propagated error T << shift."""
    return np.asarray(t, dtype=np.int64) << np.asarray(shift, dtype=np.int64)[:, None]
