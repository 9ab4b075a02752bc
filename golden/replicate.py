"""Replicated convolvers (Yao 2020, Fig. 4): three PE groups hold independent copies of C1/C3
and share the FC PEs.

Placement (PE indices from 0; PE1 of the paper = 0), one golden.mapping placement table per group:

  group | C1 | C3     | FC (shared) | rows used
  G1    | 0  | 0, 2   | 4, 6        | PE0: C1 0..15 + C3 ch 0-3 16..111; PE2: C3 ch 4-7 0..95
  G2    | 1  | 1, 3   | 4, 6        | PE1, PE3 as PE0, PE2
  G3    | 5  | 5, 7   | 4, 6        | PE5, PE7 as PE0, PE2
  FC    |    |        | 4, 6        | PE4: groups 0-5 rows 0..119; PE6: groups 6-11 rows 0..119

G1 is exactly the single-network placement of the paper (golden.mapping.YAO2020_PLACEMENT), so
the main experiment and group G1 are the same cells. Every PE uses at most 120 of its 128 rows.

Split-image mode: one image is cut into three horizontal regions, top to bottom, and each group
computes the convolution outputs of its region (the line buffers supply the halo rows); pooling and
everything digital are shared. Region boundaries sit on pooling windows so no pooled value mixes
two groups' C1 outputs: C1 output rows [0, 9), [9, 18), [18, 26) (S2 rows 0-2, 3-5, 6-7) and C3
output rows [0, 3), [3, 6), [6, 8). With ideal cells the result equals the unsplit datapath.
"""
from __future__ import annotations

import numpy as np

from . import cnn
from .datapath import DatapathConfig, layer_accumulate, maxpool, relu_requant
from .mapping import Mapping, build_mapping

GROUP_PLACEMENTS = {
    "G1": {"C1": (0,), "C3": (0, 2), "FC": (4, 6)},
    "G2": {"C1": (1,), "C3": (1, 3), "FC": (4, 6)},
    "G3": {"C1": (5,), "C3": (5, 7), "FC": (4, 6)},
}

# Output-row bands per conv layer for the split-image mode (start rows of G1, G2, G3).
SPLIT_BANDS = {"C1": (0, 9, 18), "C3": (0, 3, 6)}


def group_mappings(layers=cnn.YAO2020, groups=("G1", "G2", "G3")) -> dict[str, Mapping]:
    return {g: build_mapping(layers, GROUP_PLACEMENTS[g]) for g in groups}


def conv_layers(layers=cnn.YAO2020):
    """The layers before the final dense layer (whose output is the FC input)."""
    dense = cnn.weight_layers(layers)[-1]
    return tuple(L for L in layers[:list(layers).index(dense)])


def split_forward(array, mappings: dict[str, Mapping], int_w: dict, q, x_u8, layers=cnn.YAO2020,
                  cfg: DatapathConfig | None = None, bands=SPLIT_BANDS, batch: int = 250) -> np.ndarray:
    """FC inputs (N, fan_in) u8 of images split over the groups (in mapping order) by output-row
    band; built from the golden datapath blocks (im2col, layer_accumulate, relu_requant, maxpool)."""
    cfg = cfg or DatapathConfig()
    names = list(mappings)
    out = []
    for i in range(0, len(x_u8), batch):
        x = np.asarray(x_u8[i:i + batch])[..., None].astype(np.int64)
        for L in conv_layers(layers):
            if isinstance(L, cnn.Conv):
                cols = cnn.im2col(x, L.k, L.pad)
                n, ho, wo, f = cols.shape
                starts = list(bands[L.name]) + [ho]
                if len(starts) - 1 != len(names):
                    raise ValueError(f"split bands of {L.name} give {len(starts) - 1} regions for {len(names)} groups")
                m, sh = q.requant[L.name]
                y = np.empty((n, ho, wo, L.out_ch), dtype=np.int64)
                for gi, gname in enumerate(names):
                    r0, r1 = starts[gi], starts[gi + 1]
                    if r1 <= r0:
                        continue
                    acc = layer_accumulate(array, mappings[gname].groups[L.name],
                                           cols[:, r0:r1].reshape(-1, f), cfg.input_bits, cfg.adc(L.name))
                    y[:, r0:r1] = relu_requant(acc, m, sh).reshape(n, r1 - r0, wo, -1)
                x = y
            else:
                x = maxpool(x, L.size)
        out.append(cnn.flatten_chw(x).astype(np.uint8))
    return np.concatenate(out)
