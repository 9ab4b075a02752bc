"""Sign-WH training of the board ELM's output layer through rtl/sign_path.py (UpdateEngine with the
sign rule -> PairPulser) against golden InsituTrainer on elm-board, over `batches` batches of MNIST
training images: golden runs the forward on its li2018 board A (fresh-cell hidden layer, binary
step), the sign errors and the update; the path gets each image's errors e (DELTA items, random
order) and h (V items, all 64, random order) and a FINISH per batch; its pulses drive board B, a
copy of the fresh A (Crossbar.open_loop per request). Checked after each batch: the command stream
(tap) equals golden's update.commands of layer O and its end marker, one `done`, the pulse count
and every conductance of B equal A's (golden programs A through golden/pair_pulser.py in
InsituTrainer.step). Random idle on the input, back-pressure on req and done.

Mutation seen caught: the engine's threshold compare left on in sign mode (th_code at its reset value
15: batch 0 got 1 item - the end marker - expected 444).
"""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


def _items(rng, e, h):
    """One image's engine items: its errors (DELTA) and inputs (V), each in random order."""
    out = [{"op": 0, "index": k, "value": int(e[k])} for k in rng.sample(range(len(e)), len(e))]
    return out + [{"op": 1, "index": j, "value": int(h[j])} for j in rng.sample(range(len(h)), len(h))]


if cocotb is not None:
    @cocotb.test()
    async def sign_training_against_golden(dut):
        from golden.crossbar import Crossbar
        from golden.devices import RESET, SET
        from golden.idx import default_data_dir, load_dataset
        from golden.insitu import InsituConfig, InsituTrainer, flat_inputs
        from golden.update import commands
        from rtl.sign_path import default_instances
        p = harness.params()
        path = default_instances()["sign_path"]
        t = InsituTrainer(Crossbar("li2018", seed=p["seed"]), "elm-board", InsituConfig(batch=p["batch"]))
        b_xb = t.xb.copy()                                   # board B: programmed by the RTL's pulses
        ds = load_dataset(default_data_dir())
        x, y = flat_inputs(t.net, ds.train_images[:p["batch"] * p["batches"]]), ds.train_labels.astype(np.int64)
        rng = random.Random(p["seed"])
        await harness.start_clock_and_reset(dut)
        dut.pulse_cycles.value = 3
        src = harness.StreamSource(dut, "i", dut.clk, path.in_layout, idle=p["idle"], rng=random.Random(3))
        req = harness.StreamSink(dut, "req", dut.clk, path.req_layout, backpressure=p["bp"], rng=random.Random(4))
        done = harness.StreamSink(dut, "done", dut.clk, None, backpressure=p["bp"], rng=random.Random(5))
        cmds = []
        for c in (req.run(), done.run(), harness.tap(dut, "cmd", cmds)):
            cocotb.start_soon(c)
        n_cmd = n_req = 0
        for b in range(p["batches"]):
            xb_, yb = x[b * p["batch"]:(b + 1) * p["batch"]], y[b * p["batch"]:(b + 1) * p["batch"]]
            acts, logits = t.forward(xb_)
            e = t.backward(acts, logits, yb)[-1]
            d = t.updates(acts, [None, e])[-1]
            exp = [dict(pe=c.pe, row_pos=c.row_pos, bl=c.bl, m=c.m, n=c.n, d_code=c.d_code, end=0, overflow=0)
                   for c in commands(d, t.mapping, "O")] + [dict(pe=0, row_pos=0, bl=0, m=0, n=0, d_code=0, end=1,
                                                                 overflow=0)]
            items = [it for i in range(len(xb_)) for it in _items(rng, e[i], acts[-1][i])]
            await src.send(items + [{"op": 2, "index": 0, "value": 0}])
            await done.wait_for(b + 1, timeout_cycles=20 * len(exp) + 100 * len(items) + 20000)
            got = [harness.unpack(path.cmd_layout, v) for v in cmds[n_cmd:]]
            harness.check(got, exp, f"batch {b} commands")
            p0 = t.pulses
            t.step(xb_, yb)                                  # golden programs board A
            for r in req.items[n_req:]:
                b_xb.open_loop(r["pe"], r["row"], r["bl"], SET if r["op"] == 0 else RESET, 1)
            assert len(req.items) - n_req == t.pulses - p0 == 2 * (len(exp) - 1), \
                f"batch {b}: pulses RTL {len(req.items) - n_req}, golden {t.pulses - p0}"
            assert int(dut.pulses.value) == len(req.items)
            assert np.array_equal(t.xb.g, b_xb.g), \
                f"batch {b}: conductances differ at {np.argwhere(t.xb.g != b_xb.g)[:5].tolist()}"
            dut._log.info(f"batch {b}: {len(exp) - 1} commands, {len(req.items) - n_req} pulses equal golden's; "
                          f"conductances equal; batch error {float((logits.argmax(1) != yb).mean() * 100):.0f} %")
            n_cmd, n_req = len(cmds), len(req.items)
        assert len(done.items) == p["batches"] and n_cmd > 2 * p["batches"]


def test_sign_path():
    from rtl.sign_path import default_instances
    harness.run_block(default_instances()["sign_path"], "sign_path", "tb.test_sign_path",
                      {"seed": 2, "batches": 6, "batch": 10, "idle": 0.2, "bp": 0.4})


def test_sign_path_verilog():
    harness.lint_default_instances("rtl.sign_path")
