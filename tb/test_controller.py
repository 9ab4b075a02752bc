"""End-to-end co-simulation of the controller on 8 behavioural PEs, bit-exact against the golden
integer datapath (ideal cells here; the device model's cells go through the same path)."""
import time

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def inference(dut):
        from golden import weights
        from golden.datapath import Datapath, delta
        from golden.idx import default_data_dir, load_dataset
        from golden.perf import bound_cycles_per_image
        from tb import cosim
        from tb.test_controller import build_controller
        p = harness.params()
        w = weights.load()
        ds = load_dataset(default_data_dir())
        x = ds.test_images[p["first"]:p["first"] + p["n"]]
        dp = Datapath(w.int_w, w.q)
        gold = dp.run(x)
        y = ds.test_labels[p["first"]:p["first"] + p["n"]]
        dl = delta(gold.p, y)
        ctrl = build_controller()
        await harness.start_clock_and_reset(dut, start_clock=False)
        await cosim.load_cells(dut, dp.array.i_units, dut.clk)
        t0 = time.perf_counter()
        cocotb.start_soon(cosim.feed_images(dut, x, dut.clk, labels=y))
        res = await cosim.collect_results(dut, len(x), ctrl.result_layout, dut.clk)
        dt = time.perf_counter() - t0
        bound = bound_cycles_per_image()["cycles"]
        bad = 0
        for i, r in enumerate(res):
            ok = (r["logits"] == [int(v) for v in gold.logits[i]] and r["cls"] == int(gold.classes[i])
                  and r["p"] == [int(v) for v in gold.p[i]] and r["delta"] == [int(v) for v in dl[i]])
            if not ok:
                bad += 1
                dut._log.error(f"image {p['first'] + i}: RTL {r['cls']} {r['logits']} golden "
                               f"{gold.classes[i]} {list(gold.logits[i])}")
        ts = [r["timestamp"] for r in res]
        cyc = np.diff(ts)  # steady-state image period: result to result
        dut._log.info(f"{len(res)} images, {bad} mismatched, cycles/image {np.mean(cyc):.0f} "
                      f"(bound {bound}, ratio {np.mean(cyc) / bound:.4f}), {len(res) / dt:.1f} images/s, "
                      f"slot reads {int(dut.slot_reads.value)}, conv rounds {int(dut.conv_rounds.value)}, "
                      f"lane idle {int(dut.lane_idle.value)}, overrun {int(dut.overrun.value)}")
        assert bad == 0
        assert int(dut.overrun.value) == 0


def build_controller():
    from golden import weights
    from tb.sim_top import build_controller
    return build_controller(weights.load())


def test_controller_cosim():
    from golden import weights
    from tb.cosim import PE_MODEL
    from tb.sim_top import sim_top
    top = sim_top(weights.load())
    harness.run_block(top, "mcnn_sim", "tb.test_controller", {"first": 0, "n": 8}, extra_sources=[PE_MODEL],
                      ports_only=True, hdl_clock_ns=10)
