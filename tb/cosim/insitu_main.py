"""System co-simulation of in-situ training (issue 15), first pieces: the li2018 controller on a
golden li2018 Crossbar board with the in-situ scales produces, per training image, what feeds
rtl/insitu_path.py - the output deltas and hidden activations h (x is the host's) - checked against
golden InsituTrainer over several batches, golden programming the board between them.

The controller is the one the generator makes for li2018 (rtl/controller.py), built with the
in-situ scales instead of an ex-situ QuantConfig (`insitu_controller`): hidden requant (M, sh) =
(1, cfg.hidden_shift), softmax (M, sh) = InsituTrainer's (from its logit scale). Its 8 behavioural
PEs (tb/cosim/sim_top.py SimTop) digitise with golden.insitu.SL_ADC, ADC(8, 64 uA) (adc_shift_for:
LSB 0.25 uA = 2**shift I_Q), and hold the cell currents of the board (Crossbar.i_units, loaded
through the backdoor as in sim_main's device stages; reloaded before every batch). With `train`
on, the controller's training feeder (rtl/feeder.py) hands each image's K deltas and the last
step's inputs V = h to its programming path; `InsituSimTop` taps that stream (the controller's own
update engine only accumulates: no FINISH is ever sent). Per image, the result stream (logits,
class, p, delta) and the tapped deltas and h must equal InsituTrainer.forward / backward
(deltas[-1], acts[-1]); then InsituTrainer.step (golden) programs the board.

Images go back to back (the controller keeps each image's label with its logits and holds the step
writing the map the training feeder reads until it has read it); params paced=True feeds them one
at a time (`_paced`). Per batch `cycles_per_image`: the spacing of its results (clock cycles).

The training loop in fabric (the controller and rtl/insitu_path.py on the same PEs, InsituPath's
input assembled from this tap, its programming on the RTL's own copy of the board) is
tb/cosim/insitu_top.py + tb/cosim/insitu_loop_main.py (`mcnn sim --network li2018 --device li2018`).
"""
from __future__ import annotations

import cocotb
import numpy as np

from tb import harness
from tb.cosim import sim_top


def insitu_controller(t):
    """The generated controller for InsituTrainer t's network with t's in-situ scales (hidden
    requant t.hidden_rq: (1, cfg.hidden_shift), or the network's own, e.g. elm-board's step) and
    its output layer's training error (rule "sign": the sign-WH error, else the softmax delta)."""
    from rtl.controller import Controller
    net = t.net
    requant = {L.name: t.hidden_rq for L in t.layers[:-1]}
    return Controller(requant, (t.sm_m, t.sm_sh), net.layers, t.mapping, input_shape=net.input_shape,
                      error="sign" if t.rules[-1] == "sign" else "softmax")


class InsituSimTop(sim_top.SimTop):
    """SimTop plus a tap of the training feeder's stream (rtl/feeder.py, with `train`): per image
    its output deltas (DELTA items) and the last step's inputs V = the hidden activations h (V
    items), as they enter the controller's programming path (`feed_valid`: a transfer)."""

    def __init__(self, controller, adc_shift):
        from amaranth.lib.wiring import Out
        tap = {"feed_valid": Out(1), "feed": Out(controller.upd.in_layout)}
        super().__init__(controller, adc_shift, extra_ports=tap)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        u = self.ctrl.programming.upd_i
        m.d.comb += [self.feed_valid.eq(u.valid & u.ready), self.feed.eq(u.payload)]
        return m


def insitu_top(t):
    from golden.insitu import SL_ADC
    return InsituSimTop(insitu_controller(t), sim_top.adc_shift_for(SL_ADC))


def trainer(p):
    """The golden side of a session: InsituTrainer of network p['network'] (default li2018) on a fresh
    board (device p['device'], seed p['seed']) in regime p['mode'] (threshold p['th'], None: the
    regime's default)."""
    from golden.crossbar import Crossbar
    from golden.insitu import InsituConfig, InsituTrainer
    cfg = InsituConfig(eta=p.get("eta", 0.5), batch=p.get("batch", 8), th_code=p.get("th"), mode=p.get("mode", "open"))
    return InsituTrainer(Crossbar(p.get("device", "li2018"), seed=p["seed"]), p.get("network", "li2018"), cfg)


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


async def _paced(dut, ctrl, x, y):
    """The images one at a time: each fed once the previous result is out (params paced=True)."""
    res = []
    for i in range(len(x)):
        r, _ = await sim_top.infer(dut, ctrl.result_layout, x[i:i + 1], y[i:i + 1])
        res += r
    return res


def _field(raw, layout, name):
    from amaranth.hdl import Shape
    f = layout[name]
    sh = Shape.cast(f.shape)
    v = (raw >> f.offset) & ((1 << sh.width) - 1)
    return v - (1 << sh.width) if sh.signed and v >> (sh.width - 1) else v


def feed_item(layout):
    """Decoder of the feeder tap's payload (harness.tap "feed"): raw -> (op, index, value)."""
    return lambda raw: tuple(_field(raw, layout, k) for k in ("op", "index", "value"))


def split_feed(items, n_out, n_in):
    """The feeder's items -> per image (deltas (n_out,), V (n_in,)): an image starts with a DELTA
    item after V items; V items add up (as in the update engine)."""
    from rtl.update_engine import Op
    imgs = []
    for op, idx, val in items:
        if op == Op.DELTA.value and (not imgs or imgs[-1][2]):
            imgs.append([np.zeros(n_out, np.int64), np.zeros(n_in, np.int64), False])
        if op == Op.DELTA.value:
            imgs[-1][0][idx] = val
        elif op == Op.V.value:
            imgs[-1][1][idx] += val
            imgs[-1][2] = True
    return [(d, v) for d, v, _ in imgs]


def batch_report(t, res, items, x, y) -> dict:
    """A batch's RTL results and feeder items against golden (before golden programs the board):
    mismatching images on the result stream / the feed, the first of each in full."""
    bad, acts, deltas = compare_forward(t, res, x, y)
    n_o = t.layers[-1].n_out
    fed = split_feed(items, n_o, t.layers[-1].n_in)
    bad_feed = [i for i, (d, v) in enumerate(fed) if i >= len(x) or not (
        np.array_equal(d, deltas[-1][i]) and np.array_equal(v, acts[-1][i]))]
    if len(fed) != len(x):
        bad_feed.append(f"{len(fed)} images fed")
    e = {"mismatched_images": bad[:10], "mismatched_feed": bad_feed[:10],
         "error": float((np.array([r["cls"] for r in res]) != y).mean() * 100),
         "hidden_zero": int((acts[-1] == 0).sum()), "hidden_saturated": int((acts[-1] == 255).sum()),
         "logit_range": [int(min(min(r["logits"]) for r in res)), int(max(max(r["logits"]) for r in res))]}
    if bad_feed:
        i = bad_feed[0] if isinstance(bad_feed[0], int) and bad_feed[0] < len(fed) else 0
        e["first_feed_mismatch"] = {"image": i, "items": len(items), "d": fed[i][0].tolist(),
                                    "v": fed[i][1].tolist(), "golden_d": deltas[-1][i].tolist(),
                                    "golden_h": acts[-1][i].tolist()}
    if bad:
        r = res[bad[0]]
        e["first_mismatch"] = {"image": bad[0], "label": int(y[bad[0]]), "logits": r["logits"],
                               "delta": r["delta"], "golden_delta": deltas[-1][bad[0]].tolist()}
    return e


@cocotb.test()
async def session(dut):
    p = harness.params()
    report = {"images": p["batch"] * p["batches"], "seed": p["seed"], "batches": []}
    await sim_top.reported_session(_session, dut, p, report)


async def _session(dut, p, report):
    """Per batch: the board's currents into the PEs, the batch through the controller (train on:
    the feeder's deltas and h tapped), compared with golden; then golden's InsituTrainer.step
    programs the board (the RTL programming path, InsituPath, is not in this top yet)."""
    from cocotb.triggers import RisingEdge
    t = trainer(p)
    ctrl = insitu_controller(t)
    rng = np.random.default_rng(p["seed"])
    await harness.start_clock_and_reset(dut, start_clock=False)
    dut.train.value = 1
    feed, n_h, n_o = [], t.layers[-1].n_in, t.layers[-1].n_out
    cocotb.start_soon(harness.tap(dut, "feed", feed, feed_item(ctrl.upd.in_layout)))
    for b in range(p["batches"]):
        await sim_top.load_cells(dut, t.xb.i_units(), dut.clk)
        x, y = random_images(rng, p["batch"])
        f0 = len(feed)
        if p.get("paced", False):
            res = await _paced(dut, ctrl, x, y)
        else:                                     # back to back
            res, _ = await sim_top.infer(dut, ctrl.result_layout, x, y)
        for _ in range(20000):                    # the last image's feed follows its result
            if len(feed) - f0 >= len(x) * (n_o + n_h):
                break
            await RisingEdge(dut.clk)
        e = {"batch": b, **batch_report(t, res, feed[f0:], x, y),
             "cycles_per_image": (res[-1]["timestamp"] - res[0]["timestamp"]) / max(1, len(res) - 1)}
        report["batches"].append(e)
        assert not e["mismatched_images"] and not e["mismatched_feed"], f"batch {b} differs from golden: {e}"
        e["commands"], e["pulses"], _ = t.step(x.reshape(len(x), -1), y)   # golden programs the board
    report.update({"mismatched_images": 0, "overrun": int(dut.overrun.value)})


def run(params, log_to_terminal=False):
    """One session (params: seed, batches, batch, report; optional device, eta, th)."""
    return harness.run_block(insitu_top(trainer(params)), "mcnn_insitu", "tb.cosim.insitu_main", params,
                             extra_sources=sim_top.SIM_SOURCES, ports_only=True, hdl_clock_ns=sim_top.CLOCK_NS,
                             log_to_terminal=log_to_terminal)
