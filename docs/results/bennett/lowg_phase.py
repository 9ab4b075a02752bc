"""Test accuracy over the last LAST programming cycles of the 5-seed ELM runs (issue 16, helper
lowg): the same calls as run_elm (python -m golden.elm --network elm --batch 100 ...; same random
stream, so the last value equals that report's), the test accuracy recorded after each of the last
cycles: the period-2 oscillation of the column offsets seen on the test set.

  python docs/results/bennett/lowg_phase.py G MARGIN LAST SEED..."""
import sys

import numpy as np

from golden import elm, idx
from golden.devices import preset
from golden.synapse import DiffArray, encode


def run_seed(p, d, margin, last, seed):
    """Test accuracies (%) after each of the last `last` cycles of one seed's run."""
    rng = np.random.default_rng(seed)
    x, xt = encode(d.train_images), encode(d.test_images)
    w_in = elm.projection(p, x.shape[1], 3000, rng)
    h, ht = elm.hidden(x, w_in), elm.hidden(xt, w_in)
    t = elm.targets(d.train_labels)
    arr = DiffArray(p, (3001, 10), rng)
    total, acc = 3 * len(h), {}

    def point(seen):
        if seen > total - 100 * last:
            acc[seen] = round(100 * elm.accuracy(ht, arr.w, d.test_labels), 2)
    elm.train_insitu(arr, h, t, rng, 3, "swh", point, 100, 100, margin)
    return [acc[k] for k in sorted(acc)]


def main(g, margin, last, seeds):
    p = preset("bennett2019-linear", levels=g, zeta=1.0, c2c_sigma=0.3, d2d_bounds_sigma=0.05,
               d2d_levels_sigma=0.1)
    d = idx.load_dataset(idx.default_data_dir())
    for seed in seeds:
        v = run_seed(p, d, margin, last, seed)
        print(f"g {g} margin {margin} seed {seed}: test after each of the last {len(v)} cycles {v}", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]), float(a[1]), int(a[2]), [int(s) for s in a[3:]])
