"""The in-situ training experiments of Li 2018 (Fig. 4a, 4b) on the golden model: `mcnn train-insitu`.

  fig4a   accuracy on the test set vs training images, in situ from the fresh board (device preset,
          its stuck fraction), mean and s.d. over device seeds
  fig4b   final accuracy vs stuck-OFF fraction (0-50 %), in situ (from the fresh board with that
          fraction) against ex-situ transfer (a float MLP trained in software, its weights written
          by closed-loop write-verify onto a fresh board with the same defects), per seed
  float   the float MLP itself (the "software network of the same size")

Ex-situ weights: no ex-situ training of dense networks exists in golden/train.py yet, so this
module trains a float MLP with plain NumPy (`float_mlp`): exactly the function the in-situ
integers stand for (golden/insitu.py: inputs x/255, weights in uA bounded by the window,
hidden ReLU bounded at the hidden code's top, softmax gain), Adam, on the training split, best
epoch by the validation split. Transfer (`exsitu_transfer`): every used cell is written by
write-verify to floor + max(+-w, 0) uA (the pair's canonical form, one device at the window
floor), the verify margin of the device.

Every choice uses the training/validation split (golden.idx.split_sizes); the test set only scores.

Networks without a threshold-rule layer (elm-board: frozen projection, sign-WH output; docs/bennett.md
"On the board") take `sign_experiment` instead: no step to choose, no Fig. 4b; per seed the in-situ
run (batch SIGN_BATCH) and, for comparison, the ridge solution (golden.elm.ridge) on the same
board's hidden activations (h / 255 in {0, 1} plus a constant unit), software weights.
"""
from __future__ import annotations

import time

import numpy as np

from . import insitu
from .crossbar import Crossbar
from .devices import NA_PER_US
from .hybrid import batch_order
from .idx import split_sizes
from .networks import network
from .write_verify import VERIFY_LSB_NA

STUCK_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
RECORD_EVERY = 50                 # iterations between test records (5,000 images at batch 100)
FLOAT_EPOCHS = 10


def _data(ds, net):
    x = insitu.flat_inputs(net, ds.train_images)
    xt = insitu.flat_inputs(net, ds.test_images)
    return x, ds.train_labels.astype(np.int64), xt, ds.test_labels.astype(np.int64)


# ------------------------------------------------------------------ float MLP (ex-situ weights)

def _float_forward(ws, x, t: insitu.InsituTrainer):
    """The float function of the in-situ integers: a_l = v_l @ W_l (uA), hidden min(relu(a), top)."""
    acts, v = [], x.astype(np.float64) / 255.0
    for i, w in enumerate(ws):
        acts.append(v)
        a = v @ w
        if i == len(ws) - 1:
            return acts, a * 2.0 ** -t.cfg.softmax_shift
        v = np.clip(a, 0, 255 * t.s_in[i + 1])      # the hidden code's top (255 codes), in a's units


def float_mlp(t: insitu.InsituTrainer, x, y, n_fit: int, epochs: int = FLOAT_EPOCHS, seed: int = 0, lr=3e-3):
    """Float weights (uA) of the network of trainer t, trained in software; -> (ws, val accuracy)."""
    rng = np.random.default_rng(seed)
    wmax = (t.xb.p.window_us[1] - t.xb.p.window_us[0]) * NA_PER_US / 1000.0
    ws = [rng.normal(0, np.sqrt(2.0 / L.n_in), (L.n_in, L.n_out)) for L in t.layers]
    m = [np.zeros_like(w) for w in ws]
    v2 = [np.zeros_like(w) for w in ws]
    gain = 2.0 ** -t.cfg.softmax_shift
    best, best_ws, k = -1.0, None, 0
    for _ in range(epochs):
        for ix in rng.permutation(n_fit).reshape(-1, 100):
            acts, z = _float_forward(ws, x[ix], t)
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            d = p
            d[np.arange(len(ix)), y[ix]] -= 1
            d *= gain / len(ix)
            k += 1
            for i in range(len(ws) - 1, -1, -1):
                g = acts[i].T @ d
                if i:
                    d = (d @ ws[i].T) * ((acts[i] > 0) & (acts[i] < 255 * t.s_in[i]))
                m[i] = 0.9 * m[i] + 0.1 * g
                v2[i] = 0.999 * v2[i] + 0.001 * g * g
                step = lr * (m[i] / (1 - 0.9 ** k)) / (np.sqrt(v2[i] / (1 - 0.999 ** k)) + 1e-8)
                ws[i] = np.clip(ws[i] - step, -wmax, wmax)
        acc = float((_float_forward(ws, x[n_fit:], t)[1].argmax(1) == y[n_fit:]).mean() * 100)
        if acc > best:
            best, best_ws = acc, [w.copy() for w in ws]
    return best_ws, best


def exsitu_transfer(t: insitu.InsituTrainer, ws) -> dict:
    """Write float weights ws (uA) onto t's board by closed-loop write-verify, cell by cell."""
    xb = t.xb
    lo_code = int(round(xb.p.window_us[0] * NA_PER_US / VERIFY_LSB_NA))
    hi_code = int(round(xb.p.window_us[1] * NA_PER_US / VERIFY_LSB_NA))
    per_ua = 1000.0 / VERIFY_LSB_NA
    ok = failed = 0
    for i in range(len(t.layers)):
        for g in t.groups(i):
            for o in range(g.n_out):
                for j, m in enumerate(g.inputs):
                    w = float(ws[i][m, o])
                    for row, part in ((g.row_base + 2 * o, max(w, 0.0)), (g.row_base + 2 * o + 1, max(-w, 0.0))):
                        code = min(hi_code, lo_code + int(round(part * per_ua)))
                        r = xb.program_cell(g.pe, row, j, code)
                        ok += r.ok
                        failed += not r.ok
    return {"cells": ok + failed, "failed": failed}


# ------------------------------------------------------------------ runs

def run_insitu(ds_arrays, net, device, seed, mode, epochs, eta, stuck=None, record_every=RECORD_EVERY, batch=100,
               done=None):
    """One in-situ run from the fresh board of (device, seed[, stuck-OFF fraction]) -> dict;
    done(trainer, dict), if given, sees the trained board (`--save-board`)."""
    x, y, xt, yt = ds_arrays
    n_fit, _ = split_sizes(len(x))
    xb = Crossbar(device, seed=seed, **({} if stuck is None else {"p_stuck_off": stuck}))
    t = insitu.InsituTrainer(xb, net, insitu.InsituConfig(eta=eta, mode=mode, batch=batch, record_every=record_every))
    order = batch_order(n_fit, batch, epochs * (n_fit // batch), seed=seed)
    tr = insitu.train(t, x, y, order, record=lambda: 100.0 - t.error(xt, yt))
    out = {"seed": seed, "stuck_off": float((xb.stuck == 2).mean()), "accuracy": tr.test_error[-1],
            "trace": {"images": tr.images, "accuracy": tr.test_error},
            "seconds_train": round(tr.seconds_train, 2), "iterations": len(order),
            "seconds_per_epoch": round(tr.seconds_train / max(epochs, 1), 2),
            "commands": int(np.sum(tr.commands)), "pulses": int(np.sum(tr.pulses)),
            "programming": t.prog.stats.as_dict()}
    if done is not None:
        done(t, out)
    return out


def pick_eta(ds_arrays, net, device, seed, mode, stuck=None, batch=100) -> dict:
    """choose_eta on the fresh board of (device, seed, stuck) over one epoch of the training split."""
    x, y, _, _ = ds_arrays
    n_fit, n_val = split_sizes(len(x))
    xb = Crossbar(device, seed=seed, **({} if stuck is None else {"p_stuck_off": stuck}))
    cfg = insitu.InsituConfig(eta=1.0, mode=mode, batch=batch)
    return insitu.choose_eta(xb, net, x, y, np.arange(n_fit), np.arange(n_fit, n_fit + n_val), n_fit // batch, seed,
                             cfg)


def run_exsitu(ds_arrays, net, device, seed, ws, stuck=None) -> dict:
    _, _, xt, yt = ds_arrays
    xb = Crossbar(device, seed=seed, **({} if stuck is None else {"p_stuck_off": stuck}))
    t = insitu.InsituTrainer(xb, net, insitu.InsituConfig(eta=1.0, mode="closed"))
    rep = exsitu_transfer(t, ws)
    return {"seed": seed, "accuracy": 100.0 - t.error(xt, yt), **rep}


SIGN_BATCH = 10                   # sign-WH examples per programming cycle on the board (docs/bennett.md)


def sign_experiment(ds, net, device="li2018", epochs=1, seeds=(0, 1, 2, 3, 4), log=print, batch=SIGN_BATCH) -> dict:
    """In-situ runs of a network trained by the sign rule alone (module docstring), reported in
    Fig. 4a's layout (key "sign"), with the ridge comparison."""
    from .elm import RIDGE_LAM, ridge, targets
    net = network(net)
    arr = _data(ds, net)
    n_fit, _ = split_sizes(len(arr[0]))
    t0 = time.perf_counter()
    runs, ridge_acc = [], []
    for s in seeds:
        r = run_insitu(arr, net, device, s, "open", epochs, None, record_every=max(1, 5000 // batch), batch=batch)
        t = insitu.InsituTrainer(Crossbar(device, seed=s), net, insitu.InsituConfig(batch=batch))
        h, ht = (np.c_[t.forward(x)[0][-1] // 255, np.ones(len(x), np.int64)] for x in (arr[0][:n_fit], arr[2]))
        w = ridge(h, targets(arr[1][:n_fit], net.n_classes), RIDGE_LAM * n_fit)
        ridge_acc.append(float(((ht @ w).argmax(1) == arr[3]).mean() * 100))
        runs.append(r)
        log(f"seed {s}: in situ {r['accuracy']:.2f} %, ridge {ridge_acc[-1]:.2f} %, {r['pulses']} pulses, "
            f"{r['seconds_train']} s")
    out = {"network": net.name, "device": device, "seeds": list(seeds), "epochs": epochs, "batch": batch,
           "rules": insitu.layer_rules(net), "hidden_requant": list(net.hidden_requant or ()),
           "fig4a": {"sign": {"accuracy": _stats([r["accuracy"] for r in runs]), "runs": runs}},
           "defect_free": {}, "fig4b": {}, "ridge": _stats(ridge_acc), "seconds": round(time.perf_counter() - t0, 1)}
    log(f"in situ {out['fig4a']['sign']['accuracy']['mean']:.2f} +/- {out['fig4a']['sign']['accuracy']['sd']:.2f} %, "
        f"ridge {out['ridge']['mean']:.2f} %")
    return out


def _stats(v):
    a = np.asarray(v, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": a.tolist()}


def experiment(ds, net="li2018", device="li2018", modes=("open",), epochs=1, seeds=(0, 1, 2, 3, 4),
               stuck_grid=STUCK_GRID, fig4b_epochs=None, log=print, parts=("fig4a", "fig4b"), on_board=None) -> dict:
    """Fig. 4a per mode (and the defect-free board), Fig. 4b (first mode) with the float MLP: one
    dict. The step of each mode is chosen once (pick_eta on the preset's own board, seed seeds[0])
    and serves every run of that mode, the defect-free one and every stuck fraction of Fig. 4b.
    on_board(trainer, run): called once, with Fig. 4a's first run (first mode, first seed)."""
    net = network(net)
    arr = _data(ds, net)
    t0 = time.perf_counter()
    out = {"network": net.name, "device": device, "seeds": list(seeds), "epochs": epochs,
           "sl_adc_full_scale_ua": insitu.SL_ADC.full_scale_ua, "hidden_shift": insitu.HIDDEN_SHIFT,
           "softmax_shift": insitu.SOFTMAX_SHIFT, "eta": {}, "fig4a": {}, "defect_free": {}, "fig4b": {}}
    for mode in (modes if "fig4a" in parts else modes[:1]):
        out["eta"][mode] = pick_eta(arr, net, device, seeds[0], mode)
        log(f"{mode}: eta {out['eta'][mode]['eta']} (validation errors {out['eta'][mode]['validation_error']})")
    if "fig4a" in parts:
        for mode in modes:
            eta = out["eta"][mode]["eta"]
            for key, stuck in (("fig4a", None), ("defect_free", 0.0)):
                cb = on_board if key == "fig4a" and mode == modes[0] else None
                runs = [run_insitu(arr, net, device, s, mode, epochs, eta, stuck, done=cb if s == seeds[0] else None)
                        for s in seeds]
                out[key][mode] = {"eta": eta, "accuracy": _stats([r["accuracy"] for r in runs]), "runs": runs}
                log(f"{key} {mode}: accuracy {out[key][mode]['accuracy']['mean']:.2f} "
                    f"+/- {out[key][mode]['accuracy']['sd']:.2f} %")
    if "fig4b" in parts and stuck_grid:
        x, y = arr[0], arr[1]
        n_fit, _ = split_sizes(len(x))
        t = insitu.InsituTrainer(Crossbar(device, seed=seeds[0]), net, insitu.InsituConfig(eta=1.0))
        ws, val = float_mlp(t, x, y, n_fit)
        facc = float((_float_forward(ws, arr[2], t)[1].argmax(1) == arr[3]).mean() * 100)
        out["float_mlp"] = {"accuracy": facc, "validation_accuracy": val, "epochs": FLOAT_EPOCHS}
        log(f"float MLP: {facc:.2f} %")
        out["fig4b"] = fig4b(arr, net, device, modes[0], fig4b_epochs or epochs, seeds, stuck_grid, ws,
                             out["eta"][modes[0]]["eta"], log)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def fig4b(arr, net, device, mode, epochs, seeds, grid, ws, eta, log=print) -> dict:
    res = {"mode": mode, "epochs": epochs, "eta": eta, "stuck_off": list(grid), "insitu": [], "exsitu": []}
    for f in grid:
        ins = [run_insitu(arr, net, device, s, mode, epochs, eta, f, record_every=0)["accuracy"] for s in seeds]
        exs = [run_exsitu(arr, net, device, s, ws, f)["accuracy"] for s in seeds]
        res["insitu"].append(_stats(ins))
        res["exsitu"].append(_stats(exs))
        log(f"fig4b stuck {f:.0%}: in situ {np.mean(ins):.2f} %, ex situ {np.mean(exs):.2f} %")
    return res


PLOT_FILES = ("accuracy_vs_images.png", "accuracy_vs_stuck.png")


def plots(rep: dict, outdir, force: bool = False) -> list[str]:
    """Li Fig. 4a (accuracy vs training images, per mode, mean +/- s.d. over seeds, the defect-free
    run beside it) and Fig. 4b (accuracy vs stuck-OFF fraction, in situ vs ex situ)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pathlib import Path

    from .fileio import check_outputs, write_atomic
    out = Path(outdir)
    names = [f for f, k in zip(PLOT_FILES, ("fig4a", "fig4b")) if rep.get(k)]
    check_outputs([out / f for f in names], force)
    files = []

    def save(fig, name):
        files.append(str(write_atomic(out / name, lambda f: fig.savefig(f, format="png", dpi=120), force)))
        plt.close(fig)

    if rep.get("fig4a"):
        _plot4a(plt, rep, save)
    if rep.get("fig4b"):
        _plot4b(plt, rep, save)
    return files


def _plot4a(plt, rep, save):
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("fig4a", "-"), ("defect_free", "--")):
        for mode, r in rep[key].items():
            im = np.array(r["runs"][0]["trace"]["images"])
            a = np.array([x["trace"]["accuracy"] for x in r["runs"]], dtype=np.float64)
            lab = f"{mode}, {'device' if key == 'fig4a' else 'defect-free'}"
            ax.plot(im, a.mean(0), style, label=lab)
            if len(a) > 1:
                ax.fill_between(im, a.mean(0) - a.std(0, ddof=1), a.mean(0) + a.std(0, ddof=1), alpha=0.2)
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    fig_ref = "sign-WH, ridge {:.1f} %".format(rep["ridge"]["mean"]) if "ridge" in rep else "Li Fig. 4a"
    ax.set_title(f"in-situ training, {rep['network']} on {rep['device']}, {len(rep['seeds'])} seeds ({fig_ref})")
    ax.legend()
    fig.tight_layout()
    save(fig, "accuracy_vs_images.png")


def _plot4b(plt, rep, save):
    b = rep["fig4b"]
    fig, ax = plt.subplots(figsize=(6, 4))
    f = 100 * np.array(b["stuck_off"])
    for key, lab in (("insitu", f"in situ ({b['mode']})"), ("exsitu", "ex situ (transfer)")):
        ax.errorbar(f, [s["mean"] for s in b[key]], yerr=[s["sd"] for s in b[key]], marker="o", capsize=3, label=lab)
    ax.set_xlabel("stuck-OFF devices (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"defect tolerance, {len(rep['seeds'])} seeds (Li Fig. 4b)")
    ax.legend()
    fig.tight_layout()
    save(fig, "accuracy_vs_stuck.png")


def run_cli(args) -> list[str]:
    """`mcnn train-insitu`: checks every input before the long run, then the experiment, the JSON
    report (atomic) and the plots. -> the files written."""
    import json
    from pathlib import Path

    from . import cnn
    from .fileio import InputError, check_outputs, write_atomic
    from .idx import load_dataset
    net = network(args.network)
    if not all(isinstance(L, cnn.Dense) for L in net.weight_layers):
        raise InputError(f"--network {net.name}: in-situ training takes networks of dense layers only")
    out = Path(args.out)
    rep_path = out / "insitu.json"
    board = getattr(args, "save_board", None)
    if board is not None and "fig4a" not in args.parts:
        raise InputError("--save-board: the saved board is Fig. 4a's first run: give --parts fig4a")
    if board is not None and "threshold" not in insitu.layer_rules(net):
        raise InputError(f"--save-board: --network {net.name} trains by the sign rule, which saves no board")
    check_outputs([rep_path] + [out / f for f in PLOT_FILES] + ([board] if board else []), args.force)
    ds = load_dataset(args.data, image_shape=net.source_shape, n_classes=net.n_classes)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    saved = []

    def save(t, run):      # as soon as that run ends: the board file is usable while the rest runs
        from .insitu_board import save_board
        info = {k: run[k] for k in ("seed", "accuracy", "iterations")}
        saved.append(str(save_board(t, board, args.force, {**info, "epochs": args.epochs, "data": str(args.data)})))
        log(f"board of seed {run['seed']} ({t.cfg.mode}, test accuracy {run['accuracy']:.2f} %) saved to {board}")
    if "threshold" not in insitu.layer_rules(net):
        rep = sign_experiment(ds, net, args.device, args.epochs, tuple(args.seeds), log)
    else:
        rep = experiment(ds, net, args.device, tuple(dict.fromkeys(args.mode)), args.epochs, tuple(args.seeds),
                         tuple(args.stuck_grid), args.fig4b_epochs, log, tuple(args.parts), save if board else None)
    rep["data"] = str(args.data)
    if saved:
        rep["board_file"] = saved[0]
    files = saved + [str(write_atomic(rep_path, json.dumps(rep, indent=1), args.force))]
    return files + plots(rep, out, args.force)
