"""cocotb session behind `make sim` / `mcnn sim`: the controller RTL and 8 behavioural PEs.

Stages, each checked against the golden model run on an identical copy of the board:
  1. transfer  every mapped cell programmed through the RTL write-verify sequencer, the device
               physics (golden/crossbar.py) answering its reads and pulses: per-cell results and
               every programmed conductance must equal golden's closed loop on the copy;
  2. inference N test images through the RTL on the programmed cells (logits, class, p, delta);
  3. hybrid    training iterations in fabric (batch of 100 training images: V and delta feed the
               update engine, threshold rule, pair programmer, write-verify), against golden.update
               + golden.hybrid.PairProgrammer on the copy; conductances compared after each;
  4. inference again, after training.
With --device ideal, cells hold their exact target levels and stages 1 and 3 are skipped.
"""
import time

import cocotb
import cocotb.triggers
import numpy as np

from tb import harness
from tb.cosim import sim_top


async def _infer(dut, ctrl, x, y, desc, progress):
    return await sim_top.infer(dut, ctrl.result_layout, x, y, desc, progress)


def _golden(dp, x, y):
    from golden.datapath import delta
    g = dp.run(x, keep=True)
    return g, delta(g.p, y)


def _compare(res, g, d):
    return [i for i, r in enumerate(res) if not sim_top.same_result(r, (g.logits[i], g.classes[i], g.p[i], d[i]))]


@cocotb.test()
async def session(dut):
    p = harness.params()
    report = {"images": p["n"], "device": p.get("device", "ideal"), "stages": {}}
    await sim_top.reported_session(_session, dut, p, report)


async def _session(dut, p, report):
    from golden import weights
    from golden.datapath import Datapath
    from golden.idx import load_dataset
    from golden.mapping import build_mapping

    progress = p.get("progress", True)
    w = weights.load(p["weights"])
    ds = load_dataset(p["data"])
    n = min(p["n"], len(ds.test_images))
    x, y = ds.test_images[:n], ds.test_labels[:n].astype(np.int64)
    ctrl = sim_top.build_controller(w)
    mapping = build_mapping()
    report["images"] = n
    await harness.start_clock_and_reset(dut, start_clock=False)
    dut.train.value = 0
    dut.th_code.value = 15

    ideal = p.get("device", "ideal") == "ideal"
    xb = gold_xb = None
    if ideal:
        array = Datapath(w.int_w, w.q).array   # the golden model's ideal board: exact target levels
        await sim_top.load_cells(dut, array.i_units, dut.clk)
    else:
        xb, gold_xb = await _transfer(dut, p, w, ctrl, mapping, progress, report)
        array = xb
    await _inference(dut, ctrl, w, array, x, y, progress, report)
    iters = p.get("iterations", 0) if not ideal else 0
    if iters:
        await _hybrid(dut, p, w, ctrl, mapping, ds, xb, gold_xb, iters, report)
        await _inference_after_hybrid(dut, ctrl, w, xb, x, y, progress, report)
    _counters(dut, report, gold_xb)


async def _transfer(dut, p, w, ctrl, mapping, progress, report):
    """Stage 1: every mapped cell through the RTL write-verify sequencer, the device physics of a
    Crossbar answering; golden's closed loop on an identical copy. -> (board, golden copy)."""
    from tqdm import tqdm

    from golden.crossbar import Crossbar
    from golden.transfer import plan
    from golden.write_verify import level_target_code
    xb = Crossbar(p["device"], seed=p.get("seed", 0))
    gold_xb = xb.copy()
    await sim_top.load_cells(dut, xb.i_units(), dut.clk)
    pl = plan(mapping, w.int_w)
    cells = [(int(a), int(b), int(c), level_target_code(int(lv)))
             for a, b, c, lv in zip(pl.pe, pl.row, pl.bl, pl.level)]
    bar = tqdm(total=len(cells), desc="transfer (RTL write-verify)", unit="cell", disable=not progress)
    t0 = time.perf_counter()
    res = await sim_top.serve_programming(dut, dut.clk, sim_top.CrossbarBackend(xb, ctrl), cells,
                                          on_result=lambda r: bar.update(1))
    bar.close()
    t_tr = time.perf_counter() - t0
    gres = [gold_xb.program_cell(*c) for c in cells]
    bad = [i for i, (r, g) in enumerate(zip(res, gres))
           if (bool(r["ok"]), r["pulses"], r["final_code"]) != (g.ok, g.pulses, g.final_code)]
    same_g = bool(np.array_equal(xb.g, gold_xb.g))
    report["stages"]["transfer"] = {
        "cells": len(cells), "failed_cells": int(sum(not r["ok"] for r in res)),
        "pulses_mean": float(np.mean([r["pulses"] for r in res])),
        "pulses_max": int(max(r["pulses"] for r in res)),
        "cells_differing_from_golden": len(bad), "conductances_equal_golden": same_g,
        "seconds": round(t_tr, 1)}
    assert not bad and same_g, f"transfer differs from golden: {len(bad)} cells, conductances equal {same_g}"
    return xb, gold_xb


async def _inference(dut, ctrl, w, array, x, y, progress, report):
    """Stage 2: the test images through the RTL on the programmed cells, against golden; throughput."""
    from golden.datapath import Datapath
    from golden.perf import bound_cycles_per_image
    n = len(x)
    dp = Datapath(w.int_w, w.q, array=array)
    t0 = time.perf_counter()
    g, gd = _golden(dp, x, y)
    t_golden = time.perf_counter() - t0
    res, t_inf = await _infer(dut, ctrl, x, y, "inference (RTL)", progress)
    mism = _compare(res, g, gd)
    cls = np.array([r["cls"] for r in res])
    ts = np.array([r["timestamp"] for r in res])
    period = float(np.diff(ts).mean()) if n > 1 else float(res[0]["cycles"])
    bound = bound_cycles_per_image()
    report["stages"]["inference"] = {
        "accuracy_rtl": float((cls == y).mean() * 100), "accuracy_golden": float((g.classes == y).mean() * 100),
        "bitexact_images": n - len(mism), "mismatched_images": len(mism)}
    report.update({
        "accuracy_rtl": report["stages"]["inference"]["accuracy_rtl"],
        "accuracy_golden": report["stages"]["inference"]["accuracy_golden"],
        "bitexact_images": n - len(mism), "mismatched_images": len(mism), "mismatched_indices": mism[:20],
        "cycles_per_image": round(period, 1), "cycles_first_image": int(res[0]["cycles"]),
        "bound_cycles_per_image": bound["cycles"], "bound_per_layer": bound["per_layer"],
        "measured_over_bound": round(period / bound["cycles"], 4),
        "cosim_images_per_s": round(n / t_inf, 2), "golden_images_per_s": round(n / t_golden, 1)})
    assert not mism, f"{len(mism)} images differ from the golden datapath: {mism[:10]}"


async def _hybrid(dut, p, w, ctrl, mapping, ds, xb, gold_xb, iters, report):
    """Stage 3: `iters` hybrid-training batches in fabric (update engine, threshold rule, pair
    programmer, write-verify) against golden.update + golden.hybrid.PairProgrammer on the copy."""
    from golden import cnn
    from golden.datapath import Datapath
    from golden.hybrid import ETA_DEFAULT, PairProgrammer
    from golden.update import accumulate, commands, eta_params, threshold, weight_update
    eta_m, eta_sh = eta_params(p.get("eta") or ETA_DEFAULT, w.q)
    dut.eta_m.value, dut.eta_sh.value = eta_m, eta_sh
    backend = sim_top.CrossbarBackend(xb, ctrl)
    pp_gold = PairProgrammer(gold_xb, "closed")
    rng = np.random.default_rng(p.get("seed", 0) + 7)
    order = rng.permutation(55000)
    trace = []
    fc = cnn.weight_layers()[-1].name
    for it in range(iters):
        idx = order[it * 100:(it + 1) * 100]
        xt, yt = ds.train_images[idx], ds.train_labels[idx].astype(np.int64)
        # golden on the copy: V, delta, update, threshold, pair programming
        gdp = Datapath(w.int_w, w.q, array=gold_xb)
        gg, ggd = _golden(gdp, xt, yt)
        v = cnn.flatten_chw(gg.activations[cnn.YAO2020[-2].name])
        cmds = commands(threshold(weight_update(accumulate(v, ggd), eta_m, eta_sh)), mapping, fc)
        dut.train.value = 1
        res, _ = await _infer(dut, ctrl, xt, yt, f"hybrid iteration {it + 1}/{iters}", False)
        bad_fw = _compare(res, gg, ggd)
        pres = await sim_top.finish_batch(dut, backend)
        for cmd in cmds:
            pp_gold.apply(cmd, it)
        same = bool(np.array_equal(xb.g, gold_xb.g))
        trace.append({"iteration": it + 1, "train_error_batch": float((np.array([r["cls"] for r in res]) != yt)
                                                                      .mean() * 100),
                      "commands": len(cmds), "cells_programmed": len(pres),
                      "forward_mismatches": len(bad_fw), "conductances_equal_golden": same})
        assert not bad_fw and same, f"hybrid iteration {it + 1} differs from golden: {trace[-1]}"
    report["stages"]["hybrid"] = {"iterations": iters, "trace": trace}


async def _inference_after_hybrid(dut, ctrl, w, xb, x, y, progress, report):
    """Stage 4: the test images again, on the trained board."""
    from golden.datapath import Datapath
    n = len(x)
    dp = Datapath(w.int_w, w.q, array=xb)
    g, gd = _golden(dp, x, y)
    res, _ = await _infer(dut, ctrl, x, y, "inference after hybrid training (RTL)", progress)
    mism2 = _compare(res, g, gd)
    cls = np.array([r["cls"] for r in res])
    report["stages"]["inference_after_hybrid"] = {
        "accuracy_rtl": float((cls == y).mean() * 100), "accuracy_golden": float((g.classes == y).mean() * 100),
        "bitexact_images": n - len(mism2), "mismatched_images": len(mism2)}
    report["bitexact_images"] += n - len(mism2)
    report["mismatched_images"] += len(mism2)
    assert not mism2, f"{len(mism2)} images differ from golden after training"


def _counters(dut, report, gold_xb):
    """The RTL's activity counters; on a device board also against the golden crossbar's own counts."""
    report["counters"] = {
        "slot_reads": int(dut.slot_reads.value), "adc_conversion_rounds": int(dut.conv_rounds.value),
        "adc_conversions": int(dut.conv_rounds.value) * 32, "lane_idle_cycles": int(dut.lane_idle.value),
        "overrun": int(dut.overrun.value), "set_pulses": int(dut.set_pulses.value),
        "reset_pulses": int(dut.reset_pulses.value), "verify_reads": int(dut.verify_reads.value)}
    if gold_xb is not None:
        # the golden crossbar's own counts (programmed by golden alone) against the RTL's counters
        c = report["counters"]
        c.update({f"golden_{k}": int(v) for k, v in gold_xb.counters.items()})
        c["counters_match_golden"] = (c["set_pulses"] + c["reset_pulses"] == c["golden_pulses"]
                                      and c["verify_reads"] == c["golden_verify_reads"])
        assert c["counters_match_golden"], (
            f"RTL pulses {c['set_pulses']} + {c['reset_pulses']}, verify reads {c['verify_reads']}; "
            f"golden {c['golden_pulses']}, {c['golden_verify_reads']}")
