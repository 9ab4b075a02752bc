"""The classification metrics the field asks for (Aguirre et al., Nat. Commun. 2024, Table 2) and the
ADC resolution check of the same review.

confusion[t, p]: images of true class t predicted as p. Per class k: TP = confusion[k, k],
FN = row sum - TP, FP = column sum - TP, TN = total - TP - FN - FP; recall (sensitivity)
TP / (TP + FN), precision TP / (TP + FP), specificity TN / (TN + FP), F1 = 2 P R / (P + R);
a ratio whose denominator is 0 is reported as None (undefined, not 0). Error rate = 100 - accuracy;
kappa coefficient (Table 2's form) = (accuracy - random accuracy) / (100 - random accuracy), random
accuracy 100 / classes.

ADC bits needed for exact sums (Aguirre 2024, eq. of section "ADC"): ceil(log2((2^K - 1)(2^M - 1) N))
for K input bits per conversion, M weight bits per cell, N rows summed on one line.
"""
from __future__ import annotations

import math

import numpy as np


def confusion_matrix(labels, predictions, n_classes: int | None = None) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = true class, columns = predicted class."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(predictions, dtype=np.int64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.size} vs {p.size}")
    k = n_classes if n_classes is not None else int(max(y.max(initial=-1), p.max(initial=-1)) + 1)
    if y.size and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= k):
        raise ValueError(f"classes must be in 0..{k - 1}")
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def _ratio(a, b):
    return float(a / b) if b else None


def classification_metrics(cm) -> dict:
    """Aguirre 2024 Table 2 from a confusion matrix: accuracy, error rate, kappa, per-class
    precision / recall / specificity / F1, and their macro averages (over the defined values)."""
    cm = np.asarray(cm, dtype=np.int64)
    total = int(cm.sum())
    k = cm.shape[0]
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = total - tp - fn - fp
    prec = [_ratio(tp[i], tp[i] + fp[i]) for i in range(k)]
    rec = [_ratio(tp[i], tp[i] + fn[i]) for i in range(k)]
    spec = [_ratio(tn[i], tn[i] + fp[i]) for i in range(k)]
    f1 = [None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0) for p, r in zip(prec, rec)]
    acc = 100.0 * tp.sum() / total if total else None
    rnd = 100.0 / k

    def mean(v):
        v = [x for x in v if x is not None]
        return float(np.mean(v)) if v else None

    return {
        "images": total,
        "accuracy": acc,
        "error_rate": None if acc is None else 100.0 - acc,
        "kappa": None if acc is None else (acc - rnd) / (100.0 - rnd),
        "per_class": {"precision": prec, "recall": rec, "specificity": spec, "f1": f1,
                      "support": cm.sum(1).tolist()},
        "macro": {"precision": mean(prec), "recall": mean(rec), "specificity": mean(spec), "f1": mean(f1)},
        "confusion": cm.tolist(),
    }


def adc_bits_needed(input_bits: int, weight_bits: int, rows: int) -> int:
    """ceil(log2((2^K - 1)(2^M - 1) N)): ADC bits that represent every sum of N rows exactly."""
    if input_bits < 1 or weight_bits < 1 or rows < 1:
        raise ValueError(f"need K, M, N >= 1, got K={input_bits}, M={weight_bits}, N={rows}")
    return math.ceil(math.log2(((1 << input_bits) - 1) * ((1 << weight_bits) - 1) * rows))


def adc_check(layers, mapping, cfg=None, input_bits_per_read: int = 1, weight_bits: int = 3) -> list[dict]:
    """The resolution check per weight layer of a mapped network.

    One conversion sums, on one SL, the cells of one read group: N = the group's BLs (at most
    mapping.n_bl), each driven with one bit of the input (bit-serial: K = 1 per conversion) through a
    cell of M = 3 bits (8 levels per device). The formula counts weights 0..2^M - 1; the cell's lowest
    level is 2.5 uS, not 0, so the worst case of the cell model (every BL pulsed, every cell at
    20 uS: N x 4 uA) is also given, in codes of the layer's configured ADC (cfg: DatapathConfig).
    `clip`: either worst case exceeds the ADC's codes, so some sums could saturate it."""
    from . import cnn
    from .cell import N_LEVELS, V_READ, level_conductance_us
    from .datapath import DatapathConfig
    cfg = cfg or DatapathConfig()
    i_max = level_conductance_us(N_LEVELS - 1) * V_READ
    out = []
    for L in cnn.weight_layers(layers):
        gs = mapping.groups.get(L.name, [])
        n = max((len(g.inputs) for g in gs), default=0)
        if not n:
            continue
        adc = cfg.adc(L.name)
        need = adc_bits_needed(input_bits_per_read, weight_bits, n)
        worst = math.floor(n * i_max / adc.lsb_ua + 0.5)
        need_cell = max(1, math.ceil(math.log2(worst + 1)))
        out.append({"layer": L.name, "K": input_bits_per_read, "M": weight_bits, "N": n,
                    "bits_needed": need, "worst_code_cell_model": worst, "bits_needed_cell_model": need_cell,
                    "adc_bits": adc.bits, "clip": max(need, need_cell) > adc.bits})
    return out


def metrics_report(labels, predictions, layers, mapping, cfg=None, n_classes: int | None = None) -> dict:
    """The field's metrics of a run in one call (`mcnn eval`, and for `mcnn sim`'s report):
    {"metrics": Table 2 + confusion, "confusion_matrix": [[...]], "adc_check": [...]}."""
    from . import cnn
    k = n_classes if n_classes is not None else cnn.weight_layers(layers)[-1].n_out
    m = classification_metrics(confusion_matrix(labels, predictions, k))
    return {"metrics": m, "confusion_matrix": m["confusion"], "adc_check": adc_check(layers, mapping, cfg)}


def format_adc_check(rows: list[dict]) -> str:
    lines = ["ADC resolution check, ceil(log2((2^K-1)(2^M-1)N)) (Aguirre 2024):"]
    for r in rows:
        s = (f"  {r['layer']:<6} K={r['K']} (bits per read), M={r['M']} (bits per cell), N={r['N']} rows: "
             f"{r['bits_needed']} bits needed (cell model worst case: code {r['worst_code_cell_model']}, "
             f"{r['bits_needed_cell_model']} bits), ADC {r['adc_bits']} bits")
        if r["clip"]:
            s += f"  WARNING: {r['layer']}'s worst-case sums exceed the ADC and can clip"
        lines.append(s)
    return "\n".join(lines)


def format_metrics(m: dict) -> str:
    def f(x):
        return "   -  " if x is None else f"{x:6.4f}"
    lines = [f"error rate {m['error_rate']:.2f} % ({m['images']} images), kappa {m['kappa']:.4f}",
             "class  precision  recall  specificity    F1    support"]
    pc = m["per_class"]
    for i in range(len(pc["f1"])):
        lines.append(f"{i:>5}  {f(pc['precision'][i]):>9}  {f(pc['recall'][i]):>6}  {f(pc['specificity'][i]):>11}"
                     f"  {f(pc['f1'][i])}  {pc['support'][i]:>7}")
    mc = m["macro"]
    lines.append(f"macro  {f(mc['precision']):>9}  {f(mc['recall']):>6}  {f(mc['specificity']):>11}  {f(mc['f1'])}")
    return "\n".join(lines)


def plot_confusion(cm, path, title: str = "confusion matrix", force: bool = False) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(cm.shape[1]))
    ax.set_yticks(range(cm.shape[0]))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    from .fileio import write_atomic
    try:
        return str(write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=120), force))
    finally:
        plt.close(fig)
