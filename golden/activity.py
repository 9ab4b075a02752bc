"""The activity the system performs: the single definition of what is counted (issue 17).

Every operation that costs energy is counted as an integer, per image of inference (per layer
and in total) and per programming session. The RTL counts the same events in the units that do
the work (rtl/bitserial_encoder.py, rtl/adc_sequencer.py, rtl/gather.py, rtl/post.py,
rtl/softmax.py, rtl/programming.py) and the co-simulation checks they equal these functions.
The energy model (golden/energy.py) multiplies them by per-operation energies.

"Layer" is a weight layer as the controller runs it (a step, rtl/controller.py plan): a conv
layer together with the requant and max-pool of its post that writes the next feature map, the
final dense layer together with the softmax. A *slot read* is one bit-plane of one read group on
one PE: `input_bits` (8) per group, LSB first (golden.datapath.read_group_sums). A group is *real*
when it has outputs (n_out > 0); the controller's null groups (a lane with fewer groups than the
others in a step) pulse nothing and are not counted.

Keys (ACTIVITY_KEYS), all integers:

  read_slots       slot reads: one read pulse on one PE and one sample-and-hold strobe
                   (per real group: input_bits).
  bl_pulses        BL read pulses (0.2 V, pulse_cycles long): per slot read, the number of the
                   group's BLs whose input bit is 1 (data-dependent; zero padding and unused
                   BLs never pulse).
  wl_selections    WLs turned on for a read pulse: every WL of the PE (rtl/pe_board.py: all WLs on,
                   SLs clamped at 0 V), n_rows (128) per slot read.
  sl_selections    SLs sensed: the group's 2 * n_out SLs (G+ and G- of each output) per slot read,
                   the SLs whose held values are converted and used.
  sh_samples       sample-and-hold captures: the strobed bank captures every SL of the PE,
                   n_rows (128) capacitors per slot read.
  mux_switches     4:1 MUX settings: each conversion round sets all n_adc (32) MUXes to one input,
                   n_adc per round (equal to adc_conversions on this macro; a separate key
                   because the MUX and the ADC are separate blocks of the energy table).
  adc_conversions  ADC conversions: n_adc per conversion round (all ADCs convert, also those
                   whose SL is outside the group). A slot of a group on SLs row_base ..
                   row_base + 2 n_out - 1 takes one round per MUX select touched,
                   (row_base + 2 n_out - 1) // n_adc - row_base // n_adc + 1.
  shift_adds       shift-and-add operations: one per SL of the group per slot read (2 n_out).
  diff_subs        differential subtractions D = S(G+) - S(G-): n_out per real group.
  acc_adds         accumulations of a group's D into the position's sums: n_out per real group.
  fm_reads         feature-map RAM reads: the patch gather's reads of the layer's input map (the
                   image buffer for the first layer), one per in-bounds tap of a real group
                   (zero padding is not read), plus the pooling's reads of the pooled cell
                   (one per pool_ops).
  fm_writes        feature-map RAM writes: the post writes every output value that falls in a
                   pooling window (the first visit of a window writes, the others write the max).
  requant_ops      bounded ReLU + requantisations: one per conv output value (position x channel;
                   positions outside the pooled area are requantised too, then dropped).
  pool_ops         max-pool comparisons: one per output value in a pooling window that is not
                   the window's first (a read-compare-write of the pooled cell).
  softmax_ops      softmax class evaluations: one per class per image (an exp-table lookup, an
                   add to the sum, a 16-bit division).
  set_pulses       SET programming pulses sent to the PE board (programming sessions).
  reset_pulses     RESET programming pulses.
  verify_reads     single-cell verify reads (the write-verify loop's reads and the pair
                   programmer's conductance reads).
  link_bytes       bytes on the host link, both directions (host sessions; 0 in the co-simulation
                   sessions without a host). Counted by the link (rtl/link.py, byte-exact with
                   sw/devmodel.py): link_bytes = link_rx_bytes + link_tx_bytes (CSRs read by
                   Board.link_bytes()); the host counts its side in LinkStats.bytes_written/_read.

Inference counts are per image (`inference_activity`); the programming counts come from the
golden crossbar's counters (`programming_activity`). Training images (with the feeder's reads
of V) are counted as inference images here.
"""
from __future__ import annotations

import numpy as np

from . import cnn
from .mapping import Mapping, build_mapping

ACTIVITY_KEYS = (
    "read_slots", "bl_pulses", "wl_selections", "sl_selections", "sh_samples", "mux_switches",
    "adc_conversions", "shift_adds", "diff_subs", "acc_adds", "fm_reads", "fm_writes", "requant_ops",
    "pool_ops", "softmax_ops", "set_pulses", "reset_pulses", "verify_reads", "link_bytes")

INFERENCE_KEYS = ACTIVITY_KEYS[:15]
PROGRAMMING_KEYS = ("set_pulses", "reset_pulses", "verify_reads")

N_ADC = 32                 # ADCs per PE (Yao 2020 macro core: 128 SLs, 4:1 MUX)
INPUT_BITS = 8

POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)


def zero() -> dict:
    """A count of nothing: every key 0."""
    return {k: 0 for k in ACTIVITY_KEYS}


def conversion_rounds(row_base: int, n_out: int, n_adc: int = N_ADC) -> int:
    """Conversion rounds of one slot of a group on SLs row_base .. row_base + 2 n_out - 1."""
    if n_out <= 0:
        return 0
    return (row_base + 2 * n_out - 1) // n_adc - row_base // n_adc + 1


def _fixed_layer(L, groups, out_hwc, pool: int, n_rows: int, n_adc: int, bits: int, n_classes: int,
                 last: bool = False) -> dict:
    """The data-independent counts of one layer for one image (all keys but bl_pulses); every
    weight layer but the last (conv or hidden dense) is requantised into a map, the last gives
    the softmax its logits."""
    real = [g for g in groups if g.n_out > 0]
    ho, wo = out_hwc[0], out_hwc[1]
    npos = ho * wo if isinstance(L, cnn.Conv) else 1
    slots = npos * len(real) * bits
    rounds = npos * bits * sum(conversion_rounds(g.row_base, g.n_out, n_adc) for g in real)
    sls = npos * bits * sum(2 * g.n_out for g in real)
    outs = npos * sum(g.n_out for g in real)
    c = zero()
    c.update(read_slots=slots, wl_selections=slots * n_rows, sh_samples=slots * n_rows, sl_selections=sls,
             shift_adds=sls, mux_switches=rounds * n_adc, adc_conversions=rounds * n_adc, diff_subs=outs,
             acc_adds=outs, fm_reads=_gather_reads(L, real, ho, wo))
    if not last:
        nc = out_hwc[2]
        inwin = (ho // pool * pool) * (wo // pool * pool) * nc
        pooled = (ho // pool) * (wo // pool) * nc
        c.update(requant_ops=ho * wo * nc, fm_writes=inwin, pool_ops=inwin - pooled)
        c["fm_reads"] += inwin - pooled
    else:
        c["softmax_ops"] = n_classes
    return c


def _tap_mult(L, groups) -> np.ndarray:
    """How many real groups drive each unrolled fan-in index (1 for the builder's mappings)."""
    m = np.zeros(L.fan_in, dtype=np.int64)
    for g in groups:
        np.add.at(m, list(g.inputs), 1)
    return m


def _gather_reads(L, groups, ho: int, wo: int) -> int:
    """In-bounds taps of the layer's real groups over its positions (the gather's RAM reads)."""
    mult = _tap_mult(L, groups)
    if not isinstance(L, cnn.Conv):
        return int(mult.sum())
    h, w = ho + L.k - 1 - 2 * L.pad, wo + L.k - 1 - 2 * L.pad      # input map size
    k = L.k
    inb = np.zeros((k, k), dtype=np.int64)
    for kh in range(k):
        rows = sum(1 for y in range(ho) if 0 <= y + kh - L.pad < h)
        for kw in range(k):
            inb[kh, kw] = rows * sum(1 for x in range(wo) if 0 <= x + kw - L.pad < w)
    return int((mult.reshape(L.in_ch, k * k) * inb.reshape(1, -1)).sum())


def _bl_pulses(L, groups, x) -> np.ndarray:
    """BL pulses of a layer for N input maps x (N, H, W, C) of u8 codes -> (N,) int64: the
    popcount of every input a real group drives, summed over the layer's positions."""
    mult = _tap_mult(L, groups)
    pc = POPCOUNT[np.asarray(x, dtype=np.int64) & 0xFF]
    if not isinstance(L, cnn.Conv):
        return cnn.flatten_chw(pc) @ mult
    if L.pad:
        pc = np.pad(pc, ((0, 0), (L.pad, L.pad), (L.pad, L.pad), (0, 0)))
    n, hp, wp, c = pc.shape
    k = L.k
    ho, wo = hp - k + 1, wp - k + 1
    # per tap (c, kh, kw): the sum over positions of the input it reads, a box sum of the map
    ii = np.zeros((n, hp + 1, wp + 1, c), dtype=np.int64)
    ii[:, 1:, 1:] = pc.cumsum(1).cumsum(2)
    out = np.zeros(n, dtype=np.int64)
    mk = mult.reshape(c, k, k)
    for kh in range(k):
        for kw in range(k):
            box = (ii[:, kh + ho, kw + wo] - ii[:, kh, kw + wo] - ii[:, kh + ho, kw] + ii[:, kh, kw])
            out += box @ mk[:, kh, kw]
    return out


def inference_activity(activations: dict, images, layers=cnn.YAO2020, mapping: Mapping | None = None,
                       n_adc: int = N_ADC, input_bits: int = INPUT_BITS) -> dict:
    """Per-image activity of inference for N images.

    activations: golden.datapath.Datapath.run(images, keep=True).activations (each layer's
    output, the next layer's input); images (N, H, W) u8.
    -> {layer name: {key: (N,) int64}, "total": {key: (N,) int64}} for every key of ACTIVITY_KEYS
    (the programming keys and link_bytes are 0)."""
    mapping = mapping or build_mapping(layers)
    x = np.asarray(images)
    n = len(x)
    x = x[..., None] if x.ndim == 3 else x
    shapes = cnn.shapes(layers, x.shape[1:])
    n_classes = shapes[-1][2]
    out, names = {}, []
    for i, L in enumerate(layers):
        if isinstance(L, cnn.Pool):
            continue
        pool = layers[i + 1].size if i + 1 < len(layers) and isinstance(layers[i + 1], cnn.Pool) else 1
        groups = [g for g in mapping.groups[L.name] if g.n_out > 0]
        fixed = _fixed_layer(L, groups, shapes[i], pool, mapping.n_rows, n_adc, input_bits, n_classes,
                             last=L is cnn.weight_layers(layers)[-1])
        layer = {k: np.full(n, v, dtype=np.int64) for k, v in fixed.items()}
        layer["bl_pulses"] = _bl_pulses(L, groups, x)
        out[L.name] = layer
        names.append(L.name)
        if i + 1 < len(layers):
            x = activations[layers[i + 1].name] if pool > 1 else activations[L.name]
    out["total"] = {k: sum(out[nm][k] for nm in names) for k in ACTIVITY_KEYS}
    return out


def image_activity(act: dict, i: int, layer: str = "total") -> dict:
    """One image's counts from inference_activity's result, as a dict of ints."""
    return {k: int(v[i]) for k, v in act[layer].items()}


def programming_activity(before: dict, after: dict) -> dict:
    """The activity of a programming session from the golden crossbar's counters
    (golden.crossbar.Crossbar.counters, copies taken before and after the session)."""
    c = zero()
    for k in PROGRAMMING_KEYS:
        c[k] = int(after.get(k, 0)) - int(before.get(k, 0))
    return c


# the RTL's counters (rtl/controller.py ports, the ctrl CSR block): each counts one event per unit
RTL_COUNTERS = ("slot_reads", "conv_rounds", "bl_pulses", "sl_selections", "diff_subs", "fm_reads", "fm_writes",
                "requant_ops", "pool_ops", "softmax_ops", "set_pulses", "reset_pulses", "verify_reads")


def from_counters(c: dict, n_rows: int = 128, n_adc: int = N_ADC) -> dict:
    """The keys from the RTL's counters (differences of them for a span of work): the counters
    count events (slot reads, conversion rounds, D values), the keys scale them by the hardware's
    fixed sizes: per slot read every WL on and every S&H capacitor of the PE (n_rows), per round
    n_adc MUX settings and conversions, per SL sensed one shift-and-add, per D one accumulation."""
    g = {k: int(c.get(k, 0)) for k in RTL_COUNTERS}
    out = zero()
    out.update({k: g[k] for k in ("bl_pulses", "sl_selections", "diff_subs", "fm_reads", "fm_writes", "requant_ops",
                                  "pool_ops", "softmax_ops", "set_pulses", "reset_pulses", "verify_reads")})
    out.update(read_slots=g["slot_reads"], wl_selections=g["slot_reads"] * n_rows, sh_samples=g["slot_reads"] * n_rows,
               mux_switches=g["conv_rounds"] * n_adc, adc_conversions=g["conv_rounds"] * n_adc,
               shift_adds=g["sl_selections"], acc_adds=g["diff_subs"], link_bytes=int(c.get("link_bytes", 0)))
    return out


def counter_diff(after: dict, before: dict, bits: int = 32) -> dict:
    """Counter differences modulo 2**bits (the RTL's counters wrap)."""
    mask = (1 << bits) - 1
    return {k: (int(after[k]) - int(before.get(k, 0))) & mask for k in after}
