"""Mapping of the CNN's layers onto PE rows, as data (Yao 2020, Fig. 2 and Methods).

A layer's unrolled fan-in is cut into *read groups* of at most 16 inputs (one per bit line):
a convolution gives one group per input channel (its k*k patch), a dense layer one group per
16 consecutive inputs. A group occupies 2 * n_out source lines (a G+ row and a G- row per
output, adjacent) on one PE; one array read applies the group's inputs to the BLs and samples
those SLs. Partial sums of the groups are added digitally.

The placement (which PEs a layer may use) is a table; the builder fills the listed PEs in
order, never splitting a group across PEs. YAO2020_PLACEMENT reproduces the paper:
C1 on PE1 (16 rows); C3 on PE1 + PE3 (4 channels x 24 rows each); FC on PE5 + PE7
(6 groups x 20 rows each). PEs are numbered from 0 here (PE1 = index 0).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from . import cnn

N_PE, N_ROWS, N_BL = 8, 128, 16  # Yao 2020: 8 PEs of 128 x 16 1T1R cells

YAO2020_PLACEMENT = {"C1": (0,), "C3": (0, 2), "FC": (4, 6)}


@dataclass(frozen=True)
class ReadGroup:
    layer: str
    index: int                 # group index within the layer
    pe: int                    # 0..N_PE-1
    inputs: tuple[int, ...]    # unrolled fan-in index driven on BL 0, 1, ...
    row_base: int              # output o uses SL rows row_base + 2o (G+) and row_base + 2o + 1 (G-)
    n_out: int

    @property
    def rows_pos(self):
        return np.arange(self.n_out) * 2 + self.row_base

    @property
    def rows_neg(self):
        return self.rows_pos + 1


@dataclass
class Mapping:
    groups: dict[str, list[ReadGroup]] = field(default_factory=dict)
    n_pe: int = N_PE
    n_rows: int = N_ROWS
    n_bl: int = N_BL

    def rows_used(self, pe: int) -> int:
        return sum(2 * g.n_out for gs in self.groups.values() for g in gs if g.pe == pe)

    def table(self):
        """One row per read group: the mapping table as plain data (JSON-able)."""
        return [{"layer": g.layer, "group": g.index, "pe": g.pe, "rows": [g.row_base, g.row_base + 2 * g.n_out],
                 "inputs": list(g.inputs)} for gs in self.groups.values() for g in gs]

    def to_json(self) -> str:
        return json.dumps({"n_pe": self.n_pe, "n_rows": self.n_rows, "n_bl": self.n_bl, "groups": self.table()})


def fanin_groups(L, n_bl=N_BL) -> list[tuple[int, ...]]:
    """Cut a layer's unrolled fan-in into read groups of at most n_bl inputs."""
    if isinstance(L, cnn.Conv):
        kk = L.k * L.k
        if kk > n_bl:
            raise ValueError(f"{L.name}: a {L.k}x{L.k} kernel has {kk} inputs, more than {n_bl} bit lines")
        return [tuple(range(c * kk, (c + 1) * kk)) for c in range(L.in_ch)]
    return [tuple(range(i, min(i + n_bl, L.n_in))) for i in range(0, L.n_in, n_bl)]


def build_mapping(layers=cnn.YAO2020, placement=None, n_pe=N_PE, n_rows=N_ROWS, n_bl=N_BL) -> Mapping:
    placement = YAO2020_PLACEMENT if placement is None else placement
    used = [0] * n_pe
    m = Mapping(n_pe=n_pe, n_rows=n_rows, n_bl=n_bl)
    for L in cnn.weight_layers(layers):
        if L.name not in placement:
            raise ValueError(f"placement has no entry for layer {L.name} (keys: {sorted(placement)})")
        pes = list(placement[L.name])
        bad = [p for p in pes if not (isinstance(p, (int, np.integer)) and 0 <= p < n_pe)]
        if bad or not pes:
            raise ValueError(f"{L.name}: placement PEs {pes}: PE index out of range 0..{n_pe - 1}")
        n_out = L.out_ch if isinstance(L, cnn.Conv) else L.n_out
        need = 2 * n_out
        if need > n_rows:
            raise ValueError(f"{L.name}: {n_out} outputs need {need} rows, a PE has {n_rows}")
        gs, k = [], 0
        for gi, inputs in enumerate(fanin_groups(L, n_bl)):
            while k < len(pes) and used[pes[k]] + need > n_rows:
                k += 1
            if k == len(pes):
                raise ValueError(f"{L.name}: group {gi} does not fit on PEs {pes} "
                                 f"(rows used {[used[p] for p in pes]} of {n_rows})")
            pe = pes[k]
            gs.append(ReadGroup(L.name, gi, pe, inputs, used[pe], n_out))
            used[pe] += need
        m.groups[L.name] = gs
    return m


def unrolled_weights(L, w: np.ndarray) -> np.ndarray:
    """Weights as (n_out, fan_in), fan-in in the unrolled input order."""
    if isinstance(L, cnn.Conv):
        return w.reshape(w.shape[0], -1)
    return w.T


def conductance_levels(layers, int_w: dict, mapping: Mapping, unused_level: int = 0) -> np.ndarray:
    """Target level (0..7) of every cell: array (n_pe, n_rows, n_bl), int8.

    Cells the mapping does not use keep `unused_level`.
    """
    from .cell import weight_to_levels
    lv = np.full((mapping.n_pe, mapping.n_rows, mapping.n_bl), unused_level, dtype=np.int8)
    by_name = {L.name: L for L in layers}
    for name, gs in mapping.groups.items():
        wu = unrolled_weights(by_name[name], np.asarray(int_w[name]))
        lp, ln = weight_to_levels(wu)
        for g in gs:
            cols = list(g.inputs)
            lv[g.pe, g.rows_pos, :len(cols)] = lp[:, cols]
            lv[g.pe, g.rows_neg, :len(cols)] = ln[:, cols]
    return lv


def group_patch(x: np.ndarray, L, g: ReadGroup, ho: int = 0, wo: int = 0) -> np.ndarray:
    """The inputs read group `g` of layer `L` drives on its BLs (BL j: g.inputs[j]) at output
    position (ho, wo); x (H, W, C) is the layer's input map (zero padding outside it). A dense
    layer has one position, its fan-in the channel-major flatten of x."""
    if isinstance(L, cnn.Conv):
        fan_in = cnn.im2col(x[None], L.k, L.pad)[0, ho, wo]
    else:
        fan_in = cnn.flatten_chw(x[None])[0]
    return fan_in[list(g.inputs)]
