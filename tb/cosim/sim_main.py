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
The network (params "network", golden/networks.py; default yao2020) sets the controller, the
mapping and the images' input transform; networks other than yao2020 run on ideal cells only.
"""
import time
from pathlib import Path

import cocotb
import cocotb.triggers
import numpy as np

from tb import harness
from tb.cosim import sim_top


async def _infer(dut, ctrl, x, y, desc, progress, activity=False):
    return await sim_top.infer(dut, ctrl.result_layout, x, y, desc, progress, activity=activity)


def _golden(dp, x, y):
    from golden.datapath import delta
    g = dp.run(x, keep=True)
    return g, delta(g.p, y)


def _compare(res, g, d):
    return [i for i, r in enumerate(res) if not sim_top.same_result(r, (g.logits[i], g.classes[i], g.p[i], d[i]))]


@cocotb.test()
async def session(dut):
    p = harness.params()
    report = {"images": p["n"], "device": p.get("device", "ideal"), "stages": {},
              "dataset": p.get("name") or Path(p["data"]).name}
    await sim_top.reported_session(_session, dut, p, report)


async def _session(dut, p, report):
    from golden import networks, weights
    from golden.datapath import Datapath
    from golden.idx import load_dataset

    progress = p.get("progress", True)
    net = networks.network(p.get("network", "yao2020"))
    w = weights.load(p["weights"], net)
    ds = load_dataset(p["data"])
    n = min(p["n"], len(ds.test_images))
    lo, hi = p.get("shard") or (0, n)        # one shard's images (tb/cosim/shard.py): test[lo:hi]
    x, y = net.prepare(ds.test_images[lo:hi]), ds.test_labels[lo:hi].astype(np.int64)
    ctrl = sim_top.build_controller(w, net)
    mapping = net.mapping()
    if net.name != "yao2020":
        report["network"] = net.name
    report["images"] = len(x)
    if "shard" in p:
        report["shard"] = {"start": lo, "stop": hi}
    await harness.start_clock_and_reset(dut, start_clock=False)
    dut.train.value = 0
    dut.th_code.value = 15

    if p.get("boards"):                     # an inference shard of a staged run (tb/cosim/shard.py)
        await _shard_on_boards(dut, p, w, ctrl, x, y, progress, report)
        return
    ideal = p.get("device", "ideal") == "ideal"
    if not ideal and net.name != "yao2020":
        raise ValueError(f"network {net.name}: the co-simulation runs it on ideal cells only (device 'ideal')")
    staged = bool(p.get("stage_dir"))        # the ordered stages alone, their boards saved (shard.py)
    xb = gold_xb = act = None
    if ideal:
        array = Datapath(w.int_w, w.q, net.layers, mapping).array   # golden's ideal board: exact target levels
        await sim_top.load_cells(dut, array.i_units, dut.clk)
    else:
        xb, gold_xb = await _transfer(dut, p, w, ctrl, mapping, progress, report)
        array = xb
        _save_board(p, "transfer", gold_xb)
    if not staged:
        act = await _inference(dut, ctrl, w, array, x, y, progress, report, net)
    iters = p.get("iterations", 0) if not ideal else 0
    if iters:
        await _hybrid(dut, p, w, ctrl, mapping, ds, xb, gold_xb, iters, report)
        _save_board(p, "hybrid", gold_xb)
        if not staged:
            await _inference_after_hybrid(dut, ctrl, w, xb, x, y, progress, report)
    _counters(dut, report, gold_xb)
    if act is not None:
        _energy(report, w, xb, act, net)


def _save_board(p, stage, gold_xb):
    """A staged run: golden's copy of the board after `stage` (checked equal to the RTL's
    conductances), pickled for the inference shards (stage_dir/<stage>.pkl)."""
    import pickle
    if p.get("stage_dir"):
        (Path(p["stage_dir"]) / f"{stage}.pkl").write_bytes(pickle.dumps(gold_xb))


async def _shard_on_boards(dut, p, w, ctrl, x, y, progress, report):
    """Inference shard of a staged run: its images on each saved board in turn (after transfer;
    after hybrid training if given), each loaded into the PE arrays as the programming left them.
    Without read noise inference does not change the board, so this equals the single session's
    inference before and after the hybrid stage on these images."""
    import pickle
    boards = [pickle.loads(Path(f).read_bytes()) for f in p["boards"]]
    await sim_top.load_cells(dut, boards[0].i_units(), dut.clk)
    act = await _inference(dut, ctrl, w, boards[0], x, y, progress, report)
    if len(boards) > 1:
        await sim_top.load_cells(dut, boards[1].i_units(), dut.clk)
        await _inference_after_hybrid(dut, ctrl, w, boards[1], x, y, progress, report)
    _counters(dut, report, None)
    _energy(report, w, boards[-1], act)


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
    c0, g0 = _prog_counters(dut), dict(gold_xb.counters)
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
    _prog_session(report, "transfer", dut, c0, g0, gold_xb)
    report["stages"]["transfer"] = {
        "cells": len(cells), "failed_cells": int(sum(not r["ok"] for r in res)),
        "pulses_mean": float(np.mean([r["pulses"] for r in res])),
        "pulses_max": int(max(r["pulses"] for r in res)),
        "cells_differing_from_golden": len(bad), "conductances_equal_golden": same_g,
        "seconds": round(t_tr, 1)}
    assert not bad and same_g, f"transfer differs from golden: {len(bad)} cells, conductances equal {same_g}"
    return xb, gold_xb


async def _inference(dut, ctrl, w, array, x, y, progress, report, net="yao2020"):
    """Stage 2: the test images through the RTL on the programmed cells, against golden; throughput."""
    from golden.datapath import Datapath
    from golden.networks import network
    from golden.perf import bound_cycles_per_image
    n, net = len(x), network(net)
    dp = Datapath(w.int_w, w.q, net.layers, net.mapping(), array=array)
    t0 = time.perf_counter()
    g, gd = _golden(dp, x, y)
    t_golden = time.perf_counter() - t0
    req0 = _req_cycles(dut, ctrl)
    cpu0 = time.process_time()
    res, t_inf = await _infer(dut, ctrl, x, y, "inference (RTL)", progress, activity=True)
    cpu = time.process_time() - cpu0      # this simulator process's CPU time (Verilator + Python)
    req = [b - a for a, b in zip(req0, _req_cycles(dut, ctrl))]
    mism = _compare(res, g, gd)
    cls = np.array([r["cls"] for r in res])
    ts = np.array([r["timestamp"] for r in res])
    period = float(np.diff(ts).mean()) if n > 1 else float(res[0]["cycles"])
    bound = bound_cycles_per_image(net.layers, net.mapping(), input_shape=net.input_shape)
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
        "cosim_images_per_s": round(n / t_inf, 2), "cosim_images_per_cpu_s": round(n / cpu, 2),
        "golden_images_per_s": round(n / t_golden, 1)})
    act = _activity(report, res, g, x, ctrl, net)
    report.update(_latency(ctrl, period, [r / n for r in req]))
    if "shard" in report:
        _shard_sums(report["shard"], res, g.classes, y, mism, req, act, (t_inf, cpu), t_golden)
    assert not mism, f"{len(mism)} images differ from the golden datapath: {mism[:10]}"
    assert report["activity_equal_golden"], f"activity differs from golden: {report['activity']['mismatches']}"
    return act


def _shard_sums(sh, res, g_classes, y, mism, req, act, t_cpu, t_golden):
    """A shard's raw figures, which tb/cosim/shard.py merge() adds up over the shards: counts,
    sums, the time span of its inference loop (epoch seconds) and its CPU seconds, its results in
    image order."""
    ts = [r["timestamp"] for r in res]
    end, (t_inf, cpu) = time.time(), t_cpu
    sh.update({"correct_rtl": int(sum(r["cls"] == c for r, c in zip(res, y))),
               "correct_golden": int((g_classes == y).sum()), "mismatched": mism,
               "span_cycles": ts[-1] - ts[0], "intervals": len(ts) - 1, "req_cycles": req,
               "activity_sums": {lay: {k: float(v.sum()) for k, v in d.items()} for lay, d in act.items()},
               "t_start": end - t_inf, "t_end": end, "cpu_seconds": cpu, "seconds_golden": t_golden,
               "classes": [r["cls"] for r in res], "logits": [r["logits"] for r in res]})


def _req_cycles(dut, ctrl):
    """SimTop's counts of controller cycles in which k = 1..n_lanes PEs start a conversion."""
    return [int(getattr(dut, f"req{k + 1}_cycles").value) for k in range(ctrl.n_lanes)]


def _activity(report, res, g, x, ctrl, net):
    """Per image, the RTL's activity counters (their growth over the image) against golden.activity;
    report: the golden per-image means per layer and in total, mismatching images (first 10)."""
    from golden.activity import ACTIVITY_KEYS, from_counters, inference_activity
    act = inference_activity(g.activations, x, net.layers, net.mapping())
    bad = []
    for i, r in enumerate(res):
        rtl = from_counters(r["activity"], ctrl.n_rows, ctrl.n_adc)
        gold = {k: int(act["total"][k][i]) for k in ACTIVITY_KEYS}
        if rtl != gold:
            bad.append({"image": i, "keys": {k: [rtl[k], gold[k]] for k in ACTIVITY_KEYS if rtl[k] != gold[k]}})
    mean = {lay: {k: round(float(v.mean()), 2) for k, v in d.items() if v.any()} for lay, d in act.items()}
    report["activity"] = {"per_image_mean": mean.pop("total"), "per_layer_mean": mean,
                          "images_equal_golden": len(res) - len(bad), "mismatches": bad[:10]}
    report["activity_equal_golden"] = not bad
    return act


def _energy(report, w, xb, act, net="yao2020"):
    """Energy per image from the measured activity (the RTL's counters, equal to golden's per
    image; the per-layer split from golden.activity), the board's conductances (the ideal levels on
    ideal cells), GOP/s/mm^2 at the ZC706 board's latency; the transfer's and the measured hybrid
    iterations' programming energy from the RTL's counters (docs/energy.md)."""
    from golden.activity import PROGRAMMING_KEYS
    from golden.energy import energy_report, programming_energy
    from golden.mapping import conductance_levels
    from golden.networks import network
    net = network(net)
    mapping = net.mapping()
    per_layer = {lay: {k: float(v.mean()) for k, v in d.items()} for lay, d in act.items() if lay != "total"}
    kw = dict(g_us=xb.g) if xb is not None else dict(levels=conductance_levels(net.layers, w.int_w, mapping))
    ses = report.get("activity_programming", {})
    rep = energy_report(per_layer, mapping, net.layers, input_shape=net.input_shape,
                        transfer=ses.get("transfer", {}).get("rtl"),
                        seconds_per_image=report["latency_us_per_image_board"] * 1e-6, **kw)
    hyb = [v["rtl"] for k, v in ses.items() if k.startswith("hybrid iteration")]
    if hyb:
        tot = {k: sum(h[k] for h in hyb) for k in PROGRAMMING_KEYS}
        rep["energy_hybrid_iterations_pj"] = {"iterations": len(hyb), **programming_energy(tot)}
    report.update({k: rep.pop(k) for k in ("energy_pj_per_image", "energy_breakdown", "gops_per_w")})
    report["energy"] = rep


def _latency(ctrl, period, req_per_image):
    """Latency per image: controller cycles x the co-simulation top's clock, and on the ZC706 board
    configuration, each controller cycle one PHY tick whose length (system cycles, measured on the
    PHY RTL: tb/cosim/board_tick.py) depends on how many PEs convert in it (counted by SimTop)."""
    from tb.cosim import board_tick
    ticks = board_tick.tick_table(ctrl, ctrl.n_lanes)
    conv = sum(req_per_image)
    board_cycles = (period - conv) * ticks[0] + sum(c * t for c, t in zip(req_per_image, ticks[1:]))
    hz = board_tick.board_clock_hz()
    return {"latency_us_per_image": round(period * sim_top.CLOCK_NS / 1000, 3),
            "latency_us_per_image_board": round(board_cycles / hz * 1e6, 3),
            "latency": {"cosim_clock_mhz": 1000 / sim_top.CLOCK_NS, "cycles_per_image": round(period, 1),
                        "board_clock_mhz": hz / 1e6, "board_tick_cycles_by_converting_pes": ticks,
                        "controller_cycles_by_converting_pes": [round(period - conv, 1)]
                        + [round(c, 1) for c in req_per_image],
                        "board_cycles_per_image": round(board_cycles, 1),
                        "board_assumes": "a PE board answering at once (ready the cycle after apply, "
                                         "reads answered next cycle): a lower bound"}}


def _prog_counters(dut):
    from golden.activity import PROGRAMMING_KEYS
    return {k: int(getattr(dut, k).value) for k in PROGRAMMING_KEYS}


def _prog_session(report, name, dut, c0, g0, gold_xb):
    """A programming session's activity: the RTL's SET / RESET / verify-read counters' growth
    against golden.activity.programming_activity of the golden copy's crossbar counters."""
    from golden.activity import PROGRAMMING_KEYS, counter_diff, programming_activity
    rtl = counter_diff(_prog_counters(dut), c0)
    gold = {k: programming_activity(g0, gold_xb.counters)[k] for k in PROGRAMMING_KEYS}
    ses = report.setdefault("activity_programming", {})
    ses[name] = {"rtl": rtl, "golden": gold, "equal": rtl == gold}
    assert rtl == gold, f"{name}: RTL programming activity {rtl}, golden {gold}"


def run_step(p, w, mapping, ds, gold_xb, n_fit, val, iters):
    """The step of this run: --eta if given, else golden.hybrid.choose_step on a reseeded copy of
    the golden board (the same iterations, a disjoint batch order, scored on the validation subset).
    -> (the choice's report, the FeatureSource it used over the training file)."""
    from golden.hybrid import FeatureSource, choose_step
    src = FeatureSource(gold_xb, w.int_w, w.q, mapping, ds.train_images, cache_idx=val)
    if p.get("eta"):
        return {"eta": float(p["eta"]), "chosen": False}, src
    r = choose_step(gold_xb, mapping, w.q, src, ds.train_labels, np.arange(n_fit), val, iters, p.get("seed", 0),
                    guard=p.get("guard", True))
    return {**r, "chosen": True}, src


async def _hybrid(dut, p, w, ctrl, mapping, ds, xb, gold_xb, iters, report):
    """Stage 3: `iters` hybrid-training batches in fabric (update engine, threshold rule, pair
    programmer, write-verify) against golden.update + golden.hybrid.PairProgrammer on the copy.
    The step: `run_step`. The guard (golden.hybrid.Guard) runs on the host: it sees each batch's
    RTL classes, and on divergence rewrites eta_sh (+1: the step halved) before that batch's FINISH;
    golden runs its own Guard on its own classes, and the two steps must agree."""
    from golden import cnn
    from golden.hybrid import Guard, PairProgrammer, batch_order, error_pct, validation_subset
    from golden.update import accumulate, commands, eta_params, threshold, weight_update
    n_fit = ds.split[0]
    val = validation_subset(len(ds.train_images))
    yall = ds.train_labels.astype(np.int64)
    step, src = run_step(p, w, mapping, ds, gold_xb, n_fit, val, iters)
    eta_m, eta_sh = eta_params(step["eta"], w.q)
    dut.eta_m.value, dut.eta_sh.value = eta_m, eta_sh
    fc = cnn.weight_layers()[-1].name
    val_err = [error_pct(gold_xb, mapping.groups[fc], src(val), yall[val])]
    host = Guard() if p.get("guard", True) else None        # the host's, on the RTL's batch classes
    gold = Guard() if host else None                        # golden's, on golden's classes
    backend = sim_top.CrossbarBackend(xb, ctrl)
    pp_gold = PairProgrammer(gold_xb, "closed")
    order = batch_order(n_fit, 100, iters, seed=p.get("seed", 0) + 7)   # MNIST: the first permutation(55000)
    trace = []
    for it in range(iters):
        idx = order[it]
        xt, yt = ds.train_images[idx], yall[idx]
        gg, ggd = _golden(_datapath(w, gold_xb), xt, yt)     # golden on the copy
        if gold and gold.observe(float((gg.classes != yt).mean() * 100)):
            eta_sh += 1
        v = cnn.flatten_chw(gg.activations[cnn.YAO2020[-2].name])
        cmds = commands(threshold(weight_update(accumulate(v, ggd), eta_m, eta_sh)), mapping, fc)
        dut.train.value = 1
        c0, g0 = _prog_counters(dut), dict(gold_xb.counters)
        res, _ = await _infer(dut, ctrl, xt, yt, f"hybrid iteration {it + 1}/{iters}", False)
        bad_fw = _compare(res, gg, ggd)
        err = float((np.array([r["cls"] for r in res]) != yt).mean() * 100)
        if host and host.observe(err):
            dut.eta_sh.value = int(dut.eta_sh.value) + 1      # host: ctrl_eta_sh + 1 before FINISH
        pres = await sim_top.finish_batch(dut, backend)
        for cmd in cmds:
            pp_gold.apply(cmd, it)
        _prog_session(report, f"hybrid iteration {it + 1}", dut, c0, g0, gold_xb)
        same = bool(np.array_equal(xb.g, gold_xb.g)) and int(dut.eta_sh.value) == eta_sh
        val_err.append(error_pct(gold_xb, mapping.groups[fc], src(val), yall[val]))
        trace.append({"iteration": it + 1, "train_error_batch": err, "eta_sh": eta_sh, "commands": len(cmds),
                      "cells_programmed": len(pres), "validation_error": val_err[-1],
                      "forward_mismatches": len(bad_fw), "conductances_equal_golden": same})
        assert not bad_fw and same, f"hybrid iteration {it + 1} differs from golden: {trace[-1]}"
    report["stages"]["hybrid"] = {"iterations": iters, "trace": trace, "step": step, "eta_m": eta_m,
                                  "guard": host.as_dict() if host else None, "validation_images": len(val),
                                  "validation_error_before": val_err[0], "validation_error_after": val_err[-1]}


def _datapath(w, array):
    from golden.datapath import Datapath
    return Datapath(w.int_w, w.q, array=array)


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
    if "shard" in report:                   # raw figures for shard.merge
        report["shard"]["after_hybrid"] = {"correct_rtl": int((cls == y).sum()),
                                           "correct_golden": int((g.classes == y).sum()), "mismatched": mism2}
    assert not mism2, f"{len(mism2)} images differ from golden after training"


def _counters(dut, report, gold_xb):
    """The RTL's activity counters; on a device board also against the golden crossbar's own counts."""
    from golden.activity import N_ADC
    report["activity_equal_golden"] = bool(report.get("activity_equal_golden", True) and all(
        v["equal"] for v in report.get("activity_programming", {}).values()))
    report["counters"] = {
        "slot_reads": int(dut.slot_reads.value), "adc_conversion_rounds": int(dut.conv_rounds.value),
        "adc_conversions": int(dut.conv_rounds.value) * N_ADC, "lane_idle_cycles": int(dut.lane_idle.value),
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
