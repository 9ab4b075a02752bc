"""`mcnn sim --network li2018 --board FILE`: the forward pass of an in-situ trained network on the RTL.

The board file (`mcnn train-insitu --save-board`, golden/insitu_board.py) rebuilds the golden
InsituTrainer of the trained board. The RTL is the co-simulation top of tb/cosim/insitu_main.py
(`insitu_top`: the generated li2018 controller with the in-situ scales, 8 behavioural PEs with the
SL ADC golden.insitu.SL_ADC), its PEs loaded with the trained board's cell currents by backdoor;
`train` off. Test images [lo, hi) of the dataset go back to back; every image's logits, class, p
and delta (against its label) must equal golden's: InsituTrainer.forward on the same board, the
softmax with its (M, sh), golden.datapath.delta. Report: accuracy (RTL, golden), bit-exact images,
cycles per image, images/s of the co-simulation and of golden.

Sharded (`run_sharded`): contiguous shards of the test images, each a Dask task running its own
session on the same cached Verilator build; the board has no read noise (checked), so a shard's
results do not depend on the split. The shards' counts add up (`merge`).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import cocotb
import numpy as np

from tb import harness
from tb.cosim import sim_top


def golden_results(t, x, y, chunk: int = 2000):
    """Golden (logits, classes, p, delta) of the network's u8 input images x (after its transform,
    as the RTL gets them) with labels y on trainer t."""
    from golden import cnn
    from golden.datapath import argmax, delta, softmax_fixed
    flat = cnn.flatten_chw(np.asarray(x).reshape((len(x),) + tuple(t.net.input_shape))).astype(np.int64)
    logits = t.logits(flat, chunk)
    p = softmax_fixed(logits, t.sm_m, t.sm_sh)
    return logits, argmax(logits), p, delta(p, y)


def dataset_images(t, data, lo, hi):
    """The dataset's test images [lo, hi) through the network's input transform, and their labels."""
    from golden.idx import load_dataset
    ds = load_dataset(data, image_shape=t.net.source_shape, n_classes=t.net.n_classes)
    return t.net.prepare(ds.test_images[lo:hi]), ds.test_labels[lo:hi].astype(np.int64)


@cocotb.test()
async def session(dut):
    p = harness.params()
    report = {"board": p["board"], "network": None, "images": 0}
    await sim_top.reported_session(_session, dut, p, report)


async def _session(dut, p, report):
    from golden.insitu_board import load_board
    from tb.cosim.insitu_main import insitu_controller
    t = load_board(p["board"])
    lo, hi = p.get("shard") or (0, p["n"])
    x, y = dataset_images(t, p["data"], lo, hi)
    ctrl = insitu_controller(t)
    report.update({"network": t.net.name, "device": t.xb.p.name, "seed": t.xb.seed, "images": len(x),
                   "board_iterations": t.it, "board_info": getattr(t, "board_info", {})})
    if p.get("shard"):
        report["shard"] = {"start": lo, "stop": hi}
    await harness.start_clock_and_reset(dut, start_clock=False)
    dut.train.value = 0
    await sim_top.load_cells(dut, t.xb.i_units(), dut.clk)
    t0 = time.perf_counter()
    g = golden_results(t, x, y)
    t_golden = time.perf_counter() - t0
    t1 = time.time()
    res, t_inf = await sim_top.infer(dut, ctrl.result_layout, x, y, "inference (RTL, trained board)",
                                     p.get("progress", False))
    bad = [i for i, r in enumerate(res) if not sim_top.same_result(r, tuple(a[i] for a in g))]
    cls = np.array([r["cls"] for r in res])
    ts = [r["timestamp"] for r in res]
    report.update({
        "correct_rtl": int((cls == y).sum()), "correct_golden": int((g[1] == y).sum()),
        "bitexact_images": len(x) - len(bad), "mismatched_images": len(bad),
        "mismatched_indices": [lo + i for i in bad[:20]],
        "span_cycles": ts[-1] - ts[0], "intervals": len(ts) - 1, "cycles_first_image": int(res[0]["cycles"]),
        "seconds_cosim": round(t_inf, 3), "t_start": t1, "t_end": t1 + t_inf, "seconds_golden": round(t_golden, 3),
        "overrun": int(dut.overrun.value)})
    _rates(report)
    assert not bad, f"{len(bad)} images differ from golden: {report['mismatched_indices']}"


def _rates(r: dict):
    """Accuracy, cycles per image and images/s from the counts (one session or merged shards)."""
    n = r["images"]
    r["accuracy_rtl"] = r["correct_rtl"] / n * 100
    r["accuracy_golden"] = r["correct_golden"] / n * 100
    r["cycles_per_image"] = round(r["span_cycles"] / r["intervals"], 2) if r["intervals"] else float(
        r["cycles_first_image"])
    r["cosim_images_per_s"] = round(n / (r["t_end"] - r["t_start"]), 2)
    r["golden_images_per_s"] = round(n / r["seconds_golden"], 1) if r["seconds_golden"] else None


def run(params, log_to_terminal=False):
    """One session (params: board, data, n, report; optional shard [lo, hi], progress) on the cached
    build of insitu_main's top (the in-situ training co-simulation's: no build of its own). No
    profile-guided build: 10k images take ~30 s of simulation, less than a second compile."""
    from golden.insitu_board import load_board
    from tb.cosim.insitu_main import insitu_top
    return harness.run_block(insitu_top(load_board(params["board"])), "mcnn_insitu", "tb.cosim.board_main", params,
                             extra_sources=sim_top.SIM_SOURCES, ports_only=True, hdl_clock_ns=sim_top.CLOCK_NS,
                             log_to_terminal=log_to_terminal)


def run_shard(board: str, data: str, lo: int, hi: int) -> dict:
    """On a Dask worker: one session on test images [lo, hi); its report (with "error" if a check failed)."""
    from sw.cluster import pin_threads
    pin_threads()
    with tempfile.TemporaryDirectory() as td:
        rep = Path(td) / "report.json"
        try:
            run({"board": board, "data": data, "n": hi, "shard": [lo, hi], "report": str(rep)})
        except AssertionError:
            if not rep.exists():
                raise
        return json.loads(rep.read_text())


SUMS = ("images", "correct_rtl", "correct_golden", "bitexact_images", "mismatched_images", "span_cycles",
        "intervals", "seconds_golden", "seconds_cosim")


def merge(reps: list[dict]) -> dict:
    """One report from the shards' (any order): counts and sums added, rates from the sums, the
    co-simulation's images/s over the span from the first shard's start to the last one's end."""
    reps = sorted(reps, key=lambda r: r["shard"]["start"])
    out = {k: v for k, v in reps[0].items() if k not in SUMS + ("shard", "error")}
    out.update({k: sum(r.get(k, 0) for r in reps) for k in SUMS})
    out["mismatched_indices"] = [i for r in reps for i in r.get("mismatched_indices", [])][:20]
    out["t_start"], out["t_end"] = min(r["t_start"] for r in reps), max(r["t_end"] for r in reps)
    out["overrun"] = max(r.get("overrun", 0) for r in reps)
    out["shards"] = [{**r["shard"], "images_per_s": r.get("cosim_images_per_s")} for r in reps]
    errors = [f"images {r['shard']['start']}..{r['shard']['stop'] - 1}: {r['error']}" for r in reps if "error" in r]
    if errors:
        out["error"] = "; ".join(errors)
    if all("t_end" in r for r in reps):
        _rates(out)
    return out


def run_sharded(board: str, data: str, n: int, workers: int | None, scheduler: str | None) -> dict:
    """Test images [0, n) in shards over Dask (`workers` of a LocalCluster or the cluster at
    `scheduler`) -> the merged report with wall_seconds."""
    from distributed import as_completed

    from sw.cluster import client
    from tb.cosim.shard import _repo_on_path, shards
    board, data = str(Path(board).resolve()), str(Path(data).resolve())
    t0 = time.perf_counter()
    with _repo_on_path(), client(scheduler, workers) as c:
        parts = shards(n, workers or len(c.scheduler_info()["workers"]))
        futs = [c.submit(run_shard, board, data, lo, hi, pure=False) for lo, hi in parts]
        reps = [f.result() for f in as_completed(futs)]
    out = merge(reps)
    out["workers"] = len(parts)
    out["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def sim_cli(args) -> int:
    """`mcnn sim --board FILE`: checks (one line each, nothing written), the session (sharded with
    --workers > 1 or --scheduler), the report written atomically, a summary. Exit 0 when every
    image is bit-exact."""
    import sys

    from golden.fileio import InputError, check_outputs
    from golden.insitu_board import load_board
    from golden.idx import load_dataset
    from tb.cosim.commands import _run_reported
    t = load_board(args.board)
    if args.network != t.net.name:
        raise InputError(f"--board {args.board} holds the {t.net.name} network: give --network {t.net.name}")
    sharded = (args.workers or 1) > 1 or bool(args.scheduler)
    for bad, what in ((args.replicated, "--replicated"), (args.waves, "--waves")):
        if bad:
            raise InputError(f"{what}: not with --board")
    ds = load_dataset(args.data, image_shape=t.net.source_shape, n_classes=t.net.n_classes)
    if args.n > len(ds.test_images):
        raise InputError(f"--n {args.n}: the dataset in {args.data} has {len(ds.test_images)} test images")
    check_outputs([args.report], args.force)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.report.with_name(f".{args.report.name}.{os.getpid()}.partial")
    params = {"board": str(Path(args.board).resolve()), "data": str(Path(args.data).resolve()), "n": args.n,
              "report": str(tmp.resolve()), "progress": sys.stderr.isatty()}

    def go():
        if not sharded:
            t0 = time.perf_counter()
            run(params, log_to_terminal=not args.json)
            r = json.loads(tmp.read_text())
            r["wall_seconds"] = round(time.perf_counter() - t0, 2)
            tmp.write_text(json.dumps(r, indent=2))
            return
        r = run_sharded(params["board"], params["data"], args.n, args.workers, args.scheduler)
        tmp.write_text(json.dumps(r, indent=2))
        if "error" in r or r.get("mismatched_images", 1):
            raise AssertionError(r.get("error") or f"{r.get('mismatched_images')} images differ from golden")
    print("building the in-situ controller + 8 PE models for Verilator (cached after the first run) ...",
          flush=True, file=sys.stderr if args.json else sys.stdout)
    r = _run_reported(args, tmp, go)
    ok = r.get("mismatched_images", 1) == 0 and "error" not in r
    if args.json:
        print(json.dumps(r))
        return 0 if ok else 1
    _summary(r, args)
    return 0 if ok else 1


def _summary(r, args):
    print(f"\n{'':=<76}\nmcnn sim --board: the in-situ trained {r.get('network')} (device {r.get('device')}, "
          f"seed {r.get('seed')}) on the RTL, {r.get('images')} test images")
    if "accuracy_rtl" in r:
        print(f"  accuracy, RTL                {r['accuracy_rtl']:.2f} %   (golden {r['accuracy_golden']:.2f} %), "
              f"bit-exact {r['bitexact_images']}/{r['images']} (logits, class, p, delta)")
        print(f"  cycles per image             {r['cycles_per_image']:.1f}")
        print(f"  co-simulation                {r['cosim_images_per_s']:.1f} images/s, {r.get('wall_seconds')} s "
              f"wall{', %d shards' % r['workers'] if 'workers' in r else ''} "
              f"(golden {r['golden_images_per_s']} images/s)")
    if "error" in r:
        print(f"  ERROR: {r['error']}")
    print(f"  report                       {args.report}")
