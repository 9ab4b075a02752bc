"""The `mcnn` command line."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from golden.fileio import InputError, check_outputs
from golden.idx import default_data_dir, load_dataset
from sw.argtypes import NON_NEGATIVE, POSITIVE, SEED, Parser, float_range, int_range

TEST_SET_MAX = 10_000      # upper bound of --n (checked against the dataset's size as well)


def _net_dataset(args):
    """--network and --data -> (network, dataset): the one place a command's args become them.

    The dataset is checked against the network's source images (size, labels), --n and, for
    --stages all, --n-train; its images go through the network's input transform (li2018: 28x28 ->
    8x8). A --weights / --out left unset becomes the network's committed weights (weights/<name>)."""
    from dataclasses import replace

    from golden import networks
    from golden.weights import default_weights
    net = networks.network(getattr(args, "network", "yao2020"))
    for opt in ("weights", "out"):
        if hasattr(args, opt) and getattr(args, opt) is None:
            setattr(args, opt, default_weights(net))
    ds = load_dataset(args.data, image_shape=net.source_shape, n_classes=net.n_classes)
    n_train = getattr(args, "n_train", None) if getattr(args, "stages", "") == "all" else None
    for opt, n, have, what in (("--n", getattr(args, "n", None), len(ds.test_images), "test images"),
                               ("--n-train", n_train, ds.split[0], "training images before its validation split")):
        if n is not None and n > have:
            raise InputError(f"{opt} {n}: the dataset in {args.data} has {have} {what}")
    if net.transform != "none":
        ds = replace(ds, train_images=net.prepare(ds.train_images), test_images=net.prepare(ds.test_images))
    return net, ds


def _cnn_only(args, net, what: str):
    """One line refusing a stage that exists for the CNN (yao2020) only."""
    if net.name != "yao2020":
        raise InputError(f"{what}: not available for --network {net.name} (the CNN only, --network yao2020)")


def _insitu_only(net, what: str):
    """One line refusing ex-situ weights for a network that has none (elm-board: fresh-cell hidden layer)."""
    if net.name == "elm-board":
        raise InputError(f"{what}: --network elm-board has no ex-situ weights (its hidden layer is the fresh "
                         "cells): mcnn train-insitu / mcnn sim --network elm-board")


def dataset_name(args, ds=None) -> str:
    """The dataset's name in reports: --name, else the --data directory's name (never "MNIST" by default)."""
    from golden.idx import Dataset
    return getattr(args, "name", None) or (ds.name if isinstance(ds, Dataset) else Path(args.data).resolve().name)


def cmd_train(args):
    import numpy as np

    from golden import model, train, weights
    from golden.weights import Weights, dequantized, paths

    if args.epochs == 0 and args.init is None:
        raise InputError("--epochs 0: no float training to start from: give --init STEM")
    net, ds = _net_dataset(args)
    _insitu_only(net, f"mcnn {args.cmd}")
    check_outputs(paths(args.out), args.force)          # before hours of training, not after
    init = weights.load(args.init, net).float_w if args.init is not None else None
    shift = args.shift if args.shift is not None else (2 if net.input_shape[0] >= 28 else 0)
    cfg = train.TrainConfig(seed=args.seed, epochs=args.epochs, qat_epochs=args.qat_epochs, device=args.device,
                            shift=shift, noise_model=args.noise_model, qat_lr=args.qat_lr)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    fw, iw, q, meta = train.train(ds, cfg, net.layers, log=log, init=init)
    w = Weights(fw, iw, q, meta, net.name)
    xt, yt = ds.test_images, ds.test_labels.astype(np.int64)
    meta["init"] = str(args.init) if args.init is not None else None
    meta["test_float"] = model.accuracy(fw, xt, yt, net.layers)
    meta["test_quantized"] = model.accuracy(dequantized(w), xt, yt, net.layers, q=q)
    npz, js = w.save(args.out, force=args.force)
    print(f"{net.name}: float {meta['test_float']:.2f} %, 15-level {meta['test_quantized']:.2f} % on the test set; "
          f"{meta['seconds_total']:.0f} s; wrote {npz} and {js}")


def cmd_eval(args):
    from golden import weights
    from golden.blas import limit_blas_threads
    from golden.datapath import DatapathConfig
    from golden.evaluate import evaluate
    from golden.energy_eval import PLOT_FILES as EVAL_PLOT_FILES
    from golden.report import PLOT_FILES

    if args.plots is not None:
        check_outputs([args.plots / f for f in PLOT_FILES + EVAL_PLOT_FILES], args.force)
    limit_blas_threads(1)        # small matrices: parallelism belongs to processes (Dask), BLAS pinned
    net, ds = _net_dataset(args)
    _insitu_only(net, f"mcnn {args.cmd}")
    w = weights.load(args.weights, net)
    cfg = DatapathConfig(input_bits=8, adc_bits=args.adc_bits)
    if args.stages == "all":
        _cnn_only(args, net, "--stages all")
        return _eval_all(args, w, ds, cfg)
    r = evaluate(w, ds, args.n, net.layers, cfg=cfg, mapping=net.mapping())
    extra, text, files = _energy_section(args, w, ds, cfg) if net.name == "yao2020" else ({}, "", [])
    if args.json:
        print(json.dumps({**r, "network": net.name, **extra, "plots": files}))
        return
    yao = r["yao2020"] if net.name == "yao2020" else {"float": None, "quantized": None}
    fig = lambda v: f"{v:>9.2f}%" if v is not None else f"{'-':>10}"   # noqa: E731
    print(f"{dataset_name(args, ds)} test images: {r['images']} (network {net.name}, weights {args.weights})")
    print(f"{'stage':<34}{'mcnn':>9}{'Yao 2020' if net.name == 'yao2020' else '':>10}")
    print(f"{'software, float':<34}{r['float']:>8.2f}%{fig(yao['float'])}")
    print(f"{'quantised, 15 levels, 8-bit acts':<34}{r['quantized']:>8.2f}%{fig(yao['quantized'])}")
    print(f"{'integer datapath (ideal cells)':<34}{r['integer']:>8.2f}%{'-':>10}")
    print(f"integer vs quantised: {r['agreement_integer_quantized']:.2f} % same prediction, "
          f"{r['logits_equal_images']}/{r['images']} images with identical logits")
    print(f"integer datapath: {r['seconds_integer']:.2f} s ({r['seconds_integer_10k']:.2f} s per 10k images)")
    if text:
        print(text)
    for f in files:
        print(f"wrote {f}")


def _energy_section(args, w, ds, cfg):
    """Energy per image, programming energy, Aguirre 2024 metrics, ADC check (golden/energy_eval.py)."""
    from golden.energy_eval import eval_section
    return eval_section(w, ds, args.n, cfg, device=args.device, seed=args.seed0, plots=args.plots,
                        hybrid_iterations=args.energy_iterations, force=args.force)


def _eval_all(args, w, ds, cfg):
    from golden.devices import preset
    from golden.evaluate import evaluate_stages
    from golden.report import StageOptions, format_table, plots, to_json

    overrides = {}
    if args.read_noise:
        overrides["read_noise_rel"] = args.read_noise
    preset(args.device, **overrides)
    n_train = args.n_train or ds.split[0]
    opt = StageOptions(device=args.device, overrides=overrides, mode=args.mode, n_train=n_train,
                       iterations=args.iterations if args.iterations is not None else max(1, n_train // 100),
                       guard=not args.no_guard,
                       rep_iterations=args.rep_iterations, record_every=args.record_every,
                       adc_bits=args.adc_bits, age_hours=args.age_hours, keep_arrays=args.plots is not None)
    if args.eta is not None:
        opt.eta = args.eta
    if args.rep_eta is not None:
        opt.rep_eta = args.rep_eta
    opt.rep_update = args.rep_update
    if args.rep_clip is not None:
        opt.rep_clip = args.rep_clip or None
    seeds = range(args.seed0, args.seed0 + args.seeds)
    log = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    basic, st = evaluate_stages(w, ds, seeds, opt, jobs=args.jobs, n=args.n, cfg=cfg, log=log)
    files = plots(st, args.plots, force=args.force) if args.plots is not None else []
    extra, text, efiles = _energy_section(args, w, ds, cfg)
    files += efiles
    if args.json:
        d = to_json(st, basic)
        d.update(extra, plots=files)
        print(json.dumps(d))
        return
    print(f"{dataset_name(args, ds)} test images: {basic['images']}, training images: {n_train} "
          f"(weights {args.weights})")
    print(format_table(basic, st))
    print(text)
    for f in files:
        print(f"wrote {f}")


def cmd_bench(args):
    """Golden datapath on the full test set (one BLAS thread), then a co-simulation of --cosim-n
    images: one JSON object."""
    from golden import weights
    from golden.blas import limit_blas_threads
    from golden.datapath import Datapath

    pinned = limit_blas_threads(1)   # the golden figure is single-thread: parallelism belongs to processes
    net, ds = _net_dataset(args)
    _insitu_only(net, f"mcnn {args.cmd}")
    if args.cosim_n:
        _cnn_only(args, net, "--cosim-n (the co-simulation benchmark)")
    w = weights.load(args.weights, net)
    x = ds.test_images[:args.n]
    dp = Datapath(w.int_w, w.q, net.layers, net.mapping())
    dp.run(x[:100])  # warm-up
    t0 = time.perf_counter()
    res = dp.run(x)
    dt = time.perf_counter() - t0
    out = {"images": len(x), "golden_images_per_s": round(len(x) / dt, 1),
           "golden_blas_threads": 1 if pinned else None,
           "seconds_integer_10k": round(dt * 10000 / len(x), 3),
           "integer_accuracy": float((res.classes == ds.test_labels[:args.n]).mean() * 100)}
    if args.cosim_n:
        out.update(_cosim().bench(w, args.weights, args.data, args.cosim_n, args.workers, args.scheduler))
    print(json.dumps(out))


def cmd_sim(args):
    from golden import weights
    if args.board is not None:      # the in-situ trained board's forward pass (tb/cosim/board_main.py)
        _cosim()
        from tb.cosim.board_main import sim_cli
        return sim_cli(args)
    net, _ = _net_dataset(args)     # checked here, before the co-simulation (which loads it again) touches any file
    if net.name == "elm-board":     # the board ELM: its own session (tb/cosim/elm_main.py)
        return _cosim("elm_main").cli(args)
    if args.mode is not None and not (net.name == "li2018" and args.device == "li2018"):
        raise InputError("--mode: only with --network li2018 --device li2018 (in-situ training in fabric)")
    if net.name == "li2018" and args.device == "li2018":       # in-situ training in fabric
        if args.replicated or (args.workers or 1) > 1 or args.scheduler or args.waves:
            raise InputError("--network li2018 --device li2018: no --replicated, sharding or --waves")
        return _cosim().sim_insitu(args)
    for bad, what in ((args.device != "ideal", f"--device {args.device}"), (args.replicated, "--replicated"),
                      ((args.workers or 1) > 1 or args.scheduler, "a sharded co-simulation (--workers, --scheduler)")):
        if bad:
            _cnn_only(args, net, f"{what} (other networks: --device ideal)")
    weights.load(args.weights, net)             # these two as well, before the waveform warning:
    check_outputs([args.report], args.force)    # a refusal is the one line on stderr
    images = args.n if args.device == "ideal" else args.n * (2 if args.iterations else 1) + 100 * args.iterations
    if args.waves and images > 10:       # + the transfer's write-verify on a device preset
        print(f"mcnn sim: a waveform of {images} images is large (every signal, about 90 MB of VCD per image); "
              "e.g. --n 2 --device ideal (or --iterations 0) is usually enough", file=sys.stderr)
    return _cosim().sim(args)


def cmd_board(args):
    from sw.board import COSIM_DEVICES, print_result, run
    cosim = _cosim().board if not args.port and args.device in COSIM_DEVICES else None
    print_result(run(args, cosim), args.json)


def _cosim(name: str = "commands"):
    """tb/cosim/commands.py, the co-simulation behind `mcnn sim`, `bench` and `board --sim --device
    cosim|controller` (or another tb/cosim module, e.g. elm_main): the one place where sw/ reaches tb/."""
    import importlib
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return importlib.import_module(f"tb.cosim.{name}")
    except ImportError as e:
        raise InputError(f"the co-simulation needs the repository's tb/ package: {e}") from e


def _device_presets():
    from golden.devices import PRESETS
    return sorted(PRESETS)


def _common(p, weights=True):
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="directory with the four standard IDX files (default: data/mnist)")
    p.add_argument("--name", default=None, help="the dataset's name in reports (default: the --data directory's name)")
    if weights:
        _network(p)
        p.add_argument("--weights", type=Path, default=None,
                       help="weights stem (<stem>.npz + <stem>.json; dots kept; default weights/<network>)")


def _network(p):
    from golden.networks import NETWORKS
    p.add_argument("--network", choices=sorted(NETWORKS), default="yao2020",
                   help="the network (golden/networks.py): yao2020, the CNN on 28x28 images (default); li2018, "
                        "the 64-54-10 MLP on 8x8 images (the dataset's 28x28 images cropped and area-averaged); "
                        "elm-board, Bennett's ELM on the board (train-insitu and sim only)")


def _workers(p):
    """--workers / --scheduler of `mcnn sim` and `mcnn bench` (sharded co-simulation on Dask)."""
    p.add_argument("--workers", type=int_range(1, 1024), default=None,
                   help="split the test images over K Dask worker processes, each with its own Verilator "
                        "model (not with read noise; default 1: one process; with --scheduler: its workers)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help="run the shards on this running `dask scheduler` instead of a local cluster")


def _force(p, what):
    p.add_argument("--force", action="store_true", help=f"replace {what} if it exists (else: error, nothing written)")


def _train_parser(sub):
    p = sub.add_parser("train", help="ex-situ training + 15-level quantisation (NumPy)")
    _common(p, weights=False)
    _network(p)
    p.add_argument("--out", type=Path, default=None,
                   help="output stem: <out>.npz + <out>.json (default weights/<network>, the committed weights)")
    _force(p, "existing <out>.npz / .json")
    p.add_argument("--seed", type=SEED, default=2020)
    p.add_argument("--epochs", type=int_range(0, 1000), default=24, help="float epochs (0 only with --init)")
    p.add_argument("--qat-epochs", type=int_range(0, 1000), default=3)
    p.add_argument("--shift", type=int_range(0, 8), default=None,
                   help="random-shift augmentation, pixels (default 2 on 28x28 inputs, 0 on smaller ones)")
    p.add_argument("--device", choices=[d for d in _device_presets() if d != "ideal"], default=None,
                   help="noise-aware QAT: inject this preset's programming error (measured on its model) into "
                        "every weight of every QAT forward pass (default: plain training)")
    p.add_argument("--noise-model", choices=["levels", "gaussian"], default="levels",
                   help="with --device: 'levels' draws each device's error from the preset's error measured per "
                        "level on its model, stuck cells at its rates (default); 'gaussian': N(0, sigma^2) per weight")
    p.add_argument("--qat-lr", type=POSITIVE, default=2e-4, help="QAT learning rate (Adam, cosine; default 2e-4)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from the float weights of this stem (e.g. weights/yao2020; not overwritten)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_train)


def _eval_parser(sub):
    p = sub.add_parser("eval", help="accuracy table beside Yao 2020: float, 15-level, integer datapath; "
                                    "--stages all: + transfer, hybrid training, replicated groups on the device model")
    _common(p)
    p.add_argument("--n", type=int_range(1, TEST_SET_MAX), default=None, help="first N test images (default: all)")
    p.add_argument("--adc-bits", type=int_range(1, 16), default=8)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--stages", choices=("ideal", "all"), default="ideal",
                   help="ideal: float / 15-level / integer datapath (default); all: + weight transfer through "
                        "the device model, hybrid training, replicated convolver groups, over --seeds device seeds")
    p.add_argument("--seeds", type=int_range(1, 1000), default=5,
                   help="number of device seeds for --stages all (default 5)")
    p.add_argument("--seed0", type=SEED, default=0, help="first device seed (default 0)")
    p.add_argument("--device", choices=_device_presets(), default="yao2020", help="device preset (default yao2020)")
    p.add_argument("--mode", choices=("closed", "open"), default="closed",
                   help="hybrid-training programming: closed-loop write-verify (default) or open-loop pulses")
    p.add_argument("--eta", type=POSITIVE, default=None,
                   help="hybrid-training learning rate (default: chosen per board on the validation split, "
                        "golden.hybrid.choose_step)")
    p.add_argument("--no-guard", action="store_true", help="hybrid training without the divergence guard")
    p.add_argument("--iterations", type=int_range(1), default=None,
                   help="hybrid-training iterations (default: one epoch of --n-train)")
    p.add_argument("--rep-iterations", type=int_range(1), default=300,
                   help="batches of the replicated-group training (default 300 = 100 rounds x 3 groups)")
    p.add_argument("--rep-eta", type=POSITIVE, default=None, help="learning rate of the replicated-group training "
                                                               "(default: the board's chosen main step)")
    p.add_argument("--rep-update", choices=("round", "batch"), default="round",
                   help="replicated groups: one programming step per round of 3 batches (default) or per batch")
    p.add_argument("--rep-clip", type=int_range(0, 255), default=None,
                   help="replicated groups: update clipping in 20 nA codes (default 30; 0 = off)")
    p.add_argument("--n-train", type=int_range(1, 60_000), default=None,
                   help="training images (default: the training split, MNIST the first 55,000; golden.idx.split_sizes)")
    p.add_argument("--record-every", type=int_range(1), default=50,
                   help="record test/training error every N iterations")
    p.add_argument("--read-noise", type=float_range(0.0, 1.0), default=0.0,
                   help="relative read noise per cell and read, 0..1 (default 0)")
    p.add_argument("--age-hours", type=NON_NEGATIVE, default=0.0,
                   help="age the hybrid-trained board (drift), re-evaluate")
    p.add_argument("--jobs", type=int_range(1, 256), default=2, help="processes for the device seeds (default 2)")
    p.add_argument("--plots", type=Path, default=None,
                   help="directory for PNG plots: energy breakdown, confusion matrix; "
                        "--stages all also Fig. 1c, 3c-e, 3f, ED 8")
    p.add_argument("--energy-iterations", type=int_range(0, 10_000), default=10,
                   help="hybrid iterations measured for the epoch's programming energy (default 10; 0: skip)")
    _force(p, "existing plot files")
    p.set_defaults(fn=cmd_eval)


def _sim_parser(sub):
    p = sub.add_parser("sim", help="co-simulate the controller RTL with 8 behavioural PEs (the main job)")
    _common(p)
    p.add_argument("--n", type=int_range(1, TEST_SET_MAX), default=1000,
                   help="test images (default 1000; 10000 for all)")
    p.add_argument("--device", choices=_device_presets(), default="yao2020",
                   help="device preset of the PEs (golden/devices.py), or 'ideal' (exact target levels)")
    p.add_argument("--seed", type=SEED, default=0, help="device seed of the board")
    p.add_argument("--iterations", type=int_range(0, 10_000), default=10,
                   help="hybrid-training iterations (batches of 100; 0: none); li2018 in situ: batches of --batch")
    p.add_argument("--no-guard", action="store_true", help="hybrid training without the divergence guard")
    p.add_argument("--batch", type=int_range(1, 128), default=None,
                   help="in-situ training in fabric (--network li2018 --device li2018, --network elm-board): images "
                        "per batch (default 100; elm-board 10)")
    p.add_argument("--golden-train", action="store_true",
                   help="--network elm-board: golden trains the output layer (--iterations sign-WH batches), "
                        "then the RTL runs only the test images (fast: e.g. an epoch, 5500)")
    p.add_argument("--eta", type=float_range(0.0, 10.0, lo_open=True), default=0.08,
                   help="its step (default 0.08: golden's validation choice in both regimes, seed 0; docs/insitu.md)")
    p.add_argument("--mode", choices=("open", "closed"), default=None,
                   help="its programming regime, as `mcnn train-insitu --mode`: open (Li's blind pulses, the default) "
                        "or closed (Yao's threshold rule + write-verify)")
    p.add_argument("--report", type=Path, default=Path("build/sim_report.json"),
                   help="JSON report (default build/sim_report.json; an existing one needs --force)")
    _force(p, "an existing --report")
    p.add_argument("--waves", action="store_true",
                   help="write a waveform (FST; VCD where the FST writer's lz4.h is missing; slow)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--board", type=Path, default=None, metavar="FILE",
                   help="an in-situ trained board (`mcnn train-insitu --save-board FILE`): the forward pass of "
                        "its --n test images on the RTL, bit-exact against golden (its device and network; "
                        "--device, --seed, --iterations, --weights do not apply)")
    _workers(p)
    p.add_argument("--replicated", action="store_true",
                   help="the replicated-convolver controller (rtl/replicated.py): three groups, shared FC; "
                        "--iterations batches of replicated training (rounds of 3, update per round, clip 30 codes)")
    p.set_defaults(fn=cmd_sim)


def cmd_train_insitu(args):
    from golden.blas import limit_blas_threads
    from golden.insitu_run import run_cli
    limit_blas_threads(1)
    for f in run_cli(args):
        print(f"wrote {f}")


def _train_insitu_parser(sub):
    from golden.insitu_run import STUCK_GRID
    from golden.networks import NETWORKS
    from sw.argtypes import PROBABILITY
    p = sub.add_parser("train-insitu", help="in-situ training of a dense network on the device model, backprop "
                                            "included (Li 2018 Fig. 4a/4b; golden model)")
    _common(p, weights=False)
    p.add_argument("--network", choices=sorted(NETWORKS) + list(BENNETT), default="li2018",
                   help="elm, mlp-sign: Bennett 2019's learners, with their own options (docs/bennett.md)")
    p.add_argument("--device", choices=[d for d in _device_presets() if d != "ideal"], default="li2018")
    p.add_argument("--mode", choices=("open", "closed"), nargs="+", default=["open"],
                   help="programming: open-loop identical pulses (Li, default) and/or closed-loop write-verify (Yao)")
    p.add_argument("--epochs", type=int_range(1, 100), default=1, help="training epochs of every run (default 1)")
    p.add_argument("--seeds", type=SEED, nargs="+", default=[0, 1, 2, 3, 4], help="device seeds (default 0..4)")
    p.add_argument("--stuck-grid", type=PROBABILITY, nargs="*", default=list(STUCK_GRID),
                   help="stuck-OFF fractions of Fig. 4b (default 0 .. 0.5; none: skip Fig. 4b)")
    p.add_argument("--fig4b-epochs", type=int_range(1, 100), default=None, help="epochs of Fig. 4b (default --epochs)")
    p.add_argument("--parts", choices=("fig4a", "fig4b"), nargs="+", default=["fig4a", "fig4b"],
                   help="Fig. 4a (+ defect-free) per mode and/or Fig. 4b (first mode, + float MLP, ex situ)")
    p.add_argument("--out", type=Path, required=True, help="output directory: insitu.json + the two plots")
    p.add_argument("--save-board", type=Path, default=None, metavar="FILE",
                   help="write the trained board of Fig. 4a's first run (first mode, first seed) to FILE (.npz: "
                        "conductances, device state, network, scales; for `mcnn sim --board FILE`)")
    _force(p, "the report and plots in --out (and --save-board FILE)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_train_insitu)


def _parser():
    ap = Parser(prog="mcnn", description="Open digital periphery for memristor CNN accelerators")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _train_parser(sub)
    _eval_parser(sub)
    _sim_parser(sub)
    _train_insitu_parser(sub)
    p = sub.add_parser("bench", help="benchmarks, one JSON object")
    _common(p)
    p.add_argument("--n", type=int_range(1, TEST_SET_MAX), default=10000, help="images for the golden datapath")
    p.add_argument("--cosim-n", type=int_range(0, TEST_SET_MAX), default=300,
                   help="images for the RTL co-simulation (0: skip)")
    _workers(p)
    p.set_defaults(fn=cmd_bench)

    from sw.board import add_arguments as board_arguments
    p = sub.add_parser("board", help="the board or its simulation over the UART link: identify, status, counters, "
                                     "program, read, infer, train, fault injection")
    board_arguments(p)
    p.set_defaults(fn=cmd_board)

    from sw import synth
    synth.add_parser(sub)
    from sw import sweep
    sweep.add_parser(sub)
    return ap


def _user_errors() -> tuple:
    """What a user's input or environment causes (one-line error, exit 2); anything else is a bug
    and keeps its traceback. OSError covers files and serial ports (serial.SerialException)."""
    errs = [InputError, OSError]
    try:
        import termios                     # an unplugged serial port: termios.error, not an OSError
        errs.append(termios.error)
    except ImportError:
        pass
    from sw.link import LinkError
    return (*errs, LinkError)


def _message(e: BaseException, args) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    if type(e).__module__ == "termios" and len(e.args) == 2:     # termios.error(errno, text)
        return f"{getattr(args, 'port', None) or 'serial port'}: {e.args[1]} (termios error {e.args[0]})"
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if isinstance(e, InputError) else f"{msg} ({type(e).__name__})"


BENNETT = ("elm", "mlp-sign")     # train-insitu networks of golden/elm.py (its own options)


def _bennett(argv) -> bool:
    """`mcnn train-insitu --network elm|mlp-sign ...`: Bennett 2019's NoProp/ELM and sign-backprop
    MLPs, run by golden.elm.main with its own options."""
    if not argv or argv[0] != "train-insitu":
        return False
    import argparse
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--network")
    return ap.parse_known_args(argv[1:])[0].network in BENNETT


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _bennett(argv):
        from golden import elm
        return elm.main(argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:                # argparse: --help (0) or a bad argument (2, one line printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        rc = args.fn(args)
    except _user_errors() as e:
        print(f"mcnn {args.cmd}: error: {_message(e, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mcnn {args.cmd}: interrupted", file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
