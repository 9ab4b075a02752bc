"""Cycle-by-cycle look at the ELM's output layer at g = 16 (issue 16, helper lowg): the validation
probe's run (seed 0, margin 0.4, b = 100, first 55k training images) for EXAMPLES examples, then
N single programming cycles; after each: validation accuracy, each column's mean output on the
validation images (units of s), and sign(#positive - #negative error cases) of the cycle just
applied (the direction every near-constant hidden unit's weight moved: the column's offset).

  python docs/results/bennett/lowg_cycle.py G EXAMPLES N [C2C] [D2D]"""
import sys

import numpy as np

from golden import elm
from golden.devices import preset
from golden.synapse import DiffArray, encode
from lowg_probe import N_FIT, data


def main(g, n_ex, n_cyc, c2c=0.3, d2d=None):
    over = {"levels": g, "c2c_sigma": c2c}
    if d2d is not None:
        over.update(d2d_bounds_sigma=d2d, d2d_levels_sigma=d2d)
    p = preset("bennett2019-linear", **over)
    imgs, labels = data()
    rng = np.random.default_rng(0)
    x = encode(imgs)
    h = elm.hidden(x, elm.projection(p, x.shape[1], 3000, rng))
    hf, hv, lf, lv = h[:N_FIT], h[N_FIT:], labels[:N_FIT], labels[N_FIT:]
    t = elm.targets(lf)
    arr = DiffArray(p, (3001, 10), rng)
    s = elm.out_norm(arr)
    ep, rest = divmod(n_ex, N_FIT)
    elm.train_insitu(arr, hf, t, rng, ep, "swh", None, 0, 100, 0.4)
    elm.train_insitu(arr, hf[:rest], t[:rest], rng, 1, "swh", None, 0, 100, 0.4)
    order = rng.permutation(N_FIT)
    for c in range(n_cyc):
        idx = order[100 * c:100 * c + 100]
        hb = hf[idx].astype(np.float64)
        e = elm.swh_error(hb @ arr.w, t[idx], 0.4, s)
        net = np.sign((e == 1).sum(0) - (e == -1).sum(0))
        elm.train_batch(arr, hf[idx], t[idx], 0.4)
        y = hv.astype(np.float64) @ arr.w
        print(f"cycle {c}: val {100 * np.mean(np.argmax(y, 1) == lv):5.2f} "
              f"meanY/s {np.round(y.mean(0) / s, 1).tolist()} "
              f"offset move {net.astype(int).tolist()}", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]), int(a[1]), int(a[2]), *(float(v) for v in a[3:]))
