"""Validation probes for the low-g comparison (issue 16, helper lowg): train on the first 55k
training images, score on the last 5k (never the test file). One seed (0).

  python docs/results/bennett/lowg_probe.py elm G MARGIN BATCH EPOCHS [C2C]   # ELM M = 3000
  python docs/results/bennett/lowg_probe.py mlp G GAIN EPOCHS                  # tanh MLP M = 300, b = 100

Prints a validation curve (every 5k examples) and, for the ELM, the fraction of output devices
pinned at their window edges (G_min or G_max) at each point: the saturation diagnostic."""
import sys
import time

import numpy as np

from golden import elm, idx
from golden.devices import preset
from golden.signmlp import SignMLP
from golden.synapse import DiffArray, encode

N_FIT = 55000
EVERY = 5000


def data():
    d = idx.load_dataset(idx.default_data_dir())
    return d.train_images, d.train_labels


def pinned(arr):
    g, lo, hi = arr.g, arr.lo, arr.hi
    return float(np.mean(g <= lo + 1e-9)), float(np.mean(g >= hi - 1e-9))


def probe_elm(g, margin, batch, epochs, c2c=None):
    over = {"levels": g} if c2c is None else {"levels": g, "c2c_sigma": c2c}
    p = preset("bennett2019-linear", **over)
    imgs, labels = data()
    rng = np.random.default_rng(0)
    x = encode(imgs)
    w_in = elm.projection(p, x.shape[1], 3000, rng)
    h = elm.hidden(x, w_in)
    hf, hv, lf, lv = h[:N_FIT], h[N_FIT:], labels[:N_FIT], labels[N_FIT:]
    t = elm.targets(lf)
    arr = DiffArray(p, (3001, 10), rng)
    out = []

    def point(seen):
        lo, hi = pinned(arr)
        out.append((seen, round(100 * elm.accuracy(hv, arr.w, lv), 2), round(lo, 3), round(hi, 3)))
    t0 = time.perf_counter()
    pulses = elm.train_insitu(arr, hf, t, rng, epochs, "swh", point, EVERY, batch, margin)
    print(f"elm g {g} margin {margin} batch {batch} epochs {epochs} c2c {p.c2c_sigma}: "
          f"val {out[-1][1]} %, pulses {pulses:.3g}, {time.perf_counter() - t0:.0f} s")
    print("  val curve  ", [o[1] for o in out])
    print("  pinned lo  ", [o[2] for o in out])
    print("  pinned hi  ", [o[3] for o in out], flush=True)


def probe_mlp(g, gain, epochs):
    p = preset("bennett2019-linear", levels=g)
    imgs, labels = data()
    rng = np.random.default_rng(0)
    x = encode(imgs).astype(np.float64)
    xf, xv, lf, lv = x[:N_FIT], x[N_FIT:], labels[:N_FIT], labels[N_FIT:]
    y = np.eye(10)[lf]
    net = SignMLP(p, x.shape[1], 300, 10, rng, "tanh", (gain, gain))
    curve, seen, t0 = [], 0, time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(N_FIT)
        for a in range(0, N_FIT, 100):
            net.batch(xf[order[a:a + 100]], y[order[a:a + 100]])
            seen += 100
            if seen % EVERY == 0:
                curve.append(round(100 * net.acc(xv, lv), 2))
    print(f"mlp tanh g {g} gains {gain} epochs {epochs}: val {curve[-1]} %, {time.perf_counter() - t0:.0f} s")
    print("  val curve  ", curve, flush=True)


if __name__ == "__main__":
    kind, a = sys.argv[1], sys.argv[2:]
    if kind == "elm":
        probe_elm(int(a[0]), float(a[1]), int(a[2]), int(a[3]), float(a[4]) if len(a) > 4 else None)
    else:
        probe_mlp(int(a[0]), float(a[1]), int(a[2]))
