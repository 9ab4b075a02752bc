"""Seed-by-seed runner for the low-g comparison (issue 16, helper lowg): the same calls as
`python -m golden.elm` (run_elm / run_mlp), with every parameter given here, the report rewritten
after each seed so a run cut short keeps its finished seeds. Report layout as the command line's.

  python docs/results/bennett/lowg_seeds.py mlp G GAIN OUT.json SEED...   # tanh M = 300, 3 epochs, b = 100
  python docs/results/bennett/lowg_seeds.py elm G MARGIN OUT.json SEED... # M = 3000, 3 epochs, b = 100"""
import dataclasses
import json
import sys

from golden import idx
from golden.devices import preset
from golden.elm import run_elm, summarise
from golden.fileio import write_atomic
from golden.signmlp import run_mlp


def main(kind, g, par, out, seeds):
    p = preset("bennett2019-linear", levels=g, zeta=1.0, c2c_sigma=0.3, d2d_bounds_sigma=0.05,
               d2d_levels_sigma=0.1)
    data = idx.load_dataset(idx.default_data_dir())
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    args = {"kind": kind, "levels": g, "epochs": 3, "batch": 100,
            **({"hidden": 300, "activation": "tanh", "gains": [par, par], "alpha": 1.0, "beta": 0.0}
               if kind == "mlp" else {"hidden": 3000, "rule": "swh", "margin": par, "ridge": None})}
    runs = {"runs": [], "float": []}
    for seed in seeds:
        if kind == "mlp":
            r = run_mlp(data, p, m=300, kind="tanh", epochs=3, seed=seed, batch=100, gains=(par, par),
                        alpha=1.0, beta=0.0, log=log)
        else:
            r = run_elm(data, p, m=3000, epochs=3, seed=seed, rule="swh", every=20000, batch=100,
                        ridge_lam=None, log=log, margin=par)
        runs["runs"].append(r)
        rep = {"network": "mlp-sign" if kind == "mlp" else "elm", "device": dataclasses.asdict(p),
               "args": args, "command": " ".join(sys.argv), "n_train": len(data.train_images),
               "n_test": len(data.test_images), **runs, "summary": summarise(runs)}
        write_atomic(out, json.dumps(rep, indent=1, default=str), True)
        log(f"seed {seed}: {100 * r.get('acc', r.get('acc_insitu')):.2f} %")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), float(a[2]), a[3], [int(s) for s in a[4:]])
