"""System co-simulation of in-situ training (issue 15), first piece: the li2018 controller's forward
pass on a fresh golden li2018 Crossbar board with the in-situ scales, against golden InsituTrainer.

The controller is the one the generator makes for li2018 (rtl/controller.py), built with the
in-situ scales instead of an ex-situ QuantConfig (`insitu_controller`): hidden requant (M, sh) =
(1, cfg.hidden_shift), softmax (M, sh) = InsituTrainer's (from its logit scale). Its 8 behavioural
PEs (tb/cosim/sim_top.py SimTop) digitise with golden.insitu.SL_ADC, ADC(8, 64 uA) (adc_shift_for:
LSB 0.25 uA = 2**shift I_Q), and hold the cell currents of the board (Crossbar.i_units, loaded
through the backdoor as in sim_main's device stages). Per image the result stream's logits, p and
delta must equal InsituTrainer.forward's logits and softmax, and InsituTrainer.backward's output
delta (deltas[-1], Q1.15) - the output deltas that feed rtl/insitu_path.py.

Left for the next piece (the training loop): the hidden activations h of each image (the
controller's feeder hands them, as the last step's V, to its own update engine with `train`; they
are not on a port yet), and InsituPath driving the board's programming between batches.
"""
from __future__ import annotations

import cocotb
import numpy as np

from tb import harness
from tb.cosim import sim_top


def insitu_controller(t):
    """The generated controller for InsituTrainer t's network with t's in-situ scales."""
    from rtl.controller import Controller
    net = t.net
    requant = {L.name: (1, t.cfg.hidden_shift) for L in t.layers[:-1]}
    return Controller(requant, (t.sm_m, t.sm_sh), net.layers, t.mapping, input_shape=net.input_shape)


def insitu_top(t):
    from golden.insitu import SL_ADC
    return sim_top.SimTop(insitu_controller(t), sim_top.adc_shift_for(SL_ADC))


def trainer(p):
    """The golden side of a session: InsituTrainer on a fresh li2018 board (seed p['seed'])."""
    from golden.crossbar import Crossbar
    from golden.insitu import InsituConfig, InsituTrainer
    cfg = InsituConfig(eta=p.get("eta", 0.5), batch=p.get("batch", 8), th_code=p.get("th"))
    return InsituTrainer(Crossbar(p.get("device", "li2018"), seed=p["seed"]), "li2018", cfg)


def random_images(rng, n):
    """u8 8x8 images, sparse as MNIST digits, some saturated pixels; random labels."""
    x = rng.integers(0, 256, (n, 8, 8, 1))
    x[rng.random(x.shape) < 0.4] = 0
    x[rng.random(x.shape) < 0.1] = 255
    return x, rng.integers(0, 10, n)


def compare_forward(t, res, x, y):
    """The RTL results of images x (labels y) against golden -> list of mismatching image indices
    (logits, class, p, delta)."""
    from golden.datapath import argmax, softmax_fixed
    acts, logits = t.forward(x.reshape(len(x), -1))
    deltas = t.backward(acts, logits, y)
    p = softmax_fixed(logits, t.sm_m, t.sm_sh)
    cls = argmax(logits)
    return [i for i, r in enumerate(res)
            if not sim_top.same_result(r, (logits[i], cls[i], p[i], deltas[-1][i]))], acts, deltas


@cocotb.test()
async def session(dut):
    p = harness.params()
    report = {"images": p["n"], "seed": p["seed"], "batches": []}
    await sim_top.reported_session(_session, dut, p, report)


async def _session(dut, p, report):
    t = trainer(p)
    ctrl = insitu_controller(t)
    rng = np.random.default_rng(p["seed"])
    await harness.start_clock_and_reset(dut, start_clock=False)
    dut.train.value = 0
    await sim_top.load_cells(dut, t.xb.i_units(), dut.clk)
    x, y = random_images(rng, p["n"])
    res, _ = await sim_top.infer(dut, ctrl.result_layout, x, y)
    bad, acts, deltas = compare_forward(t, res, x, y)
    report.update({"mismatched_images": len(bad), "bitexact_images": len(res) - len(bad),
                   "mismatched_indices": bad[:20],
                   "logit_range": [int(min(min(r["logits"]) for r in res)), int(max(max(r["logits"]) for r in res))],
                   "hidden_saturated": int((acts[1] == 255).sum()), "hidden_zero": int((acts[1] == 0).sum()),
                   "overrun": int(dut.overrun.value)})
    assert not bad, f"{len(bad)} images differ from golden InsituTrainer: {bad[:10]}"


def run(params, log_to_terminal=False):
    """One session (params: seed, n, report; optional device, eta, batch, th)."""
    return harness.run_block(insitu_top(trainer(params)), "mcnn_insitu", "tb.cosim.insitu_main", params,
                             extra_sources=sim_top.SIM_SOURCES, ports_only=True, hdl_clock_ns=sim_top.CLOCK_NS,
                             log_to_terminal=log_to_terminal)
