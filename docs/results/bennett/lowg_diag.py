"""Diagnostic of the ELM's late drop at g = 16 (issue 16, helper lowg): the validation probe of
lowg_probe.py (first 55k training images, last 5k scored, seed 0) with, every 5k examples, the
per-class recall, each column's mean output on the validation images (in units of s = w_max
sqrt(M + 1)), the error cases per cycle and the fraction of pinned devices per column.

  python docs/results/bennett/lowg_diag.py G MARGIN BATCH EPOCHS [C2C] [D2D_LEVELS]"""
import sys

import numpy as np

from golden import elm
from golden.devices import preset
from golden.synapse import DiffArray, encode

sys.path.insert(0, "docs/results/bennett")
from lowg_probe import EVERY, N_FIT, data  # noqa: E402


def main(g, margin, batch, epochs, c2c=0.3, d2dl=0.1):
    p = preset("bennett2019-linear", levels=g, c2c_sigma=c2c, d2d_levels_sigma=d2dl)
    imgs, labels = data()
    rng = np.random.default_rng(0)
    x = encode(imgs)
    h = elm.hidden(x, elm.projection(p, x.shape[1], 3000, rng))
    hf, hv, lf, lv = h[:N_FIT], h[N_FIT:], labels[:N_FIT], labels[N_FIT:]
    t = elm.targets(lf)
    arr = DiffArray(p, (3001, 10), rng)
    s = elm.out_norm(arr)
    errs = []
    orig = elm.train_batch

    def counting(a, hb, tb, margin=0.0):
        hb64 = hb.astype(np.float64)
        e = elm.swh_error(hb64 @ a.g[0] - hb64 @ a.g[1], tb, margin, s)
        errs.append(np.count_nonzero(e, axis=0))
        return orig(a, hb, tb, margin)
    elm.train_batch = counting

    def point(seen):
        y = hv.astype(np.float64) @ arr.w
        pred = np.argmax(y, axis=1)
        rec = [round(100 * float(np.mean(pred[lv == k] == k))) for k in range(10)]
        pin = np.mean((arr.g <= arr.lo + 1e-9) | (arr.g >= arr.hi - 1e-9), axis=(0, 1))
        e = np.mean(errs[-50:], axis=0) if errs else np.zeros(10)
        print(f"{seen:7d} val {100 * np.mean(pred == lv):5.2f} recall {rec} "
              f"meanY/s {np.round(y.mean(0) / s, 1).tolist()} "
              f"err/batch {np.round(e, 1).tolist()} pinned {np.round(pin, 2).tolist()}", flush=True)
    elm.train_insitu(arr, hf, t, rng, epochs, "swh", point, EVERY, batch, margin)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]), float(a[1]), int(a[2]), int(a[3]), *(float(v) for v in a[4:]))
