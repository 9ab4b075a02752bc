"""`mcnn eval`'s energy and metrics section: the golden model measures what the energy model
(golden/energy.py) costs, on the evaluated images.

  inference   the golden integer datapath (ideal cells) on the test images, with a DriveMeter on
              the array: per-image activity (golden/activity.py) and the conductance every BL pulse
              drove; classes -> confusion matrix and the Aguirre 2024 metrics (golden/metrics.py);
  transfer    write-verify of every mapped cell on the device model (preset, seed): the SET/RESET
              pulses and verify reads the crossbar counted;
  hybrid      `hybrid_iterations` real iterations of hybrid training (batches of 100 from the first
              55,000 training images) on the transferred board; their programming activity is
              scaled to one epoch (550 iterations) - stated as such in the report.
"""
from __future__ import annotations

import numpy as np

from . import cnn, energy, metrics
from .activity import inference_activity, programming_activity
from .analog import IdealArray
from .datapath import Datapath, DatapathConfig
from .mapping import build_mapping, conductance_levels


def measure_inference(int_w, q, images, layers=cnn.YAO2020, mapping=None, cfg: DatapathConfig | None = None):
    """-> (Result, per-image activity {layer: {key: (N,)}}, drive per image {layer: uS x pulses})."""
    mapping = mapping or build_mapping(layers)
    cfg = cfg or DatapathConfig()
    levels = conductance_levels(layers, int_w, mapping)
    meter = energy.DriveMeter(IdealArray(levels), mapping,
                              energy.column_conductance_us(energy.ideal_conductance_us(levels)))
    res = Datapath(int_w, q, layers, mapping, cfg, array=meter).run(images, keep=True)
    act = inference_activity(res.activations, images, layers, mapping, input_bits=cfg.input_bits)
    n = max(len(images), 1)
    return res, act, {k: v / n for k, v in meter.drive_us.items()}


def measure_programming(w, ds, layers=cnn.YAO2020, mapping=None, device: str = "yao2020", seed: int = 0,
                        hybrid_iterations: int = 10, cfg: DatapathConfig | None = None) -> dict:
    """Programming activity of the weight transfer and of `hybrid_iterations` hybrid iterations."""
    from .crossbar import Crossbar
    from .hybrid import FeatureSource, HybridConfig, HybridTrainer, batch_order, choose_step, validation_subset
    from .transfer import transfer
    mapping = mapping or build_mapping(layers)
    xb = Crossbar(device, seed=seed)
    c0 = dict(xb.counters)
    transfer(xb, mapping, w.int_w, layers)
    c1 = dict(xb.counters)
    out = {"device": device, "seed": seed, "transfer": programming_activity(c0, c1), "hybrid_iterations": 0}
    if hybrid_iterations > 0:
        n_train = ds.split[0]
        order = batch_order(n_train, 100, hybrid_iterations, seed=seed)
        val = validation_subset(len(ds.train_images), 250)      # an estimate: a cheaper choice (250 images, 1 trial)
        src = FeatureSource(xb, w.int_w, w.q, mapping, ds.train_images, layers, cfg,
                            cache_idx=np.concatenate([order.ravel(), val]))
        y = ds.train_labels.astype(np.int64)
        step = choose_step(xb, mapping, w.q, src, y, np.arange(n_train), val, hybrid_iterations, seed, dcfg=cfg,
                           orders=1)
        c1 = dict(xb.counters)      # the choice trains copies only
        tm = HybridTrainer(xb, mapping, w.q, HybridConfig(eta=step["eta"], iterations=hybrid_iterations,
                                                          record_every=0, guard=True), dcfg=cfg)
        tm.run((src(ix), y[ix]) for ix in order)
        out.update(hybrid=programming_activity(c1, dict(xb.counters)), hybrid_iterations=hybrid_iterations,
                   n_train=n_train, eta=step["eta"])
    return out


def evaluate_energy(w, ds, n: int | None = None, layers=cnn.YAO2020, cfg: DatapathConfig | None = None,
                    device: str = "yao2020", seed: int = 0, hybrid_iterations: int = 10) -> dict:
    """Energy report + classification metrics + ADC check of `mcnn eval` (JSON-able)."""
    from .perf import Timing, bound_cycles_per_image
    cfg = cfg or DatapathConfig()
    mapping = build_mapping(layers)
    x, y = ds.test_images[:n], ds.test_labels[:n].astype(np.int64)
    res, act, drive = measure_inference(w.int_w, w.q, x, layers, mapping, cfg)
    prog = measure_programming(w, ds, layers, mapping, device, seed, hybrid_iterations, cfg)
    epoch = None
    if prog["hybrid_iterations"]:
        per_epoch = prog["n_train"] // 100
        scale = per_epoch / prog["hybrid_iterations"]
        epoch = {"programming": {k: v * scale for k, v in prog["hybrid"].items()}, "n_train": prog["n_train"]}
    tm = Timing(input_bits=cfg.input_bits)
    t_clock_ns = energy.T_READ_NS / tm.pulse_cycles     # perf.Timing: a 50 ns pulse is pulse_cycles cycles
    bound_s = bound_cycles_per_image(layers, mapping, tm)["cycles"] * t_clock_ns * 1e-9
    rep = energy.energy_report(act, mapping, layers, drive_us=drive, transfer=prog["transfer"], epoch=epoch,
                               seconds_per_image=bound_s, input_shape=tuple(x.shape[1:]) + (1,))
    est = energy.drive_from_pulses(act, mapping, energy.column_conductance_us(
        energy.ideal_conductance_us(conductance_levels(layers, w.int_w, mapping))))
    rep["array_drive_us_per_image"] = {"measured": drive, "from_bl_pulses": est}
    rep["seconds_per_image_note"] = (f"array-bound latency (golden/perf.py: {tm.pulse_cycles} cycles per 50 ns "
                                     f"pulse at {1e3 / t_clock_ns:g} MHz), not measured")
    rep["programming_activity"] = prog
    rep["activity_per_image"] = {k: {kk: float(np.mean(vv)) for kk, vv in v.items()} for k, v in act.items()}
    return {"energy": rep, **metrics.metrics_report(y, res.classes, layers, mapping, cfg)}


def _pj(x: float) -> str:
    for unit, f in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(x) >= f:
            return f"{x / f:,.2f} {unit}"
    return f"{x:,.2f} pJ"


def format_energy(rep: dict) -> str:
    e, b = rep["energy_pj_per_image"], rep["energy_breakdown"]
    lines = [f"energy per image (inference): {_pj(e['all'])} all, {_pj(e['yao'])} counting what Yao counted "
             f"(macro core); digital periphery {100 * rep['periphery_share']:.1f} % of all"]
    layers = list(b["by_layer"])
    lines.append(f"{'block':<14}" + "".join(f"{n:>12}" for n in layers) + f"{'total':>12}{'share':>8}")
    for blk, tot in b["by_block"].items():
        mark = "" if blk in b["counted_by_yao"] else " *"
        lines.append(f"{blk + mark:<14}" + "".join(f"{b['by_layer'][n][blk]:>12,.1f}" for n in layers)
                     + f"{tot:>12,.1f}{100 * tot / e['all']:>7.1f}%")
    lay_tot = [sum(b["by_layer"][n].values()) for n in layers]
    lines.append(f"{'all (pJ)':<14}" + "".join(f"{v:>12,.1f}" for v in lay_tot) + f"{e['all']:>12,.1f}")
    lines.append("  * digital periphery, not counted by Yao (Horowitz ISSCC 2014, 45 nm)")
    g, d = rep["gops_per_w"], rep["gops_per_mm2"]
    lines.append(f"GOP/s/W: mcnn {g['yao']:,.0f} (Yao's blocks), {g['all']:,.0f} (all); Yao 2020 macro "
                 f"{g['yao2020_macro']:,}; V100 {g['v100']}   ({rep['ops_per_image']:,} ops per image)")
    if d["mcnn"] is not None:
        lines.append(f"GOP/s/mm^2: mcnn {d['mcnn']:,.1f} ({rep['area_mm2']:.3f} mm^2 of PEs, "
                     f"{rep['seconds_per_image'] * 1e6:.1f} us per image, {rep['seconds_per_image_note']}); "
                     f"Yao 2020 macro {d['yao2020_macro']:,}; V100 {d['v100']}")
    if "energy_transfer_pj" in rep:
        t, pa = rep["energy_transfer_pj"], rep["programming_activity"]
        lines.append(f"weight transfer ({pa['device']}, seed {pa['seed']}): {_pj(t['total'])} "
                     f"(SET {_pj(t['set'])}, RESET {_pj(t['reset'])}, verify reads {_pj(t['verify'])}; "
                     f"{pa['transfer']['set_pulses']} SET, {pa['transfer']['reset_pulses']} RESET pulses, "
                     f"{pa['transfer']['verify_reads']} verify reads)")
    if "energy_hybrid_epoch_pj" in rep:
        h, pa = rep["energy_hybrid_epoch_pj"], rep["programming_activity"]
        lines.append(f"one hybrid-training epoch ({h['images']:,} images, {h['batches']} batches): "
                     f"{_pj(h['total_pj'])} = forward {_pj(h['forward_pj'])} + update engine {_pj(h['update_pj'])}"
                     f" + programming {_pj(h['programming_pj'])} (pulses and verify reads of "
                     f"{pa['hybrid_iterations']} measured iterations x {h['batches'] / pa['hybrid_iterations']:g})")
    return "\n".join(lines)


PLOT_FILES = ("energy_breakdown.png", "confusion_matrix.png")     # what eval_section(plots=DIR) writes


def plot_breakdown(rep: dict, path, force: bool = False) -> str:
    """Stacked bars of the energy per image by block, one bar per layer and one for the total."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    b = rep["energy_breakdown"]
    names = list(b["by_layer"])
    cols = names + ["all"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bottom = np.zeros(len(cols))
    cmap = plt.get_cmap("tab20")
    for i, blk in enumerate(b["by_block"]):
        v = np.array([b["by_layer"][n][blk] for n in names] + [b["by_block"][blk]]) / 1e3
        yao = blk in b["counted_by_yao"]
        ax.bar(cols, v, bottom=bottom, color=cmap(i % 20), label=blk if yao else f"{blk} (periphery)",
               hatch=None if yao else "//")
        bottom += v
    ax.set_ylabel("energy per image (nJ)")
    ax.set_title(f"energy per image by block: {rep['energy_pj_per_image']['all'] / 1e3:.1f} nJ, "
                 f"periphery {100 * rep['periphery_share']:.1f} %")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    from .fileio import write_atomic
    try:
        return str(write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=120), force))
    finally:
        plt.close(fig)


def eval_section(w, ds, n=None, cfg: DatapathConfig | None = None, device: str = "yao2020", seed: int = 0,
                 plots=None, hybrid_iterations: int = 10, force: bool = False) -> tuple[dict, str, list]:
    """What `mcnn eval` adds to its accuracy table: (JSON keys, text, plot files). The JSON has
    energy_pj_per_image, energy_breakdown, gops_per_w at the top level, the rest under "energy",
    the Aguirre 2024 metrics under "metrics" (confusion matrix included) and "adc_check"."""
    import json
    from pathlib import Path
    r = evaluate_energy(w, ds, n, cfg=cfg, device=device, seed=seed, hybrid_iterations=hybrid_iterations)
    e = r["energy"]
    files = []
    if plots is not None:
        out = Path(plots)
        out.mkdir(parents=True, exist_ok=True)
        files.append(plot_breakdown(e, out / PLOT_FILES[0], force))
        files.append(metrics.plot_confusion(r["metrics"]["confusion"], out / PLOT_FILES[1],
                                            f"confusion matrix, integer datapath, {r['metrics']['images']} images",
                                            force))
    d = {k: e[k] for k in ("energy_pj_per_image", "energy_breakdown", "gops_per_w")}
    d.update(energy={k: v for k, v in e.items() if k not in d}, metrics=r["metrics"], adc_check=r["adc_check"],
             confusion_matrix=r["metrics"]["confusion"])
    d = json.loads(json.dumps(d, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    text = "\n".join([format_energy(e), "classification metrics, integer datapath (Aguirre 2024 Table 2):",
                      metrics.format_metrics(r["metrics"]), metrics.format_adc_check(r["adc_check"])])
    return d, text, files
