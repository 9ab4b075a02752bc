"""Co-simulation of the board ELM (network elm-board, issue 16): `mcnn sim --network elm-board`.

By default the ELM trains in fabric: tb/cosim/insitu_loop_main.py with tb/cosim/insitu_top.py
SignLoopTop (the controller with the sign-WH error + rtl/sign_path.py SignPath), --iterations
batches of --batch (default 10) checked against golden per batch, then --n test images on the
RTL-trained board (`cli`). With --golden-train, this module's session (`run`): the controller the
generator makes for elm-board (rtl/controller.py: hidden layer H with the binary step requant
(510, 1), output layer O, InsituTrainer's softmax, error "sign") on 8 behavioural PEs (SimTop,
digitising with golden.insitu.SL_ADC) holding the cell currents of a golden li2018 board
(Crossbar.i_units, backdoor): the hidden layer's cells as fabricated (never programmed), the output
layer's as the golden in-situ training left them - `train_iterations` sign-WH batches of `batch`
MNIST training images (golden InsituTrainer on the board, seed `seed`). Then `n` MNIST test images
(elm-board's input transform) through the RTL; per image logits, class, softmax p and delta (the
sign error, golden.update.sign_error) against golden on the same board. Report: bit-exact images,
accuracy RTL and golden. Fast: a golden epoch (5500 batches) and 10k test images in minutes.
"""
from __future__ import annotations

import time

import cocotb
import numpy as np

from tb import harness
from tb.cosim import sim_top
from tb.cosim.insitu_main import insitu_controller

NETWORK = "elm-board"


def trainer(p):
    from tb.cosim.insitu_main import trainer
    return trainer({**p, "network": NETWORK, "batch": p.get("batch", 10)})


def elm_top(t):
    from golden.insitu import SL_ADC
    return sim_top.SimTop(insitu_controller(t), sim_top.adc_shift_for(SL_ADC))


def golden_results(t, x, y):
    """(logits, class, p, delta) of images x (board images, (N, 8, 8)) on t's board: delta the
    sign-WH error (the controller's error "sign")."""
    from golden.datapath import argmax, softmax_fixed
    from golden.update import sign_error
    logits = t.logits(x.reshape(len(x), -1).astype(np.int64))
    p = softmax_fixed(logits, t.sm_m, t.sm_sh)
    return logits, argmax(logits), p, sign_error(logits, y)


def train_golden(t, ds, iterations: int, seed: int) -> dict:
    """`iterations` sign-WH batches on MNIST's training split (golden), -> a summary."""
    from golden.hybrid import batch_order
    from golden.idx import split_sizes
    from golden.insitu import flat_inputs, train
    if not iterations:
        return {"iterations": 0}
    x, y = flat_inputs(t.net, ds.train_images), ds.train_labels.astype(np.int64)
    n_fit, _ = split_sizes(len(x))
    order = batch_order(n_fit, t.cfg.batch, iterations, seed=seed)
    tr = train(t, x, y, order)
    return {"iterations": iterations, "batch": t.cfg.batch, "images": int(iterations * t.cfg.batch),
            "commands": int(np.sum(tr.commands)), "pulses": int(np.sum(tr.pulses)),
            "seconds": round(tr.seconds_train, 1)}


@cocotb.test()
async def session(dut):
    p = harness.params()
    report = {"network": NETWORK, "device": p.get("device", "li2018"), "seed": p["seed"], "images": p["n"]}
    await sim_top.reported_session(_session, dut, p, report)


async def _session(dut, p, report):
    from golden.idx import load_dataset
    t = trainer(p)
    ctrl = insitu_controller(t)
    ds = load_dataset(p["data"])
    report["training"] = train_golden(t, ds, p.get("train_iterations", 0), p["seed"])
    n = min(p["n"], len(ds.test_images))
    x, y = t.net.prepare(ds.test_images[:n]), ds.test_labels[:n].astype(np.int64)
    await harness.start_clock_and_reset(dut, start_clock=False)
    dut.train.value = 0
    await sim_top.load_cells(dut, t.xb.i_units(), dut.clk)
    t0 = time.perf_counter()
    res, _ = await sim_top.infer(dut, ctrl.result_layout, x, y, "elm-board", p.get("progress", False))
    g = golden_results(t, x, y)
    bad = [i for i, r in enumerate(res) if not sim_top.same_result(r, tuple(a[i] for a in g))]
    h = t.forward(x.reshape(n, -1).astype(np.int64))[0][-1]
    report.update({
        "images": n, "bitexact_images": n - len(bad), "mismatched_images": len(bad), "first_mismatches": bad[:10],
        "accuracy_rtl": float((np.array([r["cls"] for r in res]) == y).mean() * 100),
        "accuracy_golden": float((g[1] == y).mean() * 100),
        "hidden_on_fraction": float((h == 255).mean()), "hidden_values": sorted({int(v) for v in np.unique(h)}),
        "seconds_rtl": round(time.perf_counter() - t0, 1)})
    assert not bad, f"{len(bad)} of {n} images differ from golden (first {bad[:5]})"


def run(params, log_to_terminal=False):
    """One session (params: seed, n, data, report; optional device, batch, train_iterations, progress)."""
    return harness.run_block(elm_top(trainer(params)), "mcnn_elm", "tb.cosim.elm_main", params,
                             extra_sources=sim_top.SIM_SOURCES, ports_only=True, hdl_clock_ns=sim_top.CLOCK_NS,
                             log_to_terminal=log_to_terminal)


def cli(args) -> int:
    """`mcnn sim --network elm-board` (sw/cli.py checked the dataset and --n): the board is li2018
    (its fresh cells are the projection; --device left at its default or li2018), --seed the board;
    --iterations sign-WH batches of --batch (default 10) trained in fabric (commands.sim_insitu),
    or with --golden-train by golden (one epoch: 5500), then the test images."""
    import json
    import sys
    import tempfile
    from pathlib import Path

    from golden.fileio import InputError, check_outputs, write_atomic
    for bad, what in ((args.device not in ("yao2020", "li2018"), f"--device {args.device}"),
                      (args.replicated, "--replicated"), ((args.workers or 1) > 1 or args.scheduler, "sharding"),
                      (args.waves, "--waves")):
        if bad:
            raise InputError(f"{what}: not available for --network {NETWORK} (the li2018 board, one session)")
    args.device = "li2018"
    if not args.golden_train:
        from tb.cosim.commands import sim_insitu
        return sim_insitu(args, NETWORK)
    check_outputs([args.report], args.force)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "report.json"
        params = {"seed": args.seed, "n": args.n, "train_iterations": args.iterations, "batch": args.batch or 10,
                  "data": str(Path(args.data)
                  .resolve()), "report": str(tmp), "progress": sys.stderr.isatty() and not args.json}
        print(f"mcnn sim: {NETWORK}, {args.iterations} golden sign-WH batches, then {args.n} test images through "
              "the controller RTL (building it for Verilator: minutes the first time) ...",
              file=sys.stderr if args.json else sys.stdout, flush=True)
        try:
            run(params, log_to_terminal=not args.json)
        except AssertionError as e:
            if not tmp.exists():
                raise
            print(f"mcnn sim: {e}", file=sys.stderr)
        r = json.loads(tmp.read_text())
    args.report.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.report, json.dumps(r, indent=2), force=args.force)
    ok = r.get("mismatched_images", 1) == 0 and "error" not in r
    if args.json:
        print(json.dumps(r))
    elif "error" not in r:
        print(f"mcnn sim {NETWORK}: accuracy RTL {r['accuracy_rtl']:.2f} % (golden {r['accuracy_golden']:.2f} %), "
              f"bit-exact {r['bitexact_images']}/{r['images']} (logits, class, p, delta); output layer after "
              f"{r['training']['iterations']} sign-WH batches; report {args.report}")
    return 0 if ok else 1
