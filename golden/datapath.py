"""The golden integer datapath: the specification the RTL matches bit for bit.

Data flow per weight layer (docs/datapath.md has the diagram and every format):

  u8 input codes --bit-serial (LSB first)--> BL pulses --array read--> SL currents
  --ADC--> codes --shift-and-add over slots--> S (per SL) --G+ minus G- --> D (per output)
  --sum over read groups--> A --bounded ReLU + requant--> u8 --max-pool--> next layer
  (conv and hidden dense layers alike: a hidden dense layer's u8 outputs are a 1x1 map)
  last (dense) layer: A = logits --> argmax, fixed-point softmax p, delta = p - onehot.

Everything after the ADC is integer arithmetic. The analog side (`array.read`) is pluggable:
golden/analog.IdealArray here, the device/crossbar model of issue 3 later.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import cnn, model
from .adc import ADC
from .analog import IdealArray
from .cell import I_Q_UA
from .mapping import Mapping, build_mapping, conductance_levels

# ------------------------------------------------------------ fixed-point formats
SOFTMAX_FRAC = 15         # p and delta are Q1.15: 1.0 == 1 << 15
EXP_FRAC = 6              # exp-table index step: 1/64 nat
EXP_TABLE_SIZE = 1024     # covers 16 nats; exp(-16) * 2**15 < 0.5, so the last entries are 0
EXP_TABLE = np.floor(np.exp(-np.arange(EXP_TABLE_SIZE) / float(1 << EXP_FRAC)) * (1 << SOFTMAX_FRAC)
                     + 0.5).astype(np.int64)  # u16 entries, EXP_TABLE[0] = 32768


@dataclass
class DatapathConfig:
    input_bits: int = 8
    adc_bits: int = 8
    adc_full_scale_ua: dict[str, float] = field(default_factory=dict)  # per layer; missing = default

    def adc(self, layer: str) -> ADC:
        return ADC(self.adc_bits, self.adc_full_scale_ua.get(layer))


# ------------------------------------------------------------ blocks

def check_codes(x, bits: int):
    """x as an array, refused (ValueError) unless every value is an unsigned `bits`-bit code."""
    x = np.asarray(x)
    if x.size and (x.min() < 0 or x.max() >= (1 << bits)):
        raise ValueError(f"inputs must be in [0, {(1 << bits) - 1}] for {bits}-bit encoding, "
                         f"got [{x.min()}, {x.max()}]")
    return x


def bitserial_encode(x, bits: int):
    """Unsigned codes (...,) -> pulse enables (bits, ...) of 0/1, slot 0 = LSB."""
    x = check_codes(x, bits)
    dt = np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint64
    xs = x.astype(dt)
    out = np.empty((bits,) + x.shape, dtype=np.uint8)
    for k in range(bits):
        np.bitwise_and(xs >> dt(k), dt(1), out=out[k], casting="unsafe")
    return out


def shift_add(codes, axis: int = 0):
    """Sum over the slot axis of code_k << k (slot 0 = LSB).

    Integer codes give int64. float32 codes (integer-valued, as ADC.convert(dtype=float32) makes
    them) are summed in float32, exact while the sum stays below 2**24 (16-bit S here).
    """
    codes = np.asarray(codes)
    if codes.dtype == np.float32:
        if codes.shape[axis] > 16 or (codes.size and codes.max() * 2.0 ** codes.shape[axis] >= 2 ** 24):
            raise ValueError("float32 shift-and-add is exact only while the sum stays below 2**24")
        w = np.float32(2.0) ** np.arange(codes.shape[axis], dtype=np.float32)
    else:
        codes = codes.astype(np.int64)
        w = np.int64(1) << np.arange(codes.shape[axis], dtype=np.int64)
    return np.tensordot(w, codes, axes=(0, axis))


def differential(s_rows):
    """Interleaved SL results (..., 2*n_out) [G+, G-, G+, G-, ...] -> (..., n_out) = G+ - G-."""
    s = np.asarray(s_rows, dtype=np.int64)
    return s[..., 0::2] - s[..., 1::2]


def relu_requant(acc, m: int, sh: int):
    """Bounded ReLU + requantisation: clip(floor((A*M + 2**(sh-1)) / 2**sh), 0, 255), integer only."""
    a = np.maximum(np.asarray(acc, dtype=np.int64), 0)   # a new array: the rest runs in place
    a *= m
    a += 1 << (sh - 1)
    a >>= sh
    return np.minimum(a, model.ACT_MAX, out=a)


def maxpool(x, p: int):
    """(N,H,W,C) integer -> (N,H//p,W//p,C) max over non-overlapping p x p windows."""
    x = np.asarray(x)
    n, h, w, c = x.shape
    ho, wo = h // p, w // p
    out = x[:, 0:ho * p:p, 0:wo * p:p, :].copy()
    for i in range(p):               # element-wise maxima of the p*p strided views: no window copy
        for j in range(p):
            if i or j:
                np.maximum(out, x[:, i:ho * p:p, j:wo * p:p, :], out=out)
    return out


def argmax(logits):
    """Index of the first maximum (ties go to the lower class, as in the RTL comparator chain)."""
    return np.asarray(logits).argmax(axis=-1)


def softmax_params(logit_scale: float) -> tuple[int, int]:
    """(M, shift) turning a logit difference into exp-table steps (1/64 nat)."""
    return model.requant_params(logit_scale * (1 << EXP_FRAC))


def softmax_fixed(logits, m: int, sh: int):
    """Integer logits (N, K) -> p (N, K) in Q1.15 (0..32768).

    d = max - z;  t = min((d*M + 2**(sh-1)) >> sh, 1023);  e = EXP_TABLE[t];
    E = sum e;  p = (e * 2**15 + E // 2) // E.
    """
    z = np.asarray(logits, dtype=np.int64)
    d = z.max(axis=-1, keepdims=True) - z
    t = np.minimum((d * m + (1 << (sh - 1))) >> sh, EXP_TABLE_SIZE - 1)
    e = EXP_TABLE[t]
    tot = e.sum(axis=-1, keepdims=True)
    return ((e << SOFTMAX_FRAC) + (tot >> 1)) // tot


def delta(p, labels):
    """Training error delta = p - onehot(label), Q1.15 signed."""
    p = np.asarray(p, dtype=np.int64)
    d = p.copy()
    d[np.arange(len(p)), np.asarray(labels)] -= 1 << SOFTMAX_FRAC
    return d


# ------------------------------------------------------------ one layer through the array

def read_group_sums(array, g, xin, bits: int, adc: ADC):
    """One read group for M input vectors: xin (M, n_in) u8 -> D (M, n_out) = S(G+) - S(G-).

    For each of the `bits` slots the BLs are pulsed with one bit of every input, all 2*n_out
    SLs of the group are read and digitised, and the codes are shifted and added.
    """
    m, n_in = xin.shape
    tab = slot_table(array, g, adc, bits, bits * m)
    if tab is not None:
        return table_group_sums(tab, slot_patterns(xin, bits))
    planes = bitserial_encode(xin, bits)                       # (B, M, n_in)
    rows = slice(g.row_base, g.row_base + 2 * g.n_out)
    cur = array.read(g.pe, planes.reshape(bits * m, n_in), rows)   # (B*M, 2*n_out) uA
    codes = _codes(adc, cur, bits).reshape(bits, m, 2 * g.n_out)
    return differential(shift_add(codes, axis=0).astype(np.int64))


def _codes(adc: ADC, cur, bits: int):
    # float32 carries the integer codes exactly while S < 2**24 (8-bit ADC x 8 slots: 16 bits).
    return adc.convert(cur, dtype=np.float32 if adc.bits + bits <= 24 else np.int64)


MAX_TABLE_BLS = 16               # a slot table has 2**n_in rows


def slot_table(array, g, adc: ADC, bits: int, reads: int):
    """(2**n_in, n_out) table of code(G+) - code(G-) for every BL pattern of one slot, or None.

    Exact for an array that states its cells' currents as integers (`exact_units`, I_Q units,
    noise free) with every SL's sum of |units| below 2**24: every partial sum of a float32 read is
    then an exact multiple of I_Q, so a slot's current, and the ADC code of it, depend only on the
    pattern; the table holds the codes of (U * I_Q) in float32, converted as a read's currents are.
    Built when the call reads at least as many slots as the table has patterns (or cached).
    """
    units = getattr(array, "exact_units", None)
    n = len(g.inputs)
    if units is None or n > MAX_TABLE_BLS:
        return None
    key = ("slots", g.pe, g.row_base, g.n_out, n, adc, bits)
    cache = array.linear_cache
    if key not in cache:
        if 1 << n > reads:
            return None
        u = units[g.pe, g.row_base:g.row_base + 2 * g.n_out, :n]
        if u.shape[0] != 2 * g.n_out or np.abs(u).sum(axis=1).max(initial=0) >= 1 << 24:
            cache[key] = None
        else:
            pat = (np.arange(1 << n)[:, None] >> np.arange(n)) & 1          # bit j of p = BL j
            cur = ((pat.astype(np.float64) @ u.T.astype(np.float64)) * I_Q_UA).astype(np.float32)
            c = _codes(adc, cur, bits).astype(np.int64)
            d = c[:, 0::2] - c[:, 1::2]
            top = int(np.abs(d).max(initial=0)) * ((1 << bits) - 1)
            cache[key] = d.astype(np.float32) if top < 1 << 24 else d
    return cache[key]


# _SPREAD[v]: bit k of the byte v moved to bit 8k, so that byte k of sum_j _SPREAD[x_j] << j is
# the BL pattern of slot k (inputs of up to 8 bits, 8 BLs per 64-bit word).
_SPREAD = np.array([sum(((v >> k) & 1) << (8 * k) for k in range(8)) for v in range(256)], dtype=np.uint64)


def slot_patterns(xin, bits: int):
    """xin (M, n_in) codes -> (bits, M) BL patterns: bit j of [k, m] = bit k of xin[m, j] (checked
    as the bit-serial encoder checks them)."""
    x = check_codes(xin, bits)
    m, n = x.shape
    if bits > 8 or not np.little_endian:
        planes = bitserial_encode(x, bits)                             # (B, M, n_in)
        packed = np.packbits(planes, axis=-1, bitorder="little")       # (B, M, ceil(n_in / 8))
        return sum(packed[..., i].astype(np.intp) << (8 * i) for i in range(packed.shape[-1]))
    idx = np.zeros((bits, m), dtype=np.intp)
    for half in range(0, n, 8):
        acc = np.zeros(m, dtype=np.uint64)
        for j in range(half, min(n, half + 8)):
            acc |= np.take(_SPREAD, x[:, j]) << np.uint64(j - half)
        idx |= acc.view(np.uint8).reshape(m, 8)[:, :bits].T.astype(np.intp) << half
    return idx


def table_group_sums(tab, idx):
    """D (M, n_out) = sum_k 2**k tab[idx[k]], idx (B, M) the BL pattern of every slot."""
    w = (2.0 ** np.arange(len(idx))).astype(tab.dtype)
    # float32: every partial sum is an integer below 2**24 (slot_table's bound): exact
    return np.tensordot(w, np.take(tab, idx, axis=0), axes=(0, 0)).astype(np.int64)


def layer_accumulate(array, groups, cols, bits, adc):
    """cols (M, fan_in) -> A (M, n_out): sum of the read groups' differential sums."""
    lin = linear_weights(array, groups, adc, cols.shape[1])
    if lin is not None:
        return linear_accumulate(lin, cols, bits)
    acc = None
    for g in groups:
        i0, n = g.inputs[0], len(g.inputs)
        contiguous = g.inputs == tuple(range(i0, i0 + n))
        d = read_group_sums(array, g, cols[:, i0:i0 + n] if contiguous else cols[:, list(g.inputs)], bits, adc)
        acc = d if acc is None else acc + d
    return acc


# ------------------------------------------------------------ the linear shortcut (exact)

@dataclass(frozen=True)
class Linear:
    w: np.ndarray               # (fan_in, n_out) int64: A = cols @ w
    used: np.ndarray | None     # fan-in columns some group reads (None: all of them)
    col_abs: int                # max over outputs of sum |w|: bounds |A| / max input

    def dtype(self, bits: int):
        """float32 (float64) when every partial sum of cols @ w is an integer below 2**24 (2**53)
        for `bits`-bit inputs, so the product is exact; int64 otherwise."""
        bound = ((1 << bits) - 1) * self.col_abs
        return np.float32 if bound < 1 << 24 else np.float64 if bound < 1 << 53 else np.int64


def linear_weights(array, groups, adc: ADC, n_cols: int) -> Linear | None:
    """The layer as one integer matrix, when the bit-serial reads are provably linear; else None.

    Exact when the array states its cells' currents as integers (`exact_units`, I_Q units, noise
    free), every cell in the group rows is a whole number n of ADC LSBs (float32 LSB, as the ADC
    divides), and no SL can reach the top code even with every BL pulsed (sum n <= max_code; the
    sum < 2**24 I_Q also keeps the float32 reads exact). Every slot's current is then exactly
    code * LSB with code = sum_j b_kj n_j (no rounding, no clipping), so shift-and-add gives
    S = sum_j x_j n_j and D = x . (n+ - n-): one matrix for the whole layer.
    """
    units = getattr(array, "exact_units", None)
    if units is None:
        return None
    cache = array.linear_cache
    key = (tuple(groups), adc, n_cols)
    if key not in cache:
        cache[key] = _linear(units, groups, adc, n_cols)
    return cache[key]


def _linear(units, groups, adc, n_cols):
    q = adc.lsb_ua / I_Q_UA
    if not (q >= 1 and q == math.floor(q)) or float(np.float32(adc.lsb_ua)) != adc.lsb_ua:
        return None                   # (the float32 and float64 ADC paths divide by the same LSB)
    w = np.zeros((n_cols, groups[0].n_out), dtype=np.int64)
    used = np.zeros(n_cols, dtype=bool)
    for g in groups:
        u = units[g.pe, g.row_base:g.row_base + 2 * g.n_out, :len(g.inputs)]
        tot = u.sum(axis=1)
        if u.shape[0] != 2 * g.n_out or u.min() < 0 or np.any(u % int(q)) or tot.max() >= 1 << 24 \
                or tot.max() // int(q) > adc.max_code:
            return None
        n = u // int(q)
        np.add.at(w, list(g.inputs), (n[0::2] - n[1::2]).T)
        used[list(g.inputs)] = True
    return Linear(w, None if used.all() else np.flatnonzero(used), int(np.abs(w).sum(axis=0).max(initial=0)))


def linear_accumulate(lin: Linear, cols, bits: int, checked: bool = False, raw: bool = False):
    """A = cols @ w (int64; `raw`: in lin.dtype(bits), exact integers) ; the inputs checked as the
    bit-serial encoder checks them unless the caller did (`checked`)."""
    if not checked:
        check_codes(cols if lin.used is None else cols[:, lin.used], bits)
    dt = lin.dtype(bits)
    a = np.asarray(cols).astype(dt, copy=False) @ lin.w.astype(dt)
    return a if raw else a.astype(np.int64)


@dataclass
class Result:
    logits: np.ndarray          # (N, n_out) int64: FC accumulators
    classes: np.ndarray         # (N,) argmax
    p: np.ndarray               # (N, n_out) Q1.15 softmax
    activations: dict           # layer name -> u8 tensor after ReLU/requant (+ pool)


class Datapath:
    """The golden integer datapath for a network, its integer weights and a mapping."""

    def __init__(self, int_w: dict, q: model.QuantConfig, layers=cnn.YAO2020, mapping: Mapping | None = None,
                 cfg: DatapathConfig | None = None, array=None):
        self.layers = layers
        self.last = ([None] + [L.name for L in cnn.weight_layers(layers)])[-1]   # gives the logits
        self.int_w = int_w
        self.q = q
        self.mapping = mapping or build_mapping(layers)
        self.cfg = cfg or DatapathConfig()
        self.levels = conductance_levels(layers, int_w, self.mapping)
        self.array = array if array is not None else IdealArray(self.levels)
        self.softmax_m, self.softmax_sh = softmax_params(q.logit_scale)

    def run(self, x_u8, batch: int = 250, keep=False) -> Result:
        outs, acts = [], {}
        for i in range(0, len(x_u8), batch):
            lg, a = self._run_batch(x_u8[i:i + batch], keep)
            outs.append(lg)
            for k, v in a.items():
                acts.setdefault(k, []).append(v)
        logits = np.concatenate(outs)
        return Result(logits, argmax(logits), softmax_fixed(logits, self.softmax_m, self.softmax_sh),
                      {k: np.concatenate(v) for k, v in acts.items()})

    def _run_batch(self, x_u8, keep):
        x = np.asarray(x_u8)
        if x.ndim != 3:
            raise ValueError(f"images must be (N, H, W) uint8, got shape {x.shape}")
        x = x[..., None].astype(np.int64)
        bits, acts, pool_first = self.cfg.input_bits, {}, False
        for i, L in enumerate(self.layers):
            if isinstance(L, cnn.Conv):
                acc, shape = self._conv(x, L, bits)
                acc = acc.reshape(shape)
                nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
                pool_first = isinstance(nxt, cnn.Pool) and not keep
                if pool_first:       # ReLU + requant is non-decreasing: pooling A first is exact
                    acc = maxpool(acc, nxt.size)
                x = relu_requant(acc, *self.q.requant[L.name])
            elif isinstance(L, cnn.Pool):
                x = x if pool_first else maxpool(x, L.size)
                pool_first = False
            else:
                v = cnn.flatten_chw(x)
                x = layer_accumulate(self.array, self.mapping.groups[L.name], v, bits, self.cfg.adc(L.name))
                if L.name != self.last:        # a hidden dense layer: ReLU + requant, a 1x1 map
                    x = relu_requant(x, *self.q.requant[L.name])[:, None, None, :]
            if keep:
                acts[L.name] = x
        return x, acts

    def _conv(self, x, L, bits):
        """A conv layer's accumulators (N*Ho*Wo, out) and output shape. On the linear shortcut the
        patches are cut straight in the product's dtype, the codes checked on x (every patch value
        is a pixel of x or a padding zero)."""
        groups, adc = self.mapping.groups[L.name], self.cfg.adc(L.name)
        lin = linear_weights(self.array, groups, adc, x.shape[-1] * L.k * L.k)
        if lin is not None and lin.used is None:
            check_codes(x, bits)
            cols = cnn.im2col(x.astype(lin.dtype(bits)), L.k, L.pad)
            n, ho, wo, f = cols.shape
            return linear_accumulate(lin, cols.reshape(-1, f), bits, checked=True, raw=True), (n, ho, wo, -1)
        cols = cnn.im2col(x, L.k, L.pad)
        n, ho, wo, f = cols.shape
        return layer_accumulate(self.array, groups, cols.reshape(-1, f), bits, adc), (n, ho, wo, -1)


def accumulator_bits(layers=cnn.YAO2020, mapping=None, cfg=None) -> dict[str, int]:
    """Signed accumulator width per weight layer: ADC bits + input bits + 1 (sign) + log2(groups)."""
    cfg = cfg or DatapathConfig()
    mapping = mapping or build_mapping(layers)
    return {n: cfg.adc_bits + cfg.input_bits + 1 + math.ceil(math.log2(max(len(gs), 1)))
            for n, gs in mapping.groups.items()}
