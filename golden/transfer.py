"""Weight transfer: write-verify every mapped cell to its level, with a report (Yao 2020, Fig. 3c-e).

The cells to program come from the golden mapping(s) (golden/mapping.py): every G+ and G- cell of
every read group, at level max(+-w, 0) of its integer weight. Several mappings may share PEs (the
replicated convolver groups share the FC PEs): a cell listed by several mappings is programmed
once, and must have the same target in all of them. Cells are programmed row by row, in
(PE, SL row, BL) order, through Crossbar.program_cell (golden.write_verify.write_verify). Cells the
mappings do not use are never touched and keep their initial state.

The report lists every cell that failed to verify (never silent), the pulses per cell (mean, max,
histogram, mean per target level: ED Fig. 8) and the transfer error per layer: of each device
(read current - target current) and of each weight (I+ - I-) - (target+ - target-), in nA, from
the state after relaxation (what inference sees).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import cnn
from .cell import weight_to_levels
from .devices import NA_PER_US, STUCK_NAMES
from .mapping import Mapping, unrolled_weights
from .write_verify import VERIFY_LSB_NA, level_target_code

ERR_BINS_NA = np.arange(-1000, 1001, 25)


@dataclass
class Plan:
    """Cells to program, sorted row by row, and the weights they form."""
    pe: np.ndarray
    row: np.ndarray
    bl: np.ndarray
    level: np.ndarray
    layer: list            # layer name per cell
    key: list              # report key per cell: "<group>/<layer>" for private cells, "<layer>" for shared
    weights: dict = field(default_factory=dict)  # key -> (pos cell idx, neg cell idx, target weight)


def plan(mappings: dict[str, Mapping] | Mapping, int_w: dict, layers=cnn.YAO2020) -> Plan:
    if isinstance(mappings, Mapping):
        mappings = {"G1": mappings}
    by_name = {L.name: L for L in layers}
    cells: dict[tuple, dict] = {}
    wlist: dict[tuple, list] = {}   # (layer, weight-owner) -> list of (pos, neg, w)
    for gname, m in mappings.items():
        for lname, gs in m.groups.items():
            wu = np.asarray(unrolled_weights(by_name[lname], np.asarray(int_w[lname])), dtype=np.int64)
            lp, ln = weight_to_levels(wu)
            for g in gs:
                for o in range(g.n_out):
                    for j, fi in enumerate(g.inputs):
                        pos = (g.pe, int(g.rows_pos[o]), j)
                        neg = (g.pe, int(g.rows_neg[o]), j)
                        for c, lv in ((pos, int(lp[o, fi])), (neg, int(ln[o, fi]))):
                            if c in cells:
                                if cells[c]["level"] != lv or cells[c]["layer"] != lname:
                                    raise ValueError(f"cell PE{c[0]} row {c[1]} BL {c[2]}: mapped twice with "
                                                     f"different targets ({cells[c]['layer']} level "
                                                     f"{cells[c]['level']} vs {lname} level {lv})")
                                cells[c]["groups"].add(gname)
                            else:
                                cells[c] = {"level": lv, "layer": lname, "groups": {gname}}
                        wlist.setdefault((lname, gname), []).append((pos, neg, int(wu[o, fi])))
    order = sorted(cells)
    index = {c: i for i, c in enumerate(order)}
    shared = {c: len(cells[c]["groups"]) == len(mappings) > 1 for c in order}

    def keyof(c):
        d = cells[c]
        if shared[c] or len(mappings) == 1:
            return d["layer"]
        return f"{'+'.join(sorted(d['groups']))}/{d['layer']}"

    p = Plan(np.array([c[0] for c in order], dtype=np.int64), np.array([c[1] for c in order], dtype=np.int64),
             np.array([c[2] for c in order], dtype=np.int64),
             np.array([cells[c]["level"] for c in order], dtype=np.int64),
             [cells[c]["layer"] for c in order], [keyof(c) for c in order])
    seen = set()
    for lst in wlist.values():
        k = keyof(lst[0][0])
        if k in seen:
            continue   # a shared layer: its weights once
        seen.add(k)
        p.weights[k] = (np.array([index[a] for a, _, _ in lst]), np.array([index[b] for _, b, _ in lst]),
                        np.array([w for _, _, w in lst]))
    return p


def _stats(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return {"n": 0}
    h, _ = np.histogram(np.clip(x, ERR_BINS_NA[0], ERR_BINS_NA[-1]), ERR_BINS_NA)
    return {"n": int(len(x)), "mean_na": round(float(x.mean()), 2), "sd_na": round(float(x.std()), 2),
            "max_abs_na": round(float(np.abs(x).max()), 1),
            "within_100na": round(float((np.abs(x) <= 100).mean() * 100), 2),
            "hist": h.tolist()}


@dataclass
class TransferReport:
    plan: Plan
    pulses: np.ndarray
    ok: np.ndarray
    final_code: np.ndarray
    target_code: np.ndarray
    current_na: np.ndarray      # after relaxation
    failures: list
    seconds: float

    @property
    def device_error_na(self):
        return self.current_na - self.target_code * VERIFY_LSB_NA

    def weight_error_na(self, key):
        ip, ineg, w = self.plan.weights[key]
        e = self.device_error_na
        return e[ip] - e[ineg]

    def summary(self) -> dict:
        p = self.plan
        keys = list(dict.fromkeys(p.key))
        lv = p.level
        hist = np.bincount(self.pulses)
        return {
            "cells": int(len(self.pulses)),
            "pulses_total": int(self.pulses.sum()),
            "pulses_mean": round(float(self.pulses.mean()), 3) if len(self.pulses) else 0.0,
            "pulses_max": int(self.pulses.max()) if len(self.pulses) else 0,
            "pulses_hist": hist.tolist(),
            "pulses_mean_per_level": [round(float(self.pulses[lv == k].mean()), 2) if (lv == k).any() else None
                                      for k in range(8)],
            "failed": len(self.failures),
            "failures": self.failures,
            "device_error": {k: _stats(self.device_error_na[[i for i, kk in enumerate(p.key) if kk == k]])
                             for k in keys},
            "weight_error": {k: _stats(self.weight_error_na(k)) for k in p.weights},
            "err_bins_na": ERR_BINS_NA.tolist(),
            "seconds": round(self.seconds, 3),
        }


def transfer(xb, mappings, int_w: dict, layers=cnn.YAO2020) -> TransferReport:
    """Program every mapped cell of the board `xb` (golden.crossbar.Crossbar) to its level."""
    p = plan(mappings, int_w, layers)
    n = len(p.level)
    pulses = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    final = np.zeros(n, dtype=np.int64)
    tgt = np.array([level_target_code(int(k)) for k in range(8)])[p.level]
    failures = []
    t0 = time.perf_counter()
    for i in range(n):
        pe, row, bl = int(p.pe[i]), int(p.row[i]), int(p.bl[i])
        r = xb.program_cell(pe, row, bl, int(tgt[i]))
        pulses[i], ok[i], final[i] = r.pulses, r.ok, r.final_code
        if not r.ok:
            failures.append({"pe": pe, "row": row, "bl": bl, "layer": p.layer[i], "key": p.key[i],
                             "level": int(p.level[i]), "target_code": int(tgt[i]), "final_code": int(r.final_code),
                             "pulses": int(r.pulses), "state": STUCK_NAMES[int(xb.stuck[pe, row, bl])]})
    secs = time.perf_counter() - t0
    cur = xb.g[p.pe, p.row, p.bl] * NA_PER_US
    return TransferReport(p, pulses, ok, final, tgt, cur, failures, secs)


def format_failures(failures: list, limit: int | None = None) -> str:
    lines = [f"{len(failures)} cell(s) failed to verify"]
    for f in failures[:limit]:
        seed = f"seed {f['seed']}: " if "seed" in f else ""
        lines.append(f"  {seed}PE{f['pe']} row {f['row']} BL {f['bl']} ({f['key']}, level {f['level']}): target code "
                     f"{f['target_code']}, last read {f['final_code']} after {f['pulses']} pulses [{f['state']}]")
    if limit is not None and len(failures) > limit:
        lines.append(f"  ... {len(failures) - limit} more")
    return "\n".join(lines)
