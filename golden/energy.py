"""Energy and area model as data: per-operation costs, one table per technology, multiplied by the
activity the system performs (golden/activity.py keys), per image, by block and by weight layer.

Tables (sources beside each number; docs/energy.md has the figures and the assumptions):
  ED_TABLE1   Yao et al., Nature 2020, Extended Data Table 1: area (um^2), latency (ns) and energy
              (pJ) of each block of the 128x128 macro core for one 1-bit read (0.2 V, 50 ns, all 128
              rows pulsed, 128 SLs converted by 32 ADCs, 4 conversions each). 130 nm RRAM cells,
              65 nm periphery (S&H and ADC from the paper's refs 40-41).
  YAO2020     the macro core's costs per operation, derived from ED_TABLE1 by dividing each block's
              energy by its operations per 1-bit read (128 BL pulses, 128 WL and SL selections,
              128 S&H samples, 128 MUX settings, 128 conversions = 32 ADCs x 4, 128 shift-and-adds),
              the ADC's 2.55 pJ per conversion (Methods), and programming (ED Fig. 8d).
              The array's energy is not a constant: V_read^2 x G x t_pulse of every cell a BL
              pulse drives (golden/cell.py), see `array_pj`.
  HOROWITZ45  the digital periphery: M. Horowitz, "Computing's energy problem (and what we can do
              about it)", ISSCC 2014, 45 nm, 0.9 V (the table Yao cites for the GPU comparison):
              8/32-bit integer add 0.03/0.1 pJ, 8/32-bit multiply 0.2/3.1 pJ, 64-bit read of an
              8 KB SRAM 10 pJ.

Blocks: MACRO_BLOCKS are what Yao counted (ED Table 1); PERIPHERY_BLOCKS are what Yao left out
(pooling, activation, routing and buffering of data, softmax): "yao" = macro blocks only,
"all" = macro + digital periphery. The link to the host is off chip and not costed here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import cnn
from .cell import V_READ, level_conductance_us

# ---------------------------------------------------------------- Yao 2020 ED Table 1 (verbatim)
# block: (area um^2, latency ns or None, energy pJ per 1-bit read of the 128x128 macro core)
ED_TABLE1 = {
    "array":       (1107.56, None, 22.59),
    "bl_driver":   (2104.36, 0.002, 1.99),
    "wl_driver":   (2104.36, 0.008, 1.99),
    "sl_driver":   (1686.3, 0.38, 0.11),
    "sample_hold": (10.0, None, 0.13),
    "mux":         (1741.9, 0.008, 2.37),
    "mux_decoder": (69.84, 6.10, 0.05),
    "adc":         (48000.0, None, 326.4),
    "shift_add":   (6977.62, 0.19, 16.26),
}
ED_TABLE1_SUM = (63801.94, 371.89)      # the table's "Sum" row (um^2, pJ)
AREA_EFFICIENCY = 0.9069                # layout efficiency of the macro blocks (Methods)
MACRO_ROWS = MACRO_COLS = 128           # 128x128 array
MACRO_ADCS = 32                         # every 4 columns share one 8-bit ADC
T_READ_NS = 50.0                        # 1-bit read pulse, 0.2 V, 50 ns (20 MHz)
MACRO_INPUT_BITS = 8                    # ED Table 2: 8-bit inputs, 8 reads

# ED Table 2 and the V100 beside it (Methods; V100: 16-bit floating point)
ED_TABLE2 = {"gops": 81.92, "power_mw": 7.438, "area_mm2": 0.0704, "gops_per_w": 11014, "gops_per_mm2": 1164}
V100 = {"gops_per_w": 100, "gops_per_mm2": 37}

MACRO_BLOCKS = tuple(ED_TABLE1)
PERIPHERY_BLOCKS = ("accumulate", "requant", "pool", "fm_ram", "softmax")


@dataclass(frozen=True)
class Technology:
    """Cost per counted operation (pJ) and its source, one instance per technology."""
    name: str
    pj: dict
    source: dict = field(default_factory=dict)
    area_um2: dict = field(default_factory=dict)


def _per_op(block: str, ops: int = MACRO_ROWS) -> float:
    return ED_TABLE1[block][2] / ops


# Programming (Yao 2020 Methods and ED Fig. 8d): SET ~60 uA, RESET ~45 uA (measured in d.c. at 1.5 V
# / -1.2 V), applied at the array's pulse voltages, SET 2.0 V and RESET 1.8 V, for 50 ns.
SET_UA, SET_V, RESET_UA, RESET_V, T_PROG_NS = 60.0, 2.0, 45.0, 1.8, 50.0
# a verify read: one cell at 0.2 V for 50 ns, mid-window 11.25 uS (2.25 uA), + the macro periphery of
# one line (BL pulse, WL, SL, S&H, MUX setting, conversion, no shift-and-add)
VERIFY_CELL_UA = 2.25

YAO2020 = Technology(
    "Yao 2020 macro core (130 nm RRAM, 65 nm periphery)",
    pj={
        "array_per_us_pulse": V_READ ** 2 * 1e-6 * T_READ_NS * 1e-9 * 1e12,   # pJ per uS per 50 ns pulse
        "bl_driver": _per_op("bl_driver"), "wl_driver": _per_op("wl_driver"),
        "sl_driver": _per_op("sl_driver"), "sample_hold": _per_op("sample_hold"),
        "mux": _per_op("mux"), "mux_decoder": _per_op("mux_decoder"),
        "adc": 2.55,
        "shift_add": _per_op("shift_add"),
        "set_pulse": SET_V * SET_UA * 1e-6 * T_PROG_NS * 1e-9 * 1e12,          # 6.0 pJ
        "reset_pulse": RESET_V * RESET_UA * 1e-6 * T_PROG_NS * 1e-9 * 1e12,    # 4.05 pJ
    },
    source={
        "array_per_us_pulse": "V_read^2 x G x 50 ns (golden/cell.py); ED Table 1: 22.59 pJ per 128x128 read",
        "bl_driver": "ED Table 1: 1.99 pJ / 128 BLs", "wl_driver": "ED Table 1: 1.99 pJ / 128 WLs",
        "sl_driver": "ED Table 1: 0.11 pJ / 128 SLs", "sample_hold": "ED Table 1: 0.13 pJ / 128 S&H",
        "mux": "ED Table 1: 2.37 pJ / 128 MUX settings (32 MUX x 4)",
        "mux_decoder": "ED Table 1: 0.05 pJ / 128 MUX settings",
        "adc": "Yao 2020 Methods: 2.55 pJ per 8-bit conversion (ED Table 1: 326.4 pJ = 128 x 2.55)",
        "shift_add": "ED Table 1: 16.26 pJ / 128 shift-and-adds",
        "set_pulse": "ED Fig. 8d: 60 uA, at the 2.0 V SET pulse, 50 ns",
        "reset_pulse": "ED Fig. 8d: 45 uA, at the 1.8 V RESET pulse, 50 ns",
    },
    area_um2={k: v[0] for k, v in ED_TABLE1.items()},
)

HOROWITZ45 = Technology(
    "Horowitz ISSCC 2014, 45 nm",
    pj={"add8": 0.03, "add32": 0.1, "mult8": 0.2, "mult32": 3.1, "sram8k_64b": 10.0},
    source={"add8": "Horowitz 2014: 8-bit int add 0.03 pJ", "add32": "Horowitz 2014: 32-bit int add 0.1 pJ",
            "mult8": "Horowitz 2014: 8-bit int mult 0.2 pJ", "mult32": "Horowitz 2014: 32-bit int mult 3.1 pJ",
            "sram8k_64b": "Horowitz 2014: 64-bit read of an 8 KB SRAM 10 pJ"},
    area_um2={"add8": 36, "add32": 137, "mult8": 282, "mult32": 3495},
)


def periphery_costs(d: Technology = HOROWITZ45) -> dict:
    """pJ per counted digital operation, from the Horowitz table (operand widths: docs/datapath.md).

    accumulate: D = S+ - S- (s17) and the group sums (s17..s21): one 32-bit add each (the nearest
    table entry at or above the width). requant: (A M + 2^(sh-1)) >> sh with a 16-bit M and a
    clip: a 32-bit multiply and a 32-bit add. pool: an 8-bit compare (an 8-bit add). fm_ram: one
    byte of a 64-bit access of an 8 KB SRAM (10 pJ / 8; a feature map is at most 5,408 bytes).
    softmax, per class: a 16-bit exp-table read (10 pJ x 16/64), a 32-bit add to the sum and a
    16-bit division (taken as a 32-bit multiply)."""
    p = d.pj
    return {"acc_add": p["add32"], "requant": p["mult32"] + p["add32"], "pool": p["add8"],
            "fm_byte": p["sram8k_64b"] / 8, "softmax": p["sram8k_64b"] * 16 / 64 + p["add32"] + p["mult32"],
            "update_mac": p["mult32"] + p["add32"], "update_threshold": p["add32"]}


def verify_read_pj(t: Technology = YAO2020) -> float:
    """One single-cell verify read: the cell's V I t plus one line of the macro periphery."""
    p = t.pj
    cell = V_READ * VERIFY_CELL_UA * 1e-6 * T_READ_NS * 1e-9 * 1e12
    return cell + sum(p[k] for k in ("bl_driver", "wl_driver", "sl_driver", "sample_hold", "mux", "mux_decoder",
                                     "adc"))


# ---------------------------------------------------------------- ED Table 2 from ED Table 1

def ed_table2(table=ED_TABLE1, rows: int = MACRO_ROWS, cols: int = MACRO_COLS, input_bits: int = MACRO_INPUT_BITS,
              t_read_ns: float = T_READ_NS, area_efficiency: float = AREA_EFFICIENCY) -> dict:
    """Yao's benchmark of one macro core with 8-bit inputs, computed from the per-block table:
    performance = rows x cols x 2 ops / (input_bits x t_read), power = E(1-bit read) / t_read,
    area = sum of block areas / layout efficiency."""
    e_pj = sum(v[2] for v in table.values())
    area_mm2 = sum(v[0] for v in table.values()) / area_efficiency * 1e-6
    gops = rows * cols * 2 / (input_bits * t_read_ns * 1e-9) / 1e9
    power_mw = e_pj * 1e-12 / (t_read_ns * 1e-9) * 1e3
    return {"energy_pj_per_read": e_pj, "gops": gops, "power_mw": power_mw, "area_mm2": area_mm2,
            "gops_per_w": gops / (power_mw * 1e-3), "gops_per_mm2": gops / area_mm2}


def macro_read_activity(rows: int = MACRO_ROWS) -> dict:
    """The activity of one 1-bit read of the 128x128 macro core, every input bit 1 (activity keys)."""
    return {"read_slots": 1, "bl_pulses": rows, "wl_selections": rows, "sl_selections": rows, "sh_samples": rows,
            "mux_switches": rows, "adc_conversions": rows, "shift_adds": rows}


# ---------------------------------------------------------------- the array's conductances

def column_conductance_us(g_us) -> np.ndarray:
    """(n_pe, n_rows, n_bl) conductances -> (n_pe, n_bl): what one BL pulse drives with every WL of
    the PE on and the SLs clamped at 0 V (rtl/pe_board.py), in uS."""
    return np.asarray(g_us, dtype=np.float64).sum(axis=1)


def ideal_conductance_us(levels) -> np.ndarray:
    """Target conductances of a level map (golden.mapping.conductance_levels)."""
    return level_conductance_us(np.asarray(levels, dtype=np.float64))


def mean_pulse_conductance_us(mapping, col_g_us) -> dict:
    """Per weight layer: the mean conductance one of its BL pulses drives (over its groups' BLs)."""
    out = {}
    for name, gs in mapping.groups.items():
        v = [col_g_us[g.pe, j] for g in gs if g.n_out > 0 for j in range(len(g.inputs))]
        out[name] = float(np.mean(v)) if v else 0.0
    return out


class DriveMeter:
    """An array model wrapper that sums, per weight layer, the conductance every BL pulse drives
    (uS x pulses): the exact data-dependent input of the array's energy. `read` is the interface
    golden.datapath uses; the currents come from the wrapped array unchanged."""

    def __init__(self, array, mapping, col_g_us):
        self.array, self.col = array, np.asarray(col_g_us, dtype=np.float64)
        self.layer_of = {(g.pe, g.row_base): name for name, gs in mapping.groups.items() for g in gs}
        self.drive_us = {name: 0.0 for name in mapping.groups}

    def read(self, pe, bl_bits, rows):
        start = rows.start if isinstance(rows, slice) else int(np.asarray(rows).ravel()[0])
        b = np.asarray(bl_bits)
        self.drive_us[self.layer_of[(pe, start)]] += float(b.sum(axis=0, dtype=np.int64) @ self.col[pe, :b.shape[-1]])
        return self.array.read(pe, bl_bits, rows)


# ---------------------------------------------------------------- activity -> energy

def _mean(v) -> float:
    return float(np.mean(v)) if np.ndim(v) else float(v)


def layer_energy(a: dict, drive_us: float, t: Technology = YAO2020, dig: dict | None = None) -> dict:
    """Energy (pJ) by block of one layer's activity `a` (activity keys, numbers), with `drive_us`
    the conductance its BL pulses drove (uS x pulses)."""
    p, d = t.pj, dig or periphery_costs()
    g = lambda k: _mean(a.get(k, 0))  # noqa: E731
    return {
        "array": drive_us * p["array_per_us_pulse"],
        "bl_driver": g("bl_pulses") * p["bl_driver"], "wl_driver": g("wl_selections") * p["wl_driver"],
        "sl_driver": g("sl_selections") * p["sl_driver"], "sample_hold": g("sh_samples") * p["sample_hold"],
        "mux": g("mux_switches") * p["mux"], "mux_decoder": g("mux_switches") * p["mux_decoder"],
        "adc": g("adc_conversions") * p["adc"], "shift_add": g("shift_adds") * p["shift_add"],
        "accumulate": (g("diff_subs") + g("acc_adds")) * d["acc_add"],
        "requant": g("requant_ops") * d["requant"], "pool": g("pool_ops") * d["pool"],
        "fm_ram": (g("fm_reads") + g("fm_writes")) * d["fm_byte"], "softmax": g("softmax_ops") * d["softmax"],
    }


def programming_energy(a: dict, t: Technology = YAO2020) -> dict:
    """Energy (pJ) of a programming session's activity: SET and RESET pulses, verify reads."""
    e = {"set": _mean(a.get("set_pulses", 0)) * t.pj["set_pulse"],
         "reset": _mean(a.get("reset_pulses", 0)) * t.pj["reset_pulse"],
         "verify": _mean(a.get("verify_reads", 0)) * verify_read_pj(t)}
    e["total"] = sum(e.values())
    return e


def network_ops(layers=cnn.YAO2020, input_shape=cnn.INPUT_SHAPE) -> int:
    """Operations per image, 2 per multiply-accumulate of the weight layers (Yao's convention)."""
    macs = 0
    for L, (h, w, _) in zip(layers, cnn.shapes(layers, input_shape)):
        if isinstance(L, cnn.Conv):
            macs += h * w * L.out_ch * L.fan_in
        elif isinstance(L, cnn.Dense):
            macs += L.n_in * L.n_out
    return 2 * macs


def pe_area_mm2(mapping, t: Technology = YAO2020) -> float:
    """Area of the PEs the mapping uses, each a 128-row x n_bl macro scaled from ED Table 1: the cell
    array and BL drivers by n_bl / 128 columns, the per-row blocks (WL/SL drivers, S&H, MUX, ADCs,
    shift-and-add) as in the macro, over the layout efficiency."""
    a = t.area_um2
    col = mapping.n_bl / MACRO_COLS
    per_pe = (a["array"] + a["bl_driver"]) * col + sum(a[k] for k in MACRO_BLOCKS if k not in ("array", "bl_driver"))
    used = {g.pe for gs in mapping.groups.values() for g in gs}
    return len(used) * per_pe / AREA_EFFICIENCY * 1e-6


def _sum(d: dict, keys) -> float:
    return float(sum(d[k] for k in keys))


def per_image(activity: dict, images: int) -> dict:
    """Counter totals over `images` images {layer: {key: total}} -> per image (what sim's RTL counters
    give over a run -> what energy_report takes)."""
    if images < 1:
        raise ValueError(f"per_image: images must be >= 1, got {images}")
    return {name: {k: _mean(v) / images for k, v in a.items()} for name, a in activity.items()}


def energy_by_layer(activity: dict, drive_us: dict, t: Technology = YAO2020) -> dict:
    """{layer: {block: pJ per image}} from a per-image activity {layer: {key: value or (N,) array}}
    (golden.activity.inference_activity's form; its "total" entry is ignored) and the conductance
    driven per layer (DriveMeter.drive_us / images, or bl_pulses x mean_pulse_conductance_us)."""
    dig = periphery_costs()
    return {name: layer_energy(a, drive_us.get(name, 0.0), t, dig) for name, a in activity.items() if name != "total"}


def hybrid_epoch_energy(per_image_all_pj: float, prog: dict, n_in: int, n_out: int, n_train: int = 55_000,
                        batch: int = 100) -> dict:
    """One hybrid-training epoch (Yao 2020: 550 batches of 100): every training image through the
    network (forward with softmax = the inference energy), the update engine (one multiply-accumulate
    V_i x delta_i per FC weight per image, one threshold compare per weight per batch) and the
    programming pulses and verify reads of the epoch (`prog`: activity keys summed over the epoch)."""
    d = periphery_costs()
    forward = n_train * per_image_all_pj
    update = n_train * n_in * n_out * d["update_mac"] + (n_train // batch) * n_in * n_out * d["update_threshold"]
    pe = programming_energy(prog)
    return {"forward_pj": forward, "update_pj": update, "programming_pj": pe["total"], "programming": pe,
            "total_pj": forward + update + pe["total"], "images": n_train, "batches": n_train // batch}


def drive_from_pulses(activity: dict, mapping, col_g_us) -> dict:
    """The conductance driven per layer estimated from the BL pulse counts alone (what the RTL's
    counters give): bl_pulses x the mean conductance one of the layer's BL pulses drives."""
    g = mean_pulse_conductance_us(mapping, col_g_us)
    return {name: _mean(a.get("bl_pulses", 0)) * g.get(name, 0.0) for name, a in activity.items() if name != "total"}


def energy_report(activity: dict, mapping=None, layers=cnn.YAO2020, levels=None, drive_us: dict | None = None,
                  transfer: dict | None = None, epoch: dict | None = None, seconds_per_image: float | None = None,
                  t: Technology = YAO2020, input_shape=cnn.INPUT_SHAPE, g_us=None) -> dict:
    """The energy report of inference (per image) and of programming sessions, as JSON-able data.

    activity: per-image inference activity {layer: {key: value or (N,) per image}} (golden/activity.py);
    drive_us: the conductance the BL pulses drove per layer per image (DriveMeter); when None it is
    estimated from bl_pulses and the board's conductances: g_us (n_pe, n_rows, n_bl) in uS (e.g. a
    golden.crossbar.Crossbar's g), else the target conductances of `levels`
    (golden.mapping.conductance_levels of the integer weights);
    transfer: the weight transfer's programming activity; epoch: {"programming": activity summed over
    one hybrid epoch} (or None); seconds_per_image: latency, for GOP/s/mm^2."""
    from .mapping import build_mapping
    mapping = mapping or build_mapping(layers)
    if drive_us is None:
        if g_us is None and levels is None:
            raise ValueError("energy_report needs drive_us, g_us or the weights' levels (mapping.conductance_levels)")
        g = g_us if g_us is not None else ideal_conductance_us(levels)
        drive_us = drive_from_pulses(activity, mapping, column_conductance_us(g))
    by_layer = energy_by_layer(activity, drive_us, t)
    blocks = MACRO_BLOCKS + PERIPHERY_BLOCKS
    by_block = {b: float(sum(v[b] for v in by_layer.values())) for b in blocks}
    yao, allp = _sum(by_block, MACRO_BLOCKS), _sum(by_block, blocks)
    ops = network_ops(layers, input_shape)
    area = pe_area_mm2(mapping, t)
    gpw = lambda e: ops / e * 1e3 if e else None  # noqa: E731  (ops / pJ x 1e12 / 1e9)
    out = {
        "energy_pj_per_image": {"yao": yao, "all": allp},
        "periphery_share": (allp - yao) / allp if allp else None,
        "energy_breakdown": {"by_block": by_block, "by_layer": by_layer, "counted_by_yao": list(MACRO_BLOCKS),
                             "periphery": list(PERIPHERY_BLOCKS)},
        "ops_per_image": ops,
        "gops_per_w": {"yao": gpw(yao), "all": gpw(allp), "yao2020_macro": ED_TABLE2["gops_per_w"],
                       "v100": V100["gops_per_w"]},
        "area_mm2": area,
        "gops_per_mm2": {"mcnn": ops / seconds_per_image / area / 1e9 if seconds_per_image else None,
                         "yao2020_macro": ED_TABLE2["gops_per_mm2"], "v100": V100["gops_per_mm2"]},
        "seconds_per_image": seconds_per_image,
    }
    if transfer is not None:
        out["energy_transfer_pj"] = programming_energy(transfer, t)
    if epoch is not None:
        fc = cnn.weight_layers(layers)[-1]
        out["energy_hybrid_epoch_pj"] = hybrid_epoch_energy(allp, epoch["programming"], fc.n_in, fc.n_out,
                                                            epoch.get("n_train", 55_000), epoch.get("batch", 100))
    out["ed_table2"] = ed_table2()
    return out
