"""Every stage of Yao 2020's table through the device model, over several device seeds.

Per device seed (one board = one Crossbar seeded with it):
  1. transfer: C1/C3 of the three convolver groups G1, G2, G3 and the shared FC layer
     (golden/replicate.py placement) are written by write-verify (golden/transfer.py);
  2. FC inputs of the images through each group's conv layers (golden integer datapath on the
     crossbar); test error of each group = groups_before; G1 is the paper's single network, so
     "transferred" = 100 - error(G1); split-image mode before;
  3. main hybrid training (Fig. 3): a copy of the transferred board, FC trained for one epoch
     (550 iterations of 100 images from the first 55,000) with G1; test and training error every
     `record_every` iterations; "hybrid" = final test accuracy;
  4. replicated hybrid training (Fig. 4): the original transferred board, batches go to G1, G2, G3
     in turn (Yao: 100 rounds = 300 batches), all updating the shared FC; groups_after and the
     split-image mode after (its FC inputs are unchanged: conv cells are never reprogrammed).
Mean and s.d. over seeds of every number; plots of Fig. 3f, Fig. 3c-e and Fig. 1c.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import cnn
from .blas import limit_blas_threads
from .crossbar import Crossbar
from .datapath import DatapathConfig
from .devices import preset
from .fileio import check_outputs, write_atomic
from .hybrid import (REP_CLIP_CODE, FeatureSource, HybridConfig, HybridTrainer, batch_order,
                     choose_step, error_pct, fc_inputs, replicated_batches, replicated_schedule, validation_subset)
from .replicate import group_mappings, split_forward
from .transfer import format_failures, transfer
from .yao2020 import YAO2020, YAO_GROUPS_AFTER, YAO_GROUPS_BEFORE, YAO_SPLIT, YAO_TRAIN_ERROR

@dataclass
class StageOptions:
    device: str = "yao2020"
    overrides: dict = field(default_factory=dict)   # DeviceParams fields (e.g. read_noise_rel)
    eta: float | None = None                       # main hybrid step; None: choose_step per board
    guard: bool = True                             # golden.hybrid.Guard in the main hybrid training
    mode: str = "closed"
    iterations: int | None = None                  # main hybrid training; None: one epoch of n_train
    rep_iterations: int = 300                      # replicated training batches (Yao: 100 rounds x 3 batches)
    rep_eta: float | None = None                   # replicated training; None: the board's chosen main step
    rep_update: str = "round"                      # "round" (one step per 3 batches) or "batch" (per batch)
    rep_clip: int | None = REP_CLIP_CODE           # update clipping of the replicated training (codes)
    record_every: int = 50
    n_train: int | None = None                     # None: the dataset's training split (ds.split)
    n_test: int | None = None
    groups: tuple = ("G1", "G2", "G3")
    adc_bits: int = 8
    input_bits: int = 8
    adc_full_scale_ua: dict = field(default_factory=dict)  # per layer (DatapathConfig); missing = default
    age_hours: float = 0.0                         # > 0: age the hybrid-trained board, re-evaluate
    keep_arrays: bool = True                       # return arrays for the plots


def run_seed(seed: int, w, ds, opt: StageOptions, layers=cnn.YAO2020) -> dict:
    t_start = time.perf_counter()
    dcfg = DatapathConfig(input_bits=opt.input_bits, adc_bits=opt.adc_bits,
                          adc_full_scale_ua=dict(opt.adc_full_scale_ua))
    xb = Crossbar(opt.device, seed=seed, **opt.overrides)
    maps = group_mappings(layers, opt.groups)
    g1 = opt.groups[0]
    fcg = maps[g1].groups[cnn.weight_layers(layers)[-1].name]
    rep = transfer(xb, maps, w.int_w, layers)

    n_train = opt.n_train or ds.split[0]
    iterations = opt.iterations or max(1, n_train // 100)
    xtr = ds.train_images[:n_train]
    ytr = ds.train_labels[:n_train].astype(np.int64)
    xte = ds.test_images[:opt.n_test]
    yte = ds.test_labels[:opt.n_test].astype(np.int64)
    main_order = batch_order(len(xtr), 100, iterations, seed=seed)
    rep_order = batch_order(len(xtr), 100, opt.rep_iterations, seed=seed + 1_000_003)
    rep_group = replicated_schedule(rep_order, opt.groups)

    t0 = time.perf_counter()
    val = validation_subset(len(ds.train_images))
    train_src = {g1: FeatureSource(xb, w.int_w, w.q, maps[g1], ds.train_images, layers, dcfg,
                                   cache_idx=np.concatenate([np.arange(n_train), val]))}
    for g in opt.groups[1:]:
        idx = rep_order[[i for i in range(opt.rep_iterations) if rep_group[i] == g]].ravel()
        train_src[g] = FeatureSource(xb, w.int_w, w.q, maps[g], xtr, layers, dcfg, cache_idx=idx)
    test_src = {g: FeatureSource(xb, w.int_w, w.q, maps[g], xte, layers, dcfg) for g in opt.groups}
    all_te = np.arange(len(xte))
    all_tr = np.arange(len(xtr))
    split_te = None
    if len(opt.groups) == 3:
        split_te = split_forward(xb, maps, w.int_w, w.q, xte, layers, dcfg)
    t_feat = time.perf_counter() - t0

    groups_before = [error_pct(xb, fcg, test_src[g](all_te), yte, dcfg) for g in opt.groups]
    split_before = error_pct(xb, fcg, split_te, yte, dcfg) if split_te is not None else None

    # main experiment: one epoch with G1, on a copy of the transferred board, the step chosen on it
    step = _step(xb, maps[g1], w, ds, train_src[g1], n_train, val, iterations, seed, opt, dcfg)
    xm = xb.copy()
    hc = HybridConfig(eta=step["eta"], iterations=iterations, mode=opt.mode, record_every=opt.record_every,
                      guard=opt.guard)
    tm = HybridTrainer(xm, maps[g1], w.q, hc, dcfg=dcfg)
    src_te, src_tr = test_src[g1], train_src[g1]
    rec_tr = all_tr
    if not src_te.cached:
        # read noise: features are recomputed through the board being trained at every use; the
        # recorded training error then uses the first 5,000 training images (time)
        src_te = FeatureSource(xm, w.int_w, w.q, maps[g1], xte, layers, dcfg)
        src_tr = FeatureSource(xm, w.int_w, w.q, maps[g1], xtr, layers, dcfg)
        rec_tr = all_tr[:5000]
    trace = tm.run(((src_tr(ix), ytr[ix]) for ix in main_order),
                   record=lambda t: (t.error(src_te(all_te), yte), t.error(src_tr(rec_tr), ytr[rec_tr])))
    hybrid_err = trace.test_error[-1]
    aged = None
    if opt.age_hours > 0:
        xm.age(opt.age_hours * 3600.0)
        aged = 100 - error_pct(xm, fcg, fc_inputs(xm, w.int_w, w.q, maps[g1], xte, layers, dcfg), yte, dcfg)

    # replicated convolvers: batches to G1, G2, G3 in turn, shared FC, on the original board
    tr_ = HybridTrainer(xb, maps[g1], w.q, HybridConfig(eta=step["eta"] if opt.rep_eta is None else opt.rep_eta,
                                                        iterations=opt.rep_iterations,
                                                        mode=opt.mode, record_every=0, clip_code=opt.rep_clip),
                        dcfg=dcfg)
    rep_trace = tr_.run(replicated_batches(train_src, ytr, rep_order, opt.groups, opt.rep_update))
    groups_after = [error_pct(xb, fcg, test_src[g](all_te), yte, dcfg) for g in opt.groups]
    if split_te is not None and not test_src[g1].cached:
        split_te = split_forward(xb, maps, w.int_w, w.q, xte, layers, dcfg)   # read noise: read again
    split_after = error_pct(xb, fcg, split_te, yte, dcfg) if split_te is not None else None

    s = rep.summary()
    out = {
        "seed": seed,
        "transferred": 100 - groups_before[0],
        "hybrid": 100 - hybrid_err,
        "train_error_before": trace.train_error[0],
        "train_error_after": trace.train_error[-1],
        "groups_before": groups_before,
        "groups_after": groups_after,
        "split_before": None if split_before is None else 100 - split_before,
        "split_after": None if split_after is None else 100 - split_after,
        "hybrid_aged": aged,
        "n_train": n_train, "iterations": iterations, "step": step, "rep_eta": tr_.cfg.eta,
        "guard": tm.guard.as_dict() if tm.guard else None,
        "trace": {"iterations": trace.iterations, "test_error": trace.test_error, "train_error": trace.train_error},
        "hybrid_stats": {"main": tm.prog.stats.as_dict(), "replicated": tr_.prog.stats.as_dict(),
                         "replicated_steps": len(rep_trace.commands),
                         "failures_main": tm.prog.failures, "failures_replicated": tr_.prog.failures},
        "transfer": {k: s[k] for k in ("cells", "pulses_total", "pulses_mean", "pulses_max", "pulses_mean_per_level",
                                       "failed", "failures", "seconds")},
        "transfer_error": {k: {kk: v[kk] for kk in ("n", "mean_na", "sd_na", "max_abs_na", "within_100na")}
                           for k, v in s["weight_error"].items()},
        "device_error": {k: {kk: v[kk] for kk in ("n", "mean_na", "sd_na", "max_abs_na", "within_100na")}
                         for k, v in s["device_error"].items()},
        "seconds_hybrid_epoch": trace.seconds_train,
        "seconds_hybrid_record": trace.seconds_record,
        "seconds_features": t_feat,
        "seconds_seed": time.perf_counter() - t_start,
        "cached_features": train_src[g1].cached,
    }
    if opt.keep_arrays:
        p = rep.plan
        out["arrays"] = {
            "weight_error_na": {k: rep.weight_error_na(k).tolist() for k in p.weights},
            "level": p.level.tolist(),
            "current_na": rep.current_na.tolist(),
            "pulses": rep.pulses.tolist(),
        }
    return out


def _step(xb, mapping, w, ds, src, n_train, val, iterations, seed, opt, dcfg) -> dict:
    """The main hybrid step of this board: opt.eta if given, else golden.hybrid.choose_step on the
    validation subset `val` of the training file (the choice and its figures go in the report)."""
    if opt.eta is not None:
        return {"eta": float(opt.eta), "chosen": False}
    r = choose_step(xb, mapping, w.q, src, ds.train_labels, np.arange(n_train), val, iterations, seed,
                    mode=opt.mode, guard=opt.guard, dcfg=dcfg)
    return {**r, "chosen": True}


_SHARED = {}


def _worker(seed):
    limit_blas_threads(1)
    return run_seed(seed, _SHARED["w"], _SHARED["ds"], _SHARED["opt"])


def run_stages(w, ds, seeds, opt: StageOptions, jobs: int = 1, log=None) -> dict:
    """All device stages for every seed (in `jobs` processes), aggregated."""
    seeds = list(seeds)
    limit_blas_threads(1)
    t0 = time.perf_counter()
    if jobs > 1 and len(seeds) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        _SHARED.update(w=w, ds=ds, opt=opt)
        with ProcessPoolExecutor(min(jobs, len(seeds)), mp_context=mp.get_context("fork")) as ex:
            per = []
            for r in ex.map(_worker, seeds):
                per.append(r)
                if log:
                    log(_seed_line(r))
        _SHARED.clear()
    else:
        per = []
        for s in seeds:
            per.append(run_seed(s, w, ds, opt))
            if log:
                log(_seed_line(per[-1]))
    return {**aggregate(per, opt, time.perf_counter() - t0), "dataset": ds.name}


def _seed_line(r):
    g = "/".join(f"{x:.2f}" for x in r["groups_before"]) + " -> " + "/".join(f"{x:.2f}" for x in r["groups_after"])
    return (f"seed {r['seed']}: transferred {r['transferred']:.2f} %, hybrid {r['hybrid']:.2f} %, "
            f"groups error {g} %, {r['transfer']['failed']} failed cells, {r['seconds_seed']:.0f} s")


def _ms(vals):
    a = np.array([v for v in vals if v is not None], dtype=np.float64)
    if not len(a):
        return None, None
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def aggregate(per: list, opt: StageOptions, seconds: float) -> dict:
    tm, ts = _ms([r["transferred"] for r in per])
    hm, hs = _ms([r["hybrid"] for r in per])
    ng = len(per[0]["groups_before"])
    gb = [_ms([r["groups_before"][i] for r in per]) for i in range(ng)]
    ga = [_ms([r["groups_after"][i] for r in per]) for i in range(ng)]
    sb, sbs = _ms([r["split_before"] for r in per])
    sa, sas = _ms([r["split_after"] for r in per])
    trb, _ = _ms([r["train_error_before"] for r in per])
    tra, _ = _ms([r["train_error_after"] for r in per])
    aged, aged_sd = _ms([r["hybrid_aged"] for r in per])
    fails = [dict(f, seed=r["seed"]) for r in per for f in r["transfer"]["failures"]]
    return {
        "device": opt.device,
        "device_params": asdict(preset(opt.device, **opt.overrides)),
        "options": {**{k: v for k, v in asdict(opt).items() if k != "keep_arrays"},
                    "n_train": per[0]["n_train"], "iterations": per[0]["iterations"]},
        "eta_chosen": [r["step"]["eta"] for r in per],
        "guard_decays": [len(r["guard"]["decays_at"]) if r["guard"] else 0 for r in per],
        "seeds": [r["seed"] for r in per],
        "transferred": tm, "transferred_sd": ts,
        "hybrid": hm, "hybrid_sd": hs,
        "train_error_before": trb, "train_error_after": tra,
        "groups_before": [m for m, _ in gb], "groups_before_sd": [s for _, s in gb],
        "groups_after": [m for m, _ in ga], "groups_after_sd": [s for _, s in ga],
        "groups_improved_all_seeds": all(a < b for r in per for a, b in zip(r["groups_after"], r["groups_before"])),
        "split_before": sb, "split_before_sd": sbs, "split_after": sa, "split_after_sd": sas,
        "hybrid_aged": aged, "hybrid_aged_sd": aged_sd,
        "transfer_cells": per[0]["transfer"]["cells"],
        "transfer_pulses_mean": float(np.mean([r["transfer"]["pulses_mean"] for r in per])),
        "transfer_pulses_max": int(max(r["transfer"]["pulses_max"] for r in per)),
        "transfer_failed": len(fails), "transfer_failures": fails,
        "seconds_hybrid_epoch": float(np.mean([r["seconds_hybrid_epoch"] for r in per])),
        "seconds_stages": seconds,
        "per_seed": [{k: v for k, v in r.items() if k != "arrays"} for r in per],
        "_arrays": [r.get("arrays") for r in per],
    }


def format_table(basic: dict | None, st: dict) -> str:
    """The accuracy table beside Yao 2020's (REFERENCE.md section 1)."""
    o = st["options"]
    etas = "/".join(f"{e:g}" for e in st["eta_chosen"])
    lines = [f"device {st['device']}, seeds {st['seeds']}, {o['mode']}-loop programming, Th 1.5 uS, batch 100; "
             f"main: eta {etas}" + (" (chosen on the validation split, per seed)" if o["eta"] is None else "")
             + f", {o['iterations']} iterations" + (", guard on" if o.get("guard") else "")
             + f"; replicated: eta {'the main step' if o['rep_eta'] is None else format(o['rep_eta'], 'g')}, "
             f"{o['rep_iterations']} batches, one update per {o['rep_update']}"
             + (f", clip {o['rep_clip']} codes" if o.get("rep_clip") else "")]
    if st.get("guard_decays") and any(st["guard_decays"]):
        lines.append(f"guard: step halved {'/'.join(map(str, st['guard_decays']))} time(s) per seed")

    def row(label, mine, yao):
        lines.append(f"{label:<40}{mine:>28}{yao:>18}")

    def pm(m, s):
        return "-" if m is None else f"{m:.2f} +/- {s:.2f} %"

    def arrow(a, b, sa=None, sb=None):
        if a is None:
            return "-"
        if sa is None:
            return f"{a:.2f} -> {b:.2f} %"
        return f"{a:.2f}+/-{sa:.2f} -> {b:.2f}+/-{sb:.2f} %"

    n = f"{basic['images']} test images" if basic else "test images"
    row(f"stage (accuracy, {n})", "mcnn (mean +/- s.d.)", "Yao 2020 (10k)")
    if basic:
        row("software, float", f"{basic['float']:.2f} %", f"{YAO2020['float']:.2f} %")
        row("quantised, 15 levels, 8-bit acts", f"{basic['quantized']:.2f} %", f"{YAO2020['quantized']:.2f} %")
        row("integer datapath (ideal cells)", f"{basic['integer']:.2f} %", "-")
    row("after weight transfer", pm(st["transferred"], st["transferred_sd"]), f"{YAO2020['transferred']:.2f} %")
    if basic:
        row("transfer loss (15-level - transferred)", f"{transfer_loss(basic, st):.2f} points",
            f"{YAO2020['quantized'] - YAO2020['transferred']:.2f} points")
    ep = "1 epoch" if o["iterations"] * 100 == o["n_train"] else f"{o['iterations']} iterations"
    row(f"after hybrid training ({ep})", pm(st["hybrid"], st["hybrid_sd"]), f"{YAO2020['hybrid']:.2f} %")
    row("training error, transferred -> hybrid", arrow(st["train_error_before"], st["train_error_after"]),
        arrow(*YAO_TRAIN_ERROR))
    for i in range(len(st["groups_before"])):
        yao = arrow(YAO_GROUPS_BEFORE[i], YAO_GROUPS_AFTER[i]) if i < len(YAO_GROUPS_BEFORE) else "-"
        row(f"group G{i + 1} error, transferred -> hybrid",
            arrow(st["groups_before"][i], st["groups_after"][i], st["groups_before_sd"][i], st["groups_after_sd"][i]),
            yao)
    if st["split_before"] is not None:
        row("one image split over 3 groups", arrow(st["split_before"], st["split_after"]), arrow(*YAO_SPLIT))
    if st["hybrid_aged"] is not None:
        row(f"after hybrid training, aged {o['age_hours']:g} h", pm(st["hybrid_aged"], st["hybrid_aged_sd"]), "-")
    lines.append(f"every group improved on every seed: {'yes' if st['groups_improved_all_seeds'] else 'NO'}")
    lines.append(f"transfer: {st['transfer_cells']} cells per board, pulses per cell mean "
                 f"{st['transfer_pulses_mean']:.2f}, max {st['transfer_pulses_max']}; "
                 f"{st['transfer_failed']} cell(s) failed to verify over all seeds")
    if st["transfer_failures"]:
        lines.append(format_failures(st["transfer_failures"], limit=50))
        if len(st["transfer_failures"]) > 50:
            lines.append("  (all of them, with layer, level, codes, pulses and state: --json transfer_failures)")
    hf = sum(r["hybrid_stats"]["main"]["failed"] + r["hybrid_stats"]["replicated"]["failed"] for r in st["per_seed"])
    lines.append(f"hybrid training: {hf} programming operation(s) failed to verify over all seeds"
                 + (" (listed in --json: per_seed[].hybrid_stats)" if hf else ""))
    lines.append(f"hybrid epoch {st['seconds_hybrid_epoch']:.1f} s (mean per seed, without the error recording); "
                 f"all device stages {st['seconds_stages']:.0f} s")
    return "\n".join(lines)


PLOT_FILES = ("error_vs_iteration.png", "transfer_error.png", "level_distributions.png", "pulses_per_level.png")


def plots(st: dict, outdir, force: bool = False) -> list[str]:
    """PNG plots: error vs iteration (Fig. 3f), transfer-error histograms (Fig. 3c-e), conductance
    distributions of the 8 levels (Fig. 1c), pulses per level (ED Fig. 8); PLOT_FILES in outdir,
    each written atomically, existing ones replaced only with force."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(outdir)
    check_outputs([out / f for f in PLOT_FILES], force)
    files = []

    def save(fig, name):
        files.append(str(write_atomic(out / name, lambda f: fig.savefig(f, format="png", dpi=120), force)))
        plt.close(fig)

    # Fig. 3f
    fig, ax = plt.subplots(figsize=(6, 4))
    it = np.array(st["per_seed"][0]["trace"]["iterations"])
    for key, col, lab in (("test_error", "tab:blue", "test (10k)"), ("train_error", "tab:green", "training (55k)")):
        a = np.array([r["trace"][key] for r in st["per_seed"]], dtype=np.float64)
        ax.plot(it, a.mean(0), color=col, label=lab)
        if len(a) > 1:
            ax.fill_between(it, a.mean(0) - a.std(0, ddof=1), a.mean(0) + a.std(0, ddof=1), color=col, alpha=0.2)
    ax.set_xlabel("iteration (batch of 100)")
    ax.set_ylabel("error rate (%)")
    ax.set_title(f"hybrid training, {st['device']}, {len(st['seeds'])} seeds (Yao Fig. 3f)")
    ax.legend()
    fig.tight_layout()
    save(fig, "error_vs_iteration.png")

    arrs = [a for a in st["_arrays"] if a]
    if arrs:
        keys = list(arrs[0]["weight_error_na"])
        layers = list(dict.fromkeys(k.split("/")[-1] for k in keys))
        fig, axs = plt.subplots(1, len(layers), figsize=(3.4 * len(layers), 3.2), squeeze=False)
        for ax, lname in zip(axs[0], layers):
            ks = [k for k in keys if k.split("/")[-1] == lname]
            e = np.concatenate([a["weight_error_na"][k] for a in arrs for k in ks])
            ax.hist(e, bins=np.arange(-800, 801, 40), color="tab:purple")
            grp = f" ({', '.join(k.split('/')[0] for k in ks)})" if len(ks) > 1 else ""
            ax.set_title(f"{lname}{grp}: s.d. {e.std():.0f} nA", fontsize=9)
            ax.set_xlabel("weight transfer error (nA)")
        axs[0][0].set_ylabel("weights")
        fig.suptitle("weight-transfer error (I+ - I-) - target, all seeds (Yao Fig. 3c-e)")
        fig.tight_layout()
        save(fig, "transfer_error.png")

        fig, ax = plt.subplots(figsize=(6, 4))
        lv = np.concatenate([a["level"] for a in arrs])
        cur = np.concatenate([a["current_na"] for a in arrs]) / 1000.0
        for k in range(8):
            ax.hist(cur[lv == k], bins=np.arange(0.0, 4.6, 0.02), histtype="stepfilled", alpha=0.7,
                    label=f"{(k + 1) * 2.5:g} uS")
        ax.set_yscale("log")
        ax.set_xlabel("read current at 0.2 V (uA)")
        ax.set_ylabel("cells")
        ax.set_title("conductance of the 8 levels after transfer (Yao Fig. 1c)")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        save(fig, "level_distributions.png")

        fig, ax = plt.subplots(figsize=(5, 3.5))
        pul = np.concatenate([a["pulses"] for a in arrs])
        ax.bar(np.arange(8) * 0.5 + 0.5, [pul[lv == k].mean() if (lv == k).any() else 0 for k in range(8)], width=0.3)
        ax.set_xlabel("target read current (uA), start > 4 uA")
        ax.set_ylabel("mean pulses")
        ax.set_title("pulses to reach each level (Yao ED Fig. 8a)")
        fig.tight_layout()
        save(fig, "pulses_per_level.png")
    return files


def transfer_loss(basic: dict, st: dict) -> float:
    """15-level accuracy minus the mean accuracy after transfer, in points (issue 19's target)."""
    return basic["quantized"] - st["transferred"]


def to_json(st: dict, basic: dict | None = None) -> dict:
    d = {k: v for k, v in st.items() if not k.startswith("_")}
    if basic:
        d = {**basic, **d, "transfer_loss": transfer_loss(basic, st)}
    return json.loads(json.dumps(d, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


