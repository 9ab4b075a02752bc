"""Sign-MLP runs of docs/bennett.md's "sign-MLPs" paragraph (issue 16), one seed per process so runs
can go two at a time; key=value arguments go to golden.signmlp.run_mlp (kind, m, epochs, seed, gains=G1,G2,
alpha, beta, coding, lr), float=1 for the float twin, levels (default 256).

  python docs/results/bennett/mlp_gap_runs.py val  kind=tanh m=300 epochs=3 gains=2.5,2.5   # first 55k / last 5k
  python docs/results/bennett/mlp_gap_runs.py test kind=tanh m=300 epochs=8 seed=2 out=run.json   # 60k / 10k test
  python docs/results/bennett/mlp_gap_runs.py merge OUT NOTE sign.json ... -- float.json ...    # one report
"""
import dataclasses
import json
import sys
import time

from golden import elm, idx, signmlp
from golden.devices import preset

CONV = {"m": int, "epochs": int, "seed": int, "lr": float, "alpha": float, "beta": float}


def merge(out, note, files):
    i = files.index("--")
    runs = {"runs": [json.load(open(f)) for f in files[:i]], "float": [json.load(open(f)) for f in files[i + 1:]]}
    rep = {"network": "mlp-sign", "device": dataclasses.asdict(preset("bennett2019-linear", levels=256)),
           "note": note, "n_train": 60000, "n_test": 10000, **runs, "summary": elm.summarise(runs)}
    with open(out, "w") as f:
        f.write(json.dumps(rep, indent=1))
    print(out, {k: (round(100 * v["mean"], 2), round(100 * v["std"], 2), v["n"])
                for k, v in rep["summary"].items() if k.startswith("acc")})


def run(mode, kw):
    out = kw.pop("out", None)
    data = idx.load_dataset(idx.default_data_dir())
    if mode == "val":
        data = dataclasses.replace(data, train_images=data.train_images[:55000],
                                   train_labels=data.train_labels[:55000],
                                   test_images=data.train_images[55000:], test_labels=data.train_labels[55000:])
    flt = kw.pop("float", "0") == "1"
    p = None if flt else preset("bennett2019-linear", levels=int(kw.pop("levels", 256)))
    args = {k: (tuple(float(x) for x in v.split(",")) if k == "gains" else CONV.get(k, str)(v))
            for k, v in kw.items()}
    t0 = time.time()
    r = signmlp.run_mlp(data, p, log=lambda s: print(s, kw, round(time.time() - t0), file=sys.stderr, flush=True),
                        **args)
    if out:
        with open(out, "w") as f:
            f.write(json.dumps(r, indent=1))
    print(json.dumps({"mode": mode, "args": kw, "float": flt, "curve": [round(100 * a, 2) for _, a in r["curve"]],
                      "s": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "merge":
        merge(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        run(sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:]))
