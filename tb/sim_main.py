"""cocotb session behind `make sim` / `mcnn sim`: the controller RTL and 8 behavioural PEs.

Stages: cells programmed (conductances from golden/: ideal levels, or a device model's transfer),
inference on N test images through the RTL, compared image by image with the golden integer
datapath on the same cells; a JSON report with accuracy, agreement, cycles per image against the
array bound, images per second and the controller's counters.
"""
import json
import time

import cocotb
import numpy as np

from tb import cosim, harness


@cocotb.test()
async def session(dut):
    from tqdm import tqdm

    from golden import weights
    from golden.datapath import Datapath, delta
    from golden.idx import load_dataset
    from golden.perf import bound_cycles_per_image
    from tb.sim_top import build_controller, cells_for

    p = harness.params()
    w = weights.load(p["weights"])
    ds = load_dataset(p["data"])
    n = min(p["n"], len(ds.test_images))
    x, y = ds.test_images[:n], ds.test_labels[:n].astype(np.int64)
    array, transfer_info = cells_for(w, p)
    dp = Datapath(w.int_w, w.q, array=array)
    t0 = time.perf_counter()
    gold = dp.run(x)
    t_golden = time.perf_counter() - t0
    gdelta = delta(gold.p, y)
    ctrl = build_controller(w)

    await harness.start_clock_and_reset(dut, start_clock=False)
    t0 = time.perf_counter()
    await cosim.load_cells(dut, array.i_units, dut.clk)
    t_load = time.perf_counter() - t0

    bar = tqdm(total=n, desc="inference (RTL)", unit="img", disable=not p.get("progress", True))
    t0 = time.perf_counter()
    cocotb.start_soon(cosim.feed_images(dut, x, dut.clk, labels=y))
    res = await cosim.collect_results(dut, n, ctrl.result_layout, dut.clk, on_result=lambda r: bar.update(1))
    t_inf = time.perf_counter() - t0
    bar.close()

    mism = []
    for i, r in enumerate(res):
        if not (r["logits"] == gold.logits[i].tolist() and r["cls"] == int(gold.classes[i])
                and r["p"] == gold.p[i].tolist() and r["delta"] == gdelta[i].tolist()):
            mism.append(i)
    cls = np.array([r["cls"] for r in res])
    ts = np.array([r["timestamp"] for r in res])
    period = float(np.diff(ts).mean()) if n > 1 else float(res[0]["cycles"])
    bound = bound_cycles_per_image()
    report = {
        "images": n,
        "device": p.get("device", "ideal"),
        "accuracy_rtl": float((cls == y).mean() * 100),
        "accuracy_golden": float((gold.classes == y).mean() * 100),
        "bitexact_images": n - len(mism),
        "mismatched_images": len(mism),
        "mismatched_indices": mism[:20],
        "cycles_per_image": round(period, 1),
        "cycles_first_image": int(res[0]["cycles"]),
        "bound_cycles_per_image": bound["cycles"],
        "bound_per_layer": bound["per_layer"],
        "measured_over_bound": round(period / bound["cycles"], 4),
        "cosim_images_per_s": round(n / t_inf, 2),
        "golden_images_per_s": round(n / t_golden, 1),
        "seconds_cell_load": round(t_load, 2),
        "counters": {"slot_reads": int(dut.slot_reads.value), "adc_conversion_rounds": int(dut.conv_rounds.value),
                     "adc_conversions": int(dut.conv_rounds.value) * 32, "lane_idle_cycles": int(dut.lane_idle.value),
                     "overrun": int(dut.overrun.value)},
        "transfer": transfer_info,
    }
    with open(p["report"], "w") as f:
        json.dump(report, f, indent=2)
    assert not mism, f"{len(mism)} images differ from the golden datapath: {mism[:10]}"
