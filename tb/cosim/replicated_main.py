"""cocotb session of the replicated-convolver co-simulation (tb/cosim/replicated_cosim.py): the
ReplicatedController (rtl/replicated.py) and 8 behavioural PEs, every stage against golden/.

  board      a device-model board (golden.crossbar.Crossbar, preset `device`, seed) with the three
             groups' conv copies and the shared FC written by golden's closed-loop transfer
             (golden.transfer over golden.replicate.group_mappings()): the groups hold different
             cells, so a mis-routed group shows; the cell currents are loaded into the PE models
  inference  N test images dealt round robin (image k -> group k mod 3): every result must come
             out in image order with its group tag and equal, bit for bit, the golden datapath of
             that image's group (logits, class, p, delta); result spacing measured
  single     `single` images all routed to G1 (route = 1): the single-network pipeline, for the
             throughput comparison
  training   `rounds` rounds of golden.hybrid's replicated training, update per round, clipping at
             `clip` codes (golden's default: `--rep-update round`, clip 30): per round one batch of
             `batch` training images per group, interleaved image by image; the shared update engine
             sums equation 1 over the round and clips, the pair programmer and write-verify program the
             shared FC; golden: HybridTrainer.step on a copy of the board; conductances compared after
             each round; then `batch_steps` per-batch updates without clipping (Yao's pipeline,
             `--rep-update batch --rep-clip 0`): batch i through group i mod 3 alone (route = that
             group), one programming pass per batch
  after      the inference images again on the trained board
"""
import time

import cocotb
import cocotb.triggers
import numpy as np

from tb import harness
from tb.cosim import sim_top


async def _infer(dut, ctrl, x, y):
    return await sim_top.infer(dut, ctrl.result_layout, x, y)


def _golden_groups(maps, w, array, x, y):
    """{group: (Result, delta)} of every image through every group's golden datapath."""
    from golden.datapath import Datapath, delta
    out = {}
    for g, mp in maps.items():
        r = Datapath(w.int_w, w.q, mapping=mp, array=array).run(x, keep=True)
        out[g] = (r, delta(r.p, y))
    return out


def _check(res, gold, groups, expect_group):
    """Mismatches of each result against its image's group; and how many images the other
    groups' golden outputs would have failed (the board's groups are distinguishable)."""
    bad, wrong_group, distinct = [], [], 0
    for i, r in enumerate(res):
        g = expect_group(i)
        if r["group"] != groups.index(g):
            wrong_group.append(i)
        gr, gd = gold[g]
        if not sim_top.same_result(r, (gr.logits[i], gr.classes[i], gr.p[i], gd[i])):
            bad.append(i)
        others = [h for h in groups if h != g]
        if all(not np.array_equal(gold[h][0].logits[i], gr.logits[i]) for h in others):
            distinct += 1
    return bad, wrong_group, distinct


@cocotb.test()
async def session(dut):
    p = harness.params()
    report = {"stages": {}}
    await sim_top.reported_session(_session, dut, p, report)


async def _session(dut, p, report):
    from golden import weights
    from golden.idx import load_dataset
    from golden.perf import bound_cycles_per_image
    from golden.replicate import group_mappings
    from tb.cosim.replicated_cosim import build_controller

    w = weights.load(p["weights"])
    ds = load_dataset(p["data"])
    n = p["n"]
    x, y = ds.test_images[:n], ds.test_labels[:n].astype(np.int64)
    ctrl = build_controller(w)
    maps = group_mappings()
    groups = list(maps)
    report.update({"images": n, "device": p["device"], "seed": p["seed"], "groups": groups})
    await harness.start_clock_and_reset(dut, start_clock=False)
    dut.train.value = 0
    dut.th_code.value = 15
    dut.route.value = 0

    xb, gold_xb = await _board(dut, p, w, maps, report)
    gold, period = await _replicated_inference(dut, ctrl, w, maps, xb, x, y, report)
    ns = p.get("single", 0)
    if ns:
        await _single_group(dut, ctrl, gold[groups[0]], x[:ns], y[:ns], period, report)
    bound = bound_cycles_per_image()
    report.update({"cycles_per_image": round(period, 1), "bound_cycles_per_image_single": bound["cycles"],
                   "replicated_over_single_bound": round(period / bound["cycles"], 4)})
    if p.get("rounds", 0):
        await _training(dut, p, w, ctrl, maps, ds, xb, gold_xb, report)
        await _inference_after_training(dut, ctrl, w, maps, xb, x, y, report)

    report["counters"] = {"slot_reads": int(dut.slot_reads.value), "lane_idle": int(dut.lane_idle.value),
                          "overrun": int(dut.overrun.value), "set_pulses": int(dut.set_pulses.value),
                          "reset_pulses": int(dut.reset_pulses.value), "verify_reads": int(dut.verify_reads.value)}


async def _board(dut, p, w, maps, report):
    """The device board: every group's conv copy and the shared FC by golden's closed-loop transfer,
    loaded into the PE models. -> (board, golden copy)."""
    from golden.crossbar import Crossbar
    from golden.transfer import transfer
    t0 = time.perf_counter()
    xb = Crossbar(p["device"], seed=p["seed"])
    tr = transfer(xb, maps, w.int_w)
    gold_xb = xb.copy()
    await sim_top.load_cells(dut, xb.i_units(), dut.clk)
    report["stages"]["board"] = {"cells": int(len(tr.plan.level)), "failed_cells": len(tr.failures),
                                 "seconds": round(time.perf_counter() - t0, 1)}
    return xb, gold_xb


async def _replicated_inference(dut, ctrl, w, maps, xb, x, y, report):
    """The test images dealt round robin to the groups, each against its group's golden datapath.
    -> (golden results per group, steady-state cycles between results)."""
    groups = list(maps)
    G, n = len(groups), len(x)
    gold = _golden_groups(maps, w, xb, x, y)
    res, t_inf = await _infer(dut, ctrl, x, y)
    bad, wrong_group, distinct = _check(res, gold, groups, lambda i: groups[i % G])
    ts = np.array([r["timestamp"] for r in res])
    steady = np.diff(ts[G - 1:]) if n > G else np.diff(ts)   # after the pipeline has filled
    period = float(steady.mean())
    st = {"bitexact_images": n - len(bad), "mismatched_images": len(bad), "mismatched_indices": bad[:20],
          "wrong_group_tags": len(wrong_group), "images_distinct_between_groups": distinct,
          "accuracy_rtl": float((np.array([r["cls"] for r in res]) == y).mean() * 100),
          "per_group_accuracy_rtl": {g: float(np.mean([res[i]["cls"] == y[i] for i in range(gi, n, G)]) * 100)
                                     for gi, g in enumerate(groups)},
          "accuracy_golden": float(np.mean([gold[groups[i % G]][0].classes[i] == y[i] for i in range(n)]) * 100),
          "per_group_accuracy_golden": {g: float((gold[g][0].classes[gi::G] == y[gi::G]).mean() * 100)
                                        for gi, g in enumerate(groups)},
          "cycles_per_image": round(period, 1), "cycles_per_image_first_to_last": round(float(np.diff(ts).mean()), 1),
          "cycles_first_image": int(res[0]["cycles"]), "cycles_each": [int(r["cycles"]) for r in res],
          "result_timestamps": ts.tolist(), "cosim_images_per_s": round(n / t_inf, 2),
          "fc_wait_cycles": int(dut.fc_wait.value),
          "overrun": int(dut.overrun.value)}
    report["stages"]["inference"] = st
    report.update({"bitexact_images": st["bitexact_images"], "mismatched_images": st["mismatched_images"]})
    assert not bad and not wrong_group, f"replicated inference differs from golden: {st}"
    return gold, period


async def _single_group(dut, ctrl, gold1, xs, ys, period, report):
    """The first images all routed to G1 (route = 1): the single-network pipeline, for the throughput
    comparison; gold1: G1's golden (results, delta)."""
    ns = len(xs)
    dut.route.value = 1
    res1, _ = await _infer(dut, ctrl, xs, ys)
    g1, d1 = gold1
    bad1 = [i for i, r in enumerate(res1) if r["group"] != 0 or not sim_top.same_result(
        r, (g1.logits[i], g1.classes[i], g1.p[i], d1[i]))]
    ts1 = np.array([r["timestamp"] for r in res1])
    single = float(np.diff(ts1).mean()) if ns > 1 else float(res1[0]["cycles"])
    report["stages"]["single_group"] = {"images": ns, "mismatched_images": len(bad1),
                                        "cycles_per_image": round(single, 1)}
    report["bitexact_images"] += ns - len(bad1)
    report["mismatched_images"] += len(bad1)
    report["speedup"] = round(single / period, 3)
    report["replicated_over_single"] = round(period / single, 4)
    dut.route.value = 0
    assert not bad1, f"single-group inference differs from golden: {bad1}"


async def _training(dut, p, w, ctrl, maps, ds, xb, gold_xb, report):
    """Replicated training against golden.hybrid.HybridTrainer on the copy: `rounds` rounds with one
    update per round (clipped), then `batch_steps` per-batch updates without clipping."""
    from golden.hybrid import REP_CLIP_CODE, HybridConfig, HybridTrainer
    from golden.update import eta_params
    groups = list(maps)
    step = _step(p, w, maps[groups[0]], ds, gold_xb)
    eta = step["eta"]
    eta_m, eta_sh = eta_params(eta, w.q)
    dut.eta_m.value, dut.eta_sh.value = eta_m, eta_sh
    backend = sim_top.CrossbarBackend(xb, ctrl)
    clip = p.get("clip", REP_CLIP_CODE)
    dut.clip_code.value = clip
    trainer = HybridTrainer(gold_xb, maps[groups[0]], w.q, HybridConfig(eta=eta, clip_code=clip or None))
    rng = np.random.default_rng(p["seed"] + 11)   # one stream for the rounds, then the batches
    await _training_rounds(dut, p, w, ctrl, maps, ds, xb, gold_xb, backend, trainer, rng, clip, report)
    report["stages"]["training"]["step"] = step
    dut.clip_code.value = 0
    trainer.cfg.clip_code = None
    await _training_batches(dut, p, w, ctrl, maps, ds, xb, gold_xb, backend, trainer, rng, report)


def _step(p, w, mapping, ds, gold_xb) -> dict:
    """The shared FC's step: p["eta"] if given, else the board's, chosen on the data by
    golden.hybrid.choose_step for the rounds' batches (tb.cosim.sim_main.run_step, as `mcnn sim`)."""
    from golden.hybrid import validation_subset
    from tb.cosim.sim_main import run_step
    iters = max(1, p.get("rounds", 0) * 3)
    return run_step(p, w, mapping, ds, gold_xb, ds.split[0], validation_subset(len(ds.train_images)), iters)[0]


async def _training_rounds(dut, p, w, ctrl, maps, ds, xb, gold_xb, backend, trainer, rng, clip, report):
    """Per round one batch per group, interleaved image by image (image k -> group k mod 3); the
    shared update engine sums equation 1 over the round and clips."""
    from golden import cnn
    from golden.datapath import delta, softmax_fixed
    from golden.hybrid import fc_inputs, fc_logits
    from golden.update import accumulate, weight_update
    groups = list(maps)
    G = len(groups)
    rounds, B = p.get("rounds", 0), p.get("batch", 6)
    trace = []
    fc = cnn.weight_layers()[-1].name
    for it in range(rounds):
        idx = rng.choice(ds.split[0], size=(G, B), replace=False)   # batch g of this round -> group g
        order = idx.T.reshape(-1)                             # interleaved: image k -> group k mod 3
        xt, yt = ds.train_images[order], ds.train_labels[order].astype(np.int64)
        gg = _golden_groups(maps, w, gold_xb, xt, yt)
        parts = [(fc_inputs(gold_xb, w.int_w, w.q, maps[g], ds.train_images[idx[gi]]),
                  ds.train_labels[idx[gi]].astype(np.int64)) for gi, g in enumerate(groups)]
        dut.train.value = 1
        res, _ = await _infer(dut, ctrl, xt, yt)
        bad_fw, wg, _ = _check(res, gg, groups, lambda i: groups[i % G])
        t0 = time.perf_counter()
        pres = await sim_top.finish_batch(dut, backend)
        t_prog = time.perf_counter() - t0
        c0 = trainer.prog.stats.cells
        acc = sum(accumulate(vb, delta(softmax_fixed(fc_logits(gold_xb, trainer.fc_groups, vb), trainer.sm_m,
                                                     trainer.sm_sh), yb)) for vb, yb in parts)
        mx = int(np.abs(weight_update(acc, trainer.m, trainer.sh)).max())   # > clip: clipping engaged
        ncmd, _ = trainer.step(parts)
        same = bool(np.array_equal(xb.g, gold_xb.g))
        trace.append({"round": it + 1, "images": G * B, "max_abs_update": mx, "commands_golden": ncmd,
                      "cells_programmed": len(pres),
                      "cells_programmed_golden": trainer.prog.stats.cells - c0, "forward_mismatches": len(bad_fw),
                      "wrong_group_tags": len(wg), "conductances_equal_golden": same,
                      "programming_seconds": round(t_prog, 1)})
        assert not bad_fw and not wg and same, f"replicated training round {it + 1} differs: {trace[-1]}"
    report["stages"]["training"] = {"rounds": rounds, "batch_per_group": B, "eta": trainer.cfg.eta, "update": "round",
                                    "clip": clip, "fc_layer": fc, "trace": trace}


async def _training_batches(dut, p, w, ctrl, maps, ds, xb, gold_xb, backend, trainer, rng, report):
    """Per-batch updates (golden `--rep-update batch`): batch i through group i mod 3 alone (route =
    that group), one programming pass per batch."""
    from golden.hybrid import fc_inputs
    groups = list(maps)
    G, B = len(groups), p.get("batch", 6)
    btrace = []
    for it in range(p.get("batch_steps", 0)):
        gi = it % G
        g = groups[gi]
        ix = rng.choice(ds.split[0], size=B, replace=False)
        xt, yt = ds.train_images[ix], ds.train_labels[ix].astype(np.int64)
        gg = _golden_groups({g: maps[g]}, w, gold_xb, xt, yt)
        v = fc_inputs(gold_xb, w.int_w, w.q, maps[g], xt)
        dut.route.value = gi + 1
        dut.train.value = 1
        res, _ = await _infer(dut, ctrl, xt, yt)
        bad_fw, wg, _ = _check(res, {h: gg[g] for h in groups}, groups, lambda i, g=g: g)
        pres = await sim_top.finish_batch(dut, backend)
        c0 = trainer.prog.stats.cells
        ncmd, _ = trainer.step(v, yt)
        same = bool(np.array_equal(xb.g, gold_xb.g))
        btrace.append({"batch": it + 1, "group": g, "images": B, "commands_golden": ncmd,
                       "cells_programmed": len(pres), "cells_programmed_golden": trainer.prog.stats.cells - c0,
                       "forward_mismatches": len(bad_fw), "wrong_group_tags": len(wg),
                       "conductances_equal_golden": same})
        assert not bad_fw and not wg and same, f"per-batch training step {it + 1} differs: {btrace[-1]}"
    dut.route.value = 0
    if btrace:
        report["stages"]["training_per_batch"] = {"batches": len(btrace), "update": "batch", "clip": 0,
                                                  "trace": btrace}


async def _inference_after_training(dut, ctrl, w, maps, xb, x, y, report):
    """The test images again, on the trained board."""
    groups = list(maps)
    G, n = len(groups), len(x)
    gold = _golden_groups(maps, w, xb, x, y)
    res, _ = await _infer(dut, ctrl, x, y)
    bad2, wg2, _ = _check(res, gold, groups, lambda i: groups[i % G])
    report["stages"]["inference_after_training"] = {
        "bitexact_images": n - len(bad2), "mismatched_images": len(bad2),
        "per_group_accuracy_rtl": {g: float(np.mean([res[i]["cls"] == y[i] for i in range(gi, n, G)]) * 100)
                                   for gi, g in enumerate(groups)}}
    report["bitexact_images"] += n - len(bad2)
    report["mismatched_images"] += len(bad2)
    assert not bad2 and not wg2, f"inference after training differs: {bad2}"
