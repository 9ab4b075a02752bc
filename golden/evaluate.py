"""Accuracy of every stage on the same test images: float, 15-level quantised, integer datapath."""
from __future__ import annotations

import time

import numpy as np

from . import cnn, model
from .datapath import Datapath, DatapathConfig
from .idx import Dataset
from .weights import Weights, dequantized
from .yao2020 import YAO2020

def evaluate(w: Weights, ds: Dataset, n: int | None = None, layers=cnn.YAO2020,
             cfg: DatapathConfig | None = None, mapping=None) -> dict:
    """Float, 15-level and integer-datapath accuracy on the first n test images (ds already in the
    network's input format); mapping: the network's placement (default: golden.mapping's Yao 2020)."""
    x, y = ds.test_images[:n], ds.test_labels[:n].astype(np.int64)
    pf = model.predict(w.float_w, x, layers).argmax(1)
    lq = model.predict(dequantized(w), x, layers, q=w.q)
    pq = lq.argmax(1)
    dp = Datapath(w.int_w, w.q, layers, mapping, cfg=cfg)
    t0 = time.perf_counter()
    res = dp.run(x)
    t_int = time.perf_counter() - t0
    pct = lambda p: float((p == y).mean() * 100)  # noqa: E731
    return {
        "images": int(len(x)),
        "float": pct(pf),
        "quantized": pct(pq),
        "integer": pct(res.classes),
        "agreement_integer_quantized": float((res.classes == pq).mean() * 100),
        "logits_equal_images": int(np.all(res.logits == np.round(lq / w.q.logit_scale), axis=1).sum()),
        "seconds_integer": round(t_int, 3),
        "seconds_integer_10k": round(t_int * 10000 / len(x), 3),
        "yao2020": YAO2020,
    }


def evaluate_stages(w: Weights, ds: Dataset, seeds=range(5), opt=None, jobs: int = 1, n: int | None = None,
                    cfg: DatapathConfig | None = None, log=None) -> tuple[dict, dict]:
    """The full table (`mcnn eval --stages all`): the ideal stages of `evaluate` plus every device
    stage of golden/report.py (transfer, hybrid training, replicated groups) over the device seeds."""
    from .blas import limit_blas_threads
    from .report import StageOptions, run_stages
    limit_blas_threads(1)
    opt = opt or StageOptions()
    opt.n_test = n
    basic = evaluate(w, ds, n, cfg=cfg)
    return basic, run_stages(w, ds, seeds, opt, jobs=jobs, log=log)
