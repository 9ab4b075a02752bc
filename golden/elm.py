"""NoProp / extreme learning machine on NVM synapses, Bennett et al. 2019 (issue 16, golden side).

Network (paper section II.B.2, Fig. 2a): inputs X_i = 2 x_i / 255 - 1 (eq. 5, V_read = 1) plus a
constant input +1 (the bias, "included by including a constant input"); a fixed projection layer
whose weights are the as-fabricated spread of differential pairs left at G_off (no programming):
W_in = G_off+ - G_off-, each device's G_off drawn with the device-to-device spread of G_min
(`DeviceParams.d2d_bounds_sigma`, the `lo` of `devices.draw_cells`); hidden H_j = sign(sum_i W_in X_i)
in {-1, +1} (eq. 8, f = sign); a constant hidden unit +1; output Y_k = sum_j W_out,jk H_j with W_out
differential pairs (golden/synapse.py) trained in situ, one example at a time, by

  sign-WH (eq. 7)  dW_jk = dG sign(H_j (T_k - O_k)), T_k = +1 for the label else -1, O_k the output
                   amplifier's voltage: O_k = clip(Y_k / (margin s), -1, 1), an amplifier whose linear
                   range is margin s before it saturates at the rails +-1 (`SWH_MARGIN`); margin 0 is
                   the ideal comparator O_k = sign(Y_k). A column is an error case when O_k != T_k, i.e.
                   T_k Y_k < margin s; then sign(T_k - O_k) = T_k. No learning rate: each device's own
                   pulse is the step; columns without an error case are not touched (sparse rule)
  L1 (Fig. 3)      the same directions with O_k = Y_k / s analog, each pulse scaled by |H_j||T_k - O_k|
  L2 (Fig. 3)      ... scaled by |H_j|(T_k - O_k)^2          (s = w_max sqrt(M + 1), see `OUT_NORM`)

Inference: the class is argmax_k Y_k (winner take all). The analytic comparison solves the ridge
regression W = (H^T H + lam I)^-1 H^T T on the same hidden activations (float64, software weights).

Number formats (the paper is an algorithmic study; followed here): conductances, currents and the
ridge solution are float64; inputs are the float encoding of eq. 5; hidden activations and error
signs are exact small integers (int8 / +-1). Nothing is fixed point.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .devices import DeviceParams, draw_cells
from .synapse import PULSES, DiffArray, encode  # noqa: F401  (encode: eq. 5, re-exported)

RULES = ("swh", "l1", "l2")
PROJ_SIGMA = 0.05       # relative device-to-device spread of G_off in the projection layer
SWH_MARGIN = 0.4        # sign-WH output amplifier's linear range / s; chosen on the 5k validation split from
                        # {0.2, 0.4, 0.6} (95.24, 95.60, 95.40 %; 1 seed); 0 = ideal sign comparator
RIDGE_LAM = 1e-3        # ridge lam per training example (H entries are +-1); chosen on the 5k validation split
                        # from {1e-4, 1e-3, 1e-2, 1e-1} (1e-4 and 1e-3 equal within 0.02 %)


def projection(p: DeviceParams, n_in: int, m: int, rng: np.random.Generator,
               sigma: float = PROJ_SIGMA) -> np.ndarray:
    """(n_in, m) fixed random weights (uS): as-fabricated G_off of pairs, W = G_off+ - G_off-, every
    G_off = G_min (1 + sigma z). The sign activation makes the result independent of sigma's size
    (and of the output layer's own spread, a separate parameter)."""
    if not sigma > 0:
        raise ValueError(f"the ELM projection needs a device-to-device spread of G_off > 0, got {sigma}")
    lo = draw_cells(replace(p, d2d_bounds_sigma=sigma), (2, n_in, m), rng).lo
    return lo[0] - lo[1]


def hidden(x: np.ndarray, w_in: np.ndarray, batch: int = 4096) -> np.ndarray:
    """(N, m + 1) int8: sign of the projection (0 counts as +1) and the constant hidden unit +1."""
    out = np.ones((len(x), w_in.shape[1] + 1), np.int8)
    w = w_in.astype(np.float32)
    for a in range(0, len(x), batch):
        out[a:a + batch, :-1] = np.where(x[a:a + batch] @ w >= 0, 1, -1)
    return out


def targets(labels: np.ndarray, n_out: int = 10) -> np.ndarray:
    """+-1 one-hot targets T."""
    t = -np.ones((len(labels), n_out), np.int8)
    t[np.arange(len(labels)), labels] = 1
    return t


def accuracy(h: np.ndarray, w: np.ndarray, labels: np.ndarray, batch: int = 4096) -> float:
    """Winner-take-all accuracy of Y = H W."""
    wf = w.astype(np.float32)
    hits = 0
    for a in range(0, len(h), batch):
        hits += int(np.sum(np.argmax(h[a:a + batch].astype(np.float32) @ wf, axis=1) == labels[a:a + batch]))
    return hits / len(h)


def ridge(h: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """Ridge output weights (H^T H + lam I)^-1 H^T T (float64 normal equations)."""
    hf = h.astype(np.float32)
    a = (hf.T @ hf).astype(np.float64)          # exact: integer sums below 2**24
    a[np.diag_indices_from(a)] += lam
    b = (hf.T @ t.astype(np.float32)).astype(np.float64)
    return np.linalg.solve(a, b)


def out_norm(arr: DiffArray) -> float:
    """s of the analog output O = Y / s of the L1/L2 rules: w_max sqrt(rows)."""
    return arr.w_max * np.sqrt(arr.shape[0])


def swh_error(y: np.ndarray, t: np.ndarray, margin: float, s: float) -> np.ndarray:
    """sign(T_k - O_k) of the sign-WH rule, int8 (..., cols): T_k where the column is an error case
    (O_k != T_k), else 0. margin 0: O_k = sign(Y_k) (0 counts as -1); margin > 0: O_k =
    clip(Y_k / (margin s), -1, 1), an error case when T_k Y_k < margin s."""
    if margin == 0:
        wrong = np.where(y > 0, 1, -1) != t
    else:
        wrong = t * y < margin * s
    return np.where(wrong, t, 0).astype(np.int8)


def train_example(arr: DiffArray, h: np.ndarray, t: np.ndarray, rule: str = "swh", margin: float = 0.0) -> int:
    """One in-situ update of the output layer from one example (h: (rows,) +-1, t: (cols,) +-1);
    margin: the sign-WH output amplifier's linear range / s (0: sign comparator). Returns the
    number of device pulses."""
    hf = h.astype(np.float64)
    y = hf @ arr.g[0] - hf @ arr.g[1]
    if rule == "swh":
        e = swh_error(y, t, margin, out_norm(arr))
        cols = np.flatnonzero(e)
        if len(cols) == 0:
            return 0
        return arr.program(np.outer(h, e[cols]).astype(np.int8), cols=cols)
    e = t - y / out_norm(arr)
    mag = np.abs(e) if rule == "l1" else e * e
    return arr.program(np.outer(h, np.sign(e)).astype(np.int8), scale=np.outer(np.abs(hf), mag))


def train_batch(arr: DiffArray, h: np.ndarray, t: np.ndarray, margin: float = 0.0) -> int:
    """One programming cycle after a mini-batch (sign-WH): dW_jk = dG sign(sum_n H_nj sign(T_nk - O_nk)),
    the error cases accumulated over the batch's inferences (paper section II.B.3, b = 100)."""
    hf = h.astype(np.float64)
    e = swh_error(hf @ arr.g[0] - hf @ arr.g[1], t, margin, out_norm(arr))
    return arr.program(np.sign(hf.T @ e).astype(np.int8))


def train_insitu(arr: DiffArray, h: np.ndarray, t: np.ndarray, rng: np.random.Generator, epochs: int,
                 rule: str = "swh", on_point=None, every: int = 0, batch: int = 1, margin: float = 0.0) -> int:
    """In-situ training, a fresh shuffle per epoch, one example (batch 1) or one mini-batch per
    programming cycle (sign-WH only; margin: its output amplifier's linear range / s, 0 = sign).
    on_point(n_seen) is called about every `every` examples and at the end of each epoch. Returns
    the device pulses."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} (known: {', '.join(RULES)})")
    if batch > 1 and rule != "swh":
        raise ValueError(f"mini-batches are implemented for the sign-WH rule only, not {rule!r}")
    if not (margin >= 0 and np.isfinite(margin)) or (margin and rule != "swh"):
        raise ValueError(f"margin {margin}: a number >= 0, for the sign-WH rule only (rule {rule!r})")
    pulses, seen = 0, 0
    for _ in range(epochs):
        order = rng.permutation(len(h))
        for a in range(0, len(h), batch):
            if batch == 1:
                pulses += train_example(arr, h[order[a]], t[order[a]], rule, margin)
            else:
                pulses += train_batch(arr, h[order[a:a + batch]], t[order[a:a + batch]], margin)
            seen += min(batch, len(h) - a)
            if on_point is not None and every and seen % every < batch and seen % len(h):
                on_point(seen)
        if on_point is not None:
            on_point(seen)
    return pulses


def run_elm(data, p: DeviceParams, m: int = 3000, epochs: int = 3, seed: int = 0, rule: str = "swh",
            every: int = 20000, batch: int = 1, ridge_lam: float | None = RIDGE_LAM, proj_sigma: float = PROJ_SIGMA,
            log=None, margin: float | None = None, pulse: str = "push-pull") -> dict:
    """One NoProp/ELM system on a dataset (golden.idx.Dataset): train on the whole training file
    (as the paper: 3 epochs = 180,000 examples), test on the test file. margin (sign-WH only):
    None = SWH_MARGIN for sign-WH, 0 for L1/L2; pulse: the output pairs' scheme (synapse.PULSES).
    Returns the report dict."""
    import time
    if margin is None:
        margin = SWH_MARGIN if rule == "swh" else 0.0
    rng = np.random.default_rng(seed)
    x, xt = encode(data.train_images), encode(data.test_images)
    w_in = projection(p, x.shape[1], m, rng, proj_sigma)
    h, ht = hidden(x, w_in), hidden(xt, w_in)
    t = targets(data.train_labels, data.n_classes)
    arr = DiffArray(p, (m + 1, data.n_classes), rng, pulse)
    curve = [(0, accuracy(ht, arr.w, data.test_labels))]

    def point(seen):
        curve.append((seen, accuracy(ht, arr.w, data.test_labels)))
        if log:
            log(f"elm seed {seed}: {seen} examples, test {100 * curve[-1][1]:.2f} %")

    t0 = time.perf_counter()
    pulses = train_insitu(arr, h, t, rng, epochs, rule, point, every, batch, margin)
    dt = time.perf_counter() - t0
    out = {"network": "elm", "seed": seed, "hidden": m, "rule": rule, "margin": margin, "pulse": pulse,
           "epochs": epochs, "batch": batch, "acc_insitu": curve[-1][1], "curve": curve, "pulses": pulses,
           "train_s": dt, "s_per_epoch": dt / max(epochs, 1), "n_train": len(h), "n_test": len(ht)}
    if ridge_lam is not None:
        w = ridge(h, t, ridge_lam * len(h))
        out["acc_ridge"] = accuracy(ht, w, data.test_labels)
        out["ridge_lam"] = ridge_lam
    return out


# ------------------------------------------------------------------------------ command line

def device_from_args(a) -> DeviceParams:
    """The device of a run: a preset with the synapse-quality overrides given (None = preset's)."""
    from .devices import preset
    over = {k: v for k, v in (("levels", a.levels), ("zeta", a.zeta), ("c2c_sigma", a.c2c),
                              ("d2d_bounds_sigma", a.d2d_bounds), ("d2d_levels_sigma", a.d2d_levels))
            if v is not None}
    return preset(a.device, **over)


def parser():
    import argparse
    ap = argparse.ArgumentParser(prog="python -m golden.elm", description=(
        "Bennett 2019 in-situ learners (golden model): NoProp/ELM with sign-WH (and ridge), "
        "sign-backprop MLP (and its float SGD twin). Writes DIR/report.json and DIR/accuracy.png."))
    ap.add_argument("--network", choices=("elm", "mlp-sign"), default="elm")
    ap.add_argument("--device", default="bennett2019-linear", help="device preset (golden/devices.py)")
    ap.add_argument("--levels", type=int, help="writable levels g (default: the preset's)")
    ap.add_argument("--zeta", type=float, help="RESET asymmetry")
    ap.add_argument("--c2c", type=float, help="cycle-to-cycle s.d. (relative)")
    ap.add_argument("--d2d-bounds", type=float, help="device-to-device s.d. of G_min, G_max (relative)")
    ap.add_argument("--d2d-levels", type=float, help="device-to-device s.d. of g (relative)")
    ap.add_argument("--hidden", type=int, help="hidden units M (default: elm 3000, tanh 300, relu 800)")
    ap.add_argument("--epochs", type=int, help="epochs (default: elm 3, mlp 8)")
    ap.add_argument("--seeds", type=int, default=1, help="runs with seeds S..S+N-1 (S: --first-seed)")
    ap.add_argument("--first-seed", type=int, default=0, help="first seed S (default 0)")
    ap.add_argument("--batch", type=int, help="examples per programming cycle (default: elm 1, mlp 100)")
    ap.add_argument("--rule", choices=RULES, default="swh", help="elm output rule (Fig. 3)")
    ap.add_argument("--margin", type=float, help=f"elm sign-WH: the output amplifier's linear range / "
                    f"(w_max sqrt(M + 1)); 0 = sign comparator (default {SWH_MARGIN})")
    ap.add_argument("--pulse", choices=PULSES, default="push-pull",
                    help="elm output pairs: both devices per update (push-pull) or one, alternating "
                         "SET / RESET phases between cycles (alternate)")
    ap.add_argument("--activation", choices=("tanh", "relu"), default="tanh", help="mlp hidden units")
    ap.add_argument("--alpha", type=float, default=1.0, help="rectifier slope above 0")
    ap.add_argument("--beta", type=float, default=0.0, help="rectifier slope below 0")
    ap.add_argument("--gains", type=float, nargs=2, metavar=("G1", "G2"),
                    help="mlp layer gains: w = G (G+ - G-) / (w_max sqrt(fan_in)) (default 2.5 2.5)")
    ap.add_argument("--float", action="store_true", help="mlp: also the float MLP trained by SGD")
    ap.add_argument("--lr", type=float, default=0.1, help="float MLP learning rate")
    ap.add_argument("--no-ridge", action="store_true", help="elm: skip the analytic ridge solution")
    ap.add_argument("--n-train", type=int, help="first N training images only")
    ap.add_argument("--n-test", type=int, help="first N test images only")
    ap.add_argument("--data", help="dataset directory (default: data/mnist)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--force", action="store_true", help="replace an existing report")
    return ap


def _check_args(a):
    from .fileio import InputError
    for name in ("levels", "hidden", "epochs", "batch", "n_train", "n_test"):
        v = getattr(a, name)
        if v is not None and v < (2 if name == "levels" else 1):
            raise InputError(f"--{name.replace('_', '-')}: expected an integer >= "
                             f"{2 if name == 'levels' else 1}, got {v}")
    if a.gains is not None and not all(g > 0 and np.isfinite(g) for g in a.gains):
        raise InputError(f"--gains: expected two numbers > 0, got {a.gains}")
    if a.margin is not None and not (a.margin >= 0 and np.isfinite(a.margin)):
        raise InputError(f"--margin: expected a number >= 0, got {a.margin}")
    if a.margin and a.rule != "swh":
        raise InputError(f"--margin: the sign-WH rule only, not --rule {a.rule}")
    if a.first_seed < 0:
        raise InputError(f"--first-seed: expected an integer >= 0, got {a.first_seed}")
    if a.seeds < 1:
        raise InputError(f"--seeds: expected an integer >= 1, got {a.seeds}")
    for name in ("zeta", "c2c", "d2d_bounds", "d2d_levels"):
        v = getattr(a, name)
        if v is not None and not (v >= 0 and np.isfinite(v)):
            raise InputError(f"--{name.replace('_', '-')}: expected a number >= 0, got {v}")


def _runs(a, data, p, log) -> dict:
    """Every run of the command: {"runs": [...], "float": [...]}."""
    from .signmlp import GAINS, run_mlp
    out = {"runs": [], "float": []}
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        if a.network == "elm":
            out["runs"].append(run_elm(data, p, a.hidden or 3000, a.epochs or 3, seed, a.rule,
                                       batch=a.batch or 1, ridge_lam=None if a.no_ridge else RIDGE_LAM,
                                       log=log, margin=a.margin, pulse=a.pulse))
            continue
        m = a.hidden or (300 if a.activation == "tanh" else 800)
        kw = dict(m=m, kind=a.activation, epochs=a.epochs or 8, seed=seed, batch=a.batch or 100,
                  alpha=a.alpha, beta=a.beta, log=log)
        out["runs"].append(run_mlp(data, p, gains=tuple(a.gains or GAINS), **kw))
        if a.float:
            out["float"].append(run_mlp(data, None, lr=a.lr, **kw))
    return out


def _stats(v) -> dict:
    v = np.asarray(v, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def summarise(runs: dict) -> dict:
    r = runs["runs"]
    key = "acc_insitu" if r[0]["network"] == "elm" else "acc"
    s = {"acc": _stats([x[key] for x in r]), "s_per_epoch": _stats([x["s_per_epoch"] for x in r])}
    if "acc_ridge" in r[0]:
        s["acc_ridge"] = _stats([x["acc_ridge"] for x in r])
    if runs["float"]:
        s["acc_float"] = _stats([x["acc"] for x in runs["float"]])
    return s


def plot(rep: dict, path, force: bool) -> str:
    """Test accuracy against training epochs, one line per run (float twin dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import write_atomic
    fig, ax = plt.subplots(figsize=(6, 4))
    n = rep["n_train"]
    for kind, style in (("runs", "-"), ("float", "--")):
        for r in rep[kind]:
            e, acc = zip(*r["curve"])
            ax.plot(np.array(e) / n, 100 * np.array(acc), style, label=f"{r['network']} seed {r['seed']}")
    if "acc_ridge" in rep["summary"]:
        ax.axhline(100 * rep["summary"]["acc_ridge"]["mean"], color="k", lw=0.8, label="ridge (analytic)")
    ax.set_xlabel("epochs")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0, 100 * rep["summary"]["acc"]["mean"] - 15), 100)
    ax.set_title(f"{rep['network']}, {rep['device']['name']}, g = {rep['device']['levels']}")
    ax.legend(fontsize=6)
    fig.tight_layout()
    try:
        return str(write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110), force))
    finally:
        plt.close(fig)


def main(argv=None) -> int:
    import dataclasses
    import json
    import sys
    from pathlib import Path

    from . import idx
    from .fileio import check_outputs, write_atomic
    a = parser().parse_args(argv)
    out = Path(a.out)
    try:
        _check_args(a)
        p = device_from_args(a)
        check_outputs([out / "report.json", out / "accuracy.png"], a.force)
        data = idx.load_dataset(a.data or idx.default_data_dir())
    except (ValueError, OSError) as e:         # InputError, IDXError, DeviceParams checks
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = dataclasses.replace(data, train_images=data.train_images[:a.n_train],
                               train_labels=data.train_labels[:a.n_train],
                               test_images=data.test_images[:a.n_test], test_labels=data.test_labels[:a.n_test])
    runs = _runs(a, data, p, lambda s: print(s, file=sys.stderr, flush=True))
    rep = {"network": a.network, "device": dataclasses.asdict(p), "args": vars(a), "n_train": len(data.train_images),
           "n_test": len(data.test_images), **runs, "summary": summarise(runs)}
    write_atomic(out / "report.json", json.dumps(rep, indent=1, default=str), a.force)
    plot(rep, out / "accuracy.png", a.force)
    s = rep["summary"]
    print(f"{a.network}: test {100 * s['acc']['mean']:.2f} +- {100 * s['acc']['std']:.2f} % over {s['acc']['n']} "
          f"seed(s)" + "".join(f", {k[4:]} {100 * s[k]['mean']:.2f} %" for k in ("acc_ridge", "acc_float") if k in s)
          + f"; {s['s_per_epoch']['mean']:.1f} s/epoch; {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
