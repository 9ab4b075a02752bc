"""Which weights differ when an ELM column sits in its "deep" state at g = 16 (issue 16, helper
lowg; see lowg_diag.py): the validation probe's run (seed 0, margin 0.4, b = 100) to 10k examples,
then per column the mean weight / w_max and the pinned fraction of three groups of hidden units:
near-constant at +1 (> 90 % of training images), near-constant at -1, the rest (+ the bias unit)."""
import numpy as np

from golden import elm
from golden.devices import preset
from golden.synapse import DiffArray, encode
from lowg_probe import N_FIT, data

p = preset("bennett2019-linear", levels=16)
imgs, labels = data()
rng = np.random.default_rng(0)
x = encode(imgs)
h = elm.hidden(x, elm.projection(p, x.shape[1], 3000, rng))
hf, hv, lf, lv = h[:N_FIT], h[N_FIT:], labels[:N_FIT], labels[N_FIT:]
arr = DiffArray(p, (3001, 10), rng)
elm.train_insitu(arr, hf[:10000], elm.targets(lf[:10000]), rng, 1, "swh", None, 0, 100, 0.4)
frac = (hf == 1).mean(0)
groups = {"const+1": frac > 0.9, "const-1": frac < 0.1}
groups["informative"] = ~(groups["const+1"] | groups["const-1"])
s = elm.out_norm(arr)
y = hv.astype(np.float64) @ arr.w
print("val", round(100 * float(np.mean(np.argmax(y, 1) == lv)), 2), "meanY/s", np.round(y.mean(0) / s, 1).tolist())
w = arr.w / arr.w_max
top = (arr.g[0] >= arr.hi[0] - 1e-9) & (arr.g[1] <= arr.lo[1] + 1e-9)
bot = (arr.g[0] <= arr.lo[0] + 1e-9) & (arr.g[1] >= arr.hi[1] + 1e-9)
for name, m in groups.items():
    print(f"{name:12s} n={int(m.sum()):4d} mean W/w_max {np.round(w[m].mean(0), 2).tolist()}")
    print(f"{'':12s} pair at +max {np.round(top[m].mean(0), 2).tolist()}  "
          f"at -max {np.round(bot[m].mean(0), 2).tolist()}")
print("sum over const+1 minus const-1 of W / s:",
      np.round((arr.w[groups['const+1']].sum(0) - arr.w[groups['const-1']].sum(0)) / s, 1).tolist())
print("one step on all near-constant units moves Y by ~", round(2 * float(arr.k.mean()) *
      int(groups['const+1'].sum() + groups['const-1'].sum()) / s, 1), "s")
