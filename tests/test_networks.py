"""golden/networks.py: the registry, the 8x8 input transform and the li2018 mapping."""
import numpy as np
import pytest

from golden import mapping, networks


def test_crop_area8_against_a_loop():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    x[0] = 255                                  # saturation: the mean of 255s is 255
    x[1] = 0
    x[2, 2:5, 2:5] = [[0, 0, 0], [0, 0, 0], [0, 0, 4]]   # 4/9 = 0.44 -> 0
    x[3, 2:5, 2:5] = [[0, 0, 0], [0, 0, 0], [0, 0, 5]]   # 5/9 = 0.56 -> 1
    y = networks.crop_area8(x)
    assert y.shape == (5, 8, 8) and y.dtype == np.uint8
    for n in range(5):
        for i in range(8):
            for j in range(8):
                block = [int(v) for v in x[n, 2 + 3 * i:5 + 3 * i, 2 + 3 * j:5 + 3 * j].ravel()]
                assert y[n, i, j] == int(sum(block) / 9 + 0.5), (n, i, j)
    assert y[0].min() == 255 and y[1].max() == 0
    with pytest.raises(ValueError, match="28, 28"):
        networks.crop_area8(x[:, :27])


def test_li2018_maps_onto_four_full_pes():
    net = networks.network("li2018")
    assert net.devices == 7992                  # Li 2018: 64-54-10 = 7,992 devices
    m = mapping.build_mapping(net.layers, net.placement)
    assert [len(g.inputs) for g in m.groups["H"]] == [16] * 4
    assert [len(g.inputs) for g in m.groups["O"]] == [16, 16, 16, 6]
    assert [m.rows_used(p) for p in range(8)] == [128] * 4 + [0] * 4
    assert net.prepare(np.zeros((2, 28, 28), np.uint8)).shape == (2, 8, 8)


def test_unknown_network_is_refused():
    with pytest.raises(ValueError, match="unknown network 'lenet'.*li2018"):
        networks.network("lenet")
