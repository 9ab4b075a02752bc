"""The `mcnn` command line."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from golden.idx import IDXError, default_data_dir, load_dataset
from golden.weights import DEFAULT_WEIGHTS, WeightsError


def _dataset(args):
    return load_dataset(args.data)


def cmd_train(args):
    import numpy as np

    from golden import model, train
    from golden.weights import Weights, dequantized

    ds = _dataset(args)
    cfg = train.TrainConfig(seed=args.seed, epochs=args.epochs, qat_epochs=args.qat_epochs)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    fw, iw, q, meta = train.train(ds, cfg, log=log)
    w = Weights(fw, iw, q, meta)
    xt, yt = ds.test_images, ds.test_labels.astype(np.int64)
    meta["test_float"] = model.accuracy(fw, xt, yt)
    meta["test_quantized"] = model.accuracy(dequantized(w), xt, yt, q=q)
    w.save(args.out)
    print(f"float {meta['test_float']:.2f} %, 15-level {meta['test_quantized']:.2f} % on the test set; "
          f"{meta['seconds_total']:.0f} s; wrote {Path(args.out).with_suffix('.npz')} (+ .json)")


def cmd_eval(args):
    from golden import weights
    from golden.datapath import DatapathConfig
    from golden.evaluate import evaluate

    w = weights.load(args.weights)
    ds = _dataset(args)
    cfg = DatapathConfig(input_bits=8, adc_bits=args.adc_bits)
    r = evaluate(w, ds, args.n, cfg=cfg)
    if args.json:
        print(json.dumps(r))
        return
    yao = r["yao2020"]
    print(f"MNIST test images: {r['images']} (weights {args.weights})")
    print(f"{'stage':<34}{'mcnn':>9}{'Yao 2020':>10}")
    print(f"{'software, float':<34}{r['float']:>8.2f}%{yao['float']:>9.2f}%")
    print(f"{'quantised, 15 levels, 8-bit acts':<34}{r['quantized']:>8.2f}%{yao['quantized']:>9.2f}%")
    print(f"{'integer datapath (ideal cells)':<34}{r['integer']:>8.2f}%{'-':>10}")
    print(f"integer vs quantised: {r['agreement_integer_quantized']:.2f} % same prediction, "
          f"{r['logits_equal_images']}/{r['images']} images with identical logits")
    print(f"integer datapath: {r['seconds_integer']:.2f} s ({r['seconds_integer_10k']:.2f} s per 10k images)")


def cmd_bench(args):
    from golden import weights
    from golden.datapath import Datapath

    w = weights.load(args.weights)
    ds = _dataset(args)
    x = ds.test_images[:args.n]
    dp = Datapath(w.int_w, w.q)
    dp.run(x[:100])  # warm-up
    t0 = time.perf_counter()
    res = dp.run(x)
    dt = time.perf_counter() - t0
    print(json.dumps({"images": len(x), "golden_images_per_s": round(len(x) / dt, 1),
                      "seconds_integer_10k": round(dt * 10000 / len(x), 3),
                      "integer_accuracy": float((res.classes == ds.test_labels[:args.n]).mean() * 100)}))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="mcnn", description="Open digital periphery for memristor CNN accelerators")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, weights=True):
        p.add_argument("--data", type=Path, default=default_data_dir(),
                       help="directory with the four standard IDX files (default: data/mnist)")
        if weights:
            p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                           help="weights stem (<stem>.npz + <stem>.json; default weights/yao2020)")

    p = sub.add_parser("train", help="ex-situ training + 15-level quantisation (NumPy)")
    common(p, weights=False)
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--qat-epochs", type=int, default=3)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="accuracy table: float, 15-level, integer datapath (beside Yao 2020)")
    common(p)
    p.add_argument("--n", type=int, default=None, help="first N test images (default: all)")
    p.add_argument("--adc-bits", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("bench", help="benchmarks, one JSON object")
    common(p)
    p.add_argument("--n", type=int, default=10000)
    p.set_defaults(fn=cmd_bench)

    args = ap.parse_args(argv)
    try:
        args.fn(args)
    except (IDXError, WeightsError, ValueError) as e:
        print(f"mcnn {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
