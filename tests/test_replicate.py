"""Replicated convolver groups: placement and the split-image mode."""
import numpy as np
import pytest

from golden import cnn, weights
from golden.analog import IdealArray
from golden.datapath import Datapath
from golden.hybrid import fc_inputs
from golden.idx import default_data_dir, load_dataset
from golden.mapping import YAO2020_PLACEMENT, build_mapping, conductance_levels
from golden.replicate import GROUP_PLACEMENTS, group_mappings, split_forward


@pytest.fixture(scope="module")
def setup():
    return weights.load(), load_dataset(default_data_dir())


def test_group_placement_fits_and_shares_fc():
    maps = group_mappings()
    assert GROUP_PLACEMENTS["G1"] == YAO2020_PLACEMENT
    assert maps["G1"].table() == build_mapping().table()
    used = np.zeros((8, 128), int)
    for m in maps.values():
        for name, gs in m.groups.items():
            if name == "FC":
                assert [(x.pe, x.row_base) for x in gs] == [(x.pe, x.row_base) for x in maps["G1"].groups["FC"]]
                continue
            for x in gs:
                used[x.pe, x.row_base:x.row_base + 2 * x.n_out] += 1
    for x in maps["G1"].groups["FC"]:
        used[x.pe, x.row_base:x.row_base + 2 * x.n_out] += 1
    assert used.max() == 1                       # no SL row used twice
    assert used.sum(1).max() <= 128 and used.sum() == 3 * 208 + 240
    conv_pes = [{x.pe for n in ("C1", "C3") for x in m.groups[n]} for m in maps.values()]
    assert conv_pes == [{0, 2}, {1, 3}, {5, 7}]


def test_split_mode_equals_unsplit_with_ideal_cells(setup):
    w, ds = setup
    maps = group_mappings()
    lv = np.zeros((8, 128, 16), np.int8)
    for m in maps.values():
        one = conductance_levels(cnn.YAO2020, w.int_w, m, unused_level=-1)
        lv = np.where(one >= 0, one, lv)
    arr = IdealArray(lv)
    x = ds.test_images[:30]
    ref = fc_inputs(IdealArray(Datapath(w.int_w, w.q).levels), w.int_w, w.q, maps["G1"], x)
    for g in maps:
        assert np.array_equal(fc_inputs(arr, w.int_w, w.q, maps[g], x), ref)
    assert np.array_equal(split_forward(arr, maps, w.int_w, w.q, x), ref)


def test_split_mode_uses_each_group_for_its_band(setup):
    """Break G3's cells: only the bottom region of the FC inputs may change."""
    w, ds = setup
    maps = group_mappings()
    lv = np.zeros((8, 128, 16), np.int8)
    for m in maps.values():
        one = conductance_levels(cnn.YAO2020, w.int_w, m, unused_level=-1)
        lv = np.where(one >= 0, one, lv)
    x = ds.test_images[:30]
    ref = split_forward(IdealArray(lv), maps, w.int_w, w.q, x)
    lv2 = lv.copy()
    lv2[[5, 7]] = 7 - lv2[[5, 7]]
    out = split_forward(IdealArray(lv2), maps, w.int_w, w.q, x).reshape(30, 12, 4, 4)
    ref = ref.reshape(30, 12, 4, 4)
    assert np.array_equal(out[:, :, :2], ref[:, :, :2])   # S4 rows 0-1 come from C3 rows 0-3 (G1, G2)
    assert not np.array_equal(out[:, :, 3], ref[:, :, 3])
