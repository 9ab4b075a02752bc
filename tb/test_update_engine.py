"""Threshold update engine (rtl/update_engine.py) against golden.update.

Every batch: golden.update.accumulate -> weight_update(M, sh) -> threshold(th) -> commands(mapping)
is the expected command list, followed by the engine's end-of-batch marker. Batches: random
(sizes 1, 7, 100 and the maximum), extreme (all V = 255 with delta at the most negative s17 /
Q1.15 value, or the most positive, for max_batch images: the accumulator bound), all-zero inputs,
extreme (M, sh, th) settings; deltas and V in random order within each image.

The sign rule (rule="sign", elm-board's output layer O): expected golden.update.sign_rule(acc)
through commands; sign-error deltas in {-1, 0, 1} with h in {0, 255} ("sign"), all V zero, the
accumulator bound (max_batch images of V = 255 with delta -2 / +1, the s2 extremes), one non-zero
cell ("single"), and (M, sh, th, clip) settings that must all be ignored. Mutation seen caught:
d = +sign(acc) instead of -sign(acc) (batch 0, item 0).
"""
import random

import numpy as np
import pytest

from tb import harness

# ------------------------------------------------------------------ shared set-up

MAPPINGS = {
    "yao2020": {},
    # small dense layer: BL groups of 8, ragged last group, PEs listed out of order (3, 1, 2)
    "small": dict(layers=[["Dense", "FC", 36, 3]], placement={"FC": [3, 1, 2]}, n_pe=4, n_rows=16, n_bl=8),
}


def make_mapping(name):
    from golden import cnn
    from golden.mapping import build_mapping
    if name in ("li2018", "elm-board"):    # the in-situ networks (issues 15, 16)
        from golden.crossbar import N_PE
        from golden.networks import network
        net = network(name)
        return build_mapping(net.layers, net.placement, n_pe=N_PE)
    spec = MAPPINGS[name]
    if not spec:
        return build_mapping()
    layers = tuple(getattr(cnn, kind)(*args) for kind, *args in spec["layers"])
    return build_mapping(layers=layers, placement={k: tuple(v) for k, v in spec["placement"].items()},
                         n_pe=spec["n_pe"], n_rows=spec["n_rows"], n_bl=spec["n_bl"])


def make_block(p):
    from rtl.update_engine import UpdateEngine, fc_groups
    mp = make_mapping(p["mapping"])
    groups, n_out = fc_groups(mp, p.get("layer", "FC"))
    return UpdateEngine(groups, n_out, n_pe=mp.n_pe, n_rows=mp.n_rows, n_bl=mp.n_bl, **p["block"]), mp


# ------------------------------------------------------------------ cocotb side
try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None

if cocotb is not None:
    from cocotb.triggers import RisingEdge

    def make_batch(kind, size, n_in, n_out, blk, nrng):
        dmin, dmax = -(1 << (blk.delta_bits - 1)), (1 << (blk.delta_bits - 1)) - 1
        vmax = (1 << blk.v_bits) - 1
        if kind == "random":
            v = nrng.integers(0, vmax + 1, (size, n_in))
            v[nrng.random((size, n_in)) < 0.3] = 0                       # ReLU zeros
            # softmax-like deltas: p - onehot in Q1.15, plus a few full-range s17 values
            logits = nrng.normal(0, 3, (size, n_out))
            pr = np.exp(logits - logits.max(1, keepdims=True))
            pr = np.floor(pr / pr.sum(1, keepdims=True) * 32768 + 0.5).astype(np.int64)
            pr[np.arange(size), nrng.integers(0, n_out, size)] -= 32768
            wild = nrng.random((size, n_out)) < 0.05
            pr[wild] = nrng.integers(dmin, dmax + 1, int(wild.sum()))
            return v, pr
        if kind in ("sign", "single"):      # sign-WH: h in {0, 255}, e in {-1, 0, 1} (golden.update.sign_error)
            v = nrng.integers(0, 2, (size, n_in)) * vmax
            e = nrng.choice([-1, 0, 0, 0, 1], (size, n_out))
            if kind == "single":              # one image, one non-zero input, one non-zero error
                v[:], e[:] = 0, 0
                v[0, nrng.integers(n_in)], e[0, nrng.integers(n_out)] = vmax, nrng.choice([-1, 1])
            return v, e
        if kind == "zeros":
            return np.zeros((size, n_in), np.int64), nrng.integers(dmin, dmax + 1, (size, n_out))
        d = {"ext_neg": dmin, "ext_pos": dmax, "q115_neg": -32768}[kind]
        return np.full((size, n_in), vmax, np.int64), np.full((size, n_out), d, np.int64)

    def v_items(vb, b, rng, op):
        """One image's V items: in order, in random order, or sparse (zeros skipped, some values split
        into two items of the same index, which add up: back-to-back updates of one word, or two
        updates one item apart)."""
        n_in = len(vb)
        if b % 3 == 0:
            return [{"op": op, "index": mi, "value": int(vb[mi])} for mi in range(n_in)]
        order = rng.sample(range(n_in), n_in)
        if b % 3 == 1:
            return [{"op": op, "index": mi, "value": int(vb[mi])} for mi in order]
        out, later = [], None
        for mi in order:
            x = int(vb[mi])
            if x and rng.random() < 0.3:
                a = rng.randint(0, x)
                if later is None and rng.random() < 0.5:   # the second part after the next item
                    out.append({"op": op, "index": mi, "value": a})
                    later = {"op": op, "index": mi, "value": x - a}
                    continue
                out += [{"op": op, "index": mi, "value": a}, {"op": op, "index": mi, "value": x - a}]
            elif x:
                out.append({"op": op, "index": mi, "value": x})
            if later is not None and out[-1] is not later:
                out.append(later)
                later = None
        if later is not None:
            out.append(later)
        return out

    def pick_params(kind, acc, th, rng, blk):
        from golden.model import requant_params
        if kind == "auto":  # |dI| spread around the threshold
            scale = max(1.0, 3 * float(np.std(acc)) or float(np.abs(acc).max()))
            return (*requant_params(rng.uniform(1.0, 4.0) * max(th, 1) / scale, blk.mult_bits), th)
        if kind == "max":    # largest |dI|: M = 2**16 - 1, sh = 1 (full-width d_code)
            return (1 << blk.mult_bits) - 1, 1, th
        if kind == "sh_max":  # largest shift: everything rounds to 0 -> only the end marker
            return (1 << blk.mult_bits) - 1, (1 << blk.shift_bits) - 1, th
        if kind == "m0":
            return 0, 5, th
        raise ValueError(kind)

    def clipped(d, clip):
        from golden.hybrid import clip_update
        return clip_update(d, clip) if clip else d

    @cocotb.test()
    async def update_engine_batches(dut):
        from golden.update import accumulate, commands, threshold, weight_update
        p = harness.params()
        blk, mp = make_block(p)
        rng = random.Random(p["seed"])
        nrng = np.random.default_rng(p["seed"])
        await harness.start_clock_and_reset(dut)
        src = harness.StreamSource(dut, "i", dut.clk, blk.in_layout, rng=rng)
        sink = harness.StreamSink(dut, "o", dut.clk, blk.out_layout, rng=random.Random(5))
        cocotb.start_soon(sink.run())
        n_in, n_out = blk.n_in, blk.n_out
        OP = {"delta": 0, "v": 1, "finish": 2}
        n_cmds = n_batches = 0
        for bi, (size, kind, pkind, th, idle, bp, *opt) in enumerate(p["batches"]):
            clip = opt[0] if opt else 0     # update clipping (golden.hybrid.clip_update), 0 = off
            size = blk.max_batch if size == "max" else size
            src.idle, sink.bp = idle, bp
            v, d = make_batch(kind, size, n_in, n_out, blk, nrng)
            acc = accumulate(v, d)
            mult, sh, th = pick_params(pkind, acc, th, rng, blk)
            dut.mult.value, dut.shift.value, dut.th_code.value = mult, sh, th
            dut.clip_code.value = clip
            items = []
            for b in range(size):
                items += [{"op": OP["delta"], "index": n, "value": int(d[b, n])}
                          for n in rng.sample(range(n_out), n_out)]
                items += v_items(v[b], b, rng, OP["v"])
            items.append({"op": OP["finish"], "index": 0, "value": 0})
            if blk.rule == "sign":
                from golden.update import sign_rule
                d_i = sign_rule(acc)
            else:
                d_i = threshold(clipped(weight_update(acc, mult, sh), clip), th)
            expected = [dict(pe=c.pe, row_pos=c.row_pos, bl=c.bl, m=c.m, n=c.n, d_code=c.d_code, end=0, overflow=0)
                        for c in commands(d_i, mp, p.get("layer", "FC"))]
            expected.append(dict(pe=0, row_pos=0, bl=0, m=0, n=0, d_code=0, end=1, overflow=0))
            start = len(sink.items)
            await src.send(items)
            got = (await sink.wait_for(start + len(expected)))[start:]
            for _ in range(20):  # nothing more may come out
                await RisingEdge(dut.clk)
            assert len(sink.items) == start + len(expected), \
                f"batch {bi}: {len(sink.items) - start} items out, expected {len(expected)}"
            for i, (g, e) in enumerate(zip(got, expected)):
                assert g == e, f"batch {bi} ({size} x {kind}, M={mult} sh={sh} th={th}) item {i}: got {g}, expected {e}"
            n_cmds += len(expected) - 1
            n_batches += 1
            dut._log.info(f"batch {bi}: {size} images {kind}, M={mult} sh={sh} th={th} clip={clip}, "
                          f"idle {idle} bp {bp}: "
                          f"{len(expected) - 1} commands, max |acc| {int(np.abs(acc).max())}")
        dut._log.info(f"{n_batches} batches, {n_cmds} commands compared")

    @cocotb.test()
    async def update_engine_overflow(dut):
        """max_batch + 1 images: the end marker flags overflow (and the next batch is exact again)."""
        p = harness.params()
        if not p.get("overflow"):
            return
        from golden.update import accumulate, commands, threshold, weight_update
        blk, mp = make_block(p)
        rng = random.Random(p["seed"] + 1)
        nrng = np.random.default_rng(p["seed"] + 1)
        await harness.start_clock_and_reset(dut)
        src = harness.StreamSource(dut, "i", dut.clk, blk.in_layout, idle=p["idle"], rng=rng)
        sink = harness.StreamSink(dut, "o", dut.clk, blk.out_layout, backpressure=p["bp"], rng=random.Random(6))
        cocotb.start_soon(sink.run())
        for size, flag in ((blk.max_batch + 1, 1), (3, 0)):
            v, d = make_batch("random", size, blk.n_in, blk.n_out, blk, nrng)
            mult, sh, th = pick_params("auto", accumulate(v, d), 15, rng, blk)
            dut.mult.value, dut.shift.value, dut.th_code.value = mult, sh, th
            items = []
            for b in range(size):
                items += [{"op": 0, "index": n, "value": int(d[b, n])} for n in range(blk.n_out)]
                items += [{"op": 1, "index": mi, "value": int(v[b, mi])} for mi in range(blk.n_in)]
            start = len(sink.items)
            await src.send(items + [{"op": 2, "index": 0, "value": 0}])
            while not (len(sink.items) > start and sink.items[-1]["end"]):
                await RisingEdge(dut.clk)
            got = sink.items[start:]
            assert got[-1]["overflow"] == flag, f"{size} images: overflow {got[-1]['overflow']}, expected {flag}"
            if not flag:
                exp = commands(threshold(weight_update(accumulate(v, d), mult, sh), th), mp, p.get("layer", "FC"))
                assert [(g["m"], g["n"], g["d_code"]) for g in got[:-1]] == [(c.m, c.n, c.d_code) for c in exp]


    @cocotb.test()
    async def update_engine_latency(dut):
        """Measured timing (the docstring's figures): one item per cycle while accumulating; cycles
        from the FINISH transfer to the first command, to the end marker and to `i` ready again
        (no back-pressure)."""
        p = harness.params()
        if not p.get("latency"):
            return
        blk, mp = make_block(p)
        rng = random.Random(p["seed"] + 2)
        nrng = np.random.default_rng(p["seed"] + 2)
        await harness.start_clock_and_reset(dut)
        src = harness.StreamSource(dut, "i", dut.clk, blk.in_layout, rng=rng)
        sink = harness.StreamSink(dut, "o", dut.clk, blk.out_layout)
        cocotb.start_soon(sink.run())
        v, d = make_batch("random", 2, blk.n_in, blk.n_out, blk, nrng)
        dut.mult.value, dut.shift.value, dut.th_code.value = (1 << blk.mult_bits) - 1, 1, 0   # every cell
        dut.clip_code.value = 0
        items = []
        for b in range(2):
            items += [{"op": 0, "index": n, "value": int(d[b, n])} for n in range(blk.n_out)]
            items += [{"op": 1, "index": mi, "value": int(v[b, mi])} for mi in range(blk.n_in)]
        items.append({"op": 2, "index": 0, "value": 0})
        ev = {}
        done = False

        async def monitor():
            from cocotb.triggers import ReadOnly
            cyc = 0
            while not done:
                await RisingEdge(dut.clk)
                await ReadOnly()
                cyc += 1
                fire = int(dut.i__valid.value) and int(dut.i__ready.value)
                if fire:
                    ev.setdefault("first_item", cyc)
                    if "finish" not in ev and harness.unpack(blk.in_layout, int(dut.i__payload.value))["op"] == 2:
                        ev["finish"] = cyc
                if "finish" in ev and cyc > ev["finish"]:
                    if int(dut.o__valid.value):
                        ev.setdefault("first_cmd", cyc)
                        if harness.unpack(blk.out_layout, int(dut.o__payload.value))["end"]:
                            ev.setdefault("end", cyc)
                    if int(dut.i__ready.value):
                        ev.setdefault("ready", cyc)
        cocotb.start_soon(monitor())
        await src.send(items)
        while "ready" not in ev:
            await RisingEdge(dut.clk)
        done = True
        got = {"items": ev["finish"] - ev["first_item"], "first_cmd": ev["first_cmd"] - ev["finish"],
               "end": ev["end"] - ev["finish"], "ready": ev["ready"] - ev["finish"]}
        dut._log.info(f"latency: {got} ({len(items) - 1} items before FINISH)")
        assert got == dict(p["latency"], items=len(items) - 1), f"measured {got}, expected {p['latency']}"


# ------------------------------------------------------------------ pytest side
# (batch size, data, (M, sh) choice, th_code, idle on i, back-pressure on o)
B_YAO = [[1, "random", "auto", 15, 0, 0], [7, "random", "auto", 15, 0.3, 0.4], [100, "random", "auto", 15, 0, 0],
         ["max", "ext_neg", "max", 15, 0, 0], ["max", "ext_pos", "max", 15, 0.2, 0.5],
         [100, "q115_neg", "auto", 15, 0, 0.3], [3, "zeros", "auto", 0, 0, 0], [5, "random", "auto", 0, 0.5, 0.2],
         [4, "random", "sh_max", 15, 0, 0], [2, "random", "m0", 15, 0, 0], [3, "random", "auto", (1 << 16) - 1, 0, 0],
         [20, "random", "auto", 30, 0.3, 0.6],
         # update clipping (7th field): 30 codes as golden's replicated training, tiny, the maximum
         [100, "random", "auto", 15, 0, 0, 30], [7, "random", "auto", 15, 0.3, 0.4, 30],
         ["max", "ext_neg", "max", 15, 0, 0, 255], [20, "random", "auto", 0, 0, 0.3, 1],
         [3, "zeros", "auto", 0, 0, 0, 30]]
B_SMALL = [[1, "random", "auto", 15, 0.2, 0.3], [4, "random", "auto", 15, 0.2, 0.3],
           ["max", "ext_neg", "max", 15, 0.2, 0.3], ["max", "ext_pos", "max", 15, 0, 0],
           ["max", "random", "auto", 3, 0.2, 0.3], [2, "zeros", "auto", 0, 0.2, 0.3],
           [3, "random", "max", 15, 0.2, 0.3], [2, "random", "sh_max", 0, 0, 0.5],
           [4, "random", "auto", 3, 0.2, 0.3, 5], ["max", "random", "max", 15, 0, 0, 30]]

# sign rule: (M, sh, th, clip) vary and must not matter
B_SIGN = [[1, "sign", "auto", 15, 0, 0], [10, "sign", "m0", 0, 0.3, 0.5], [16, "sign", "sh_max", 15, 0.2, 0.6, 1],
          [3, "zeros", "auto", 0, 0, 0.3], ["max", "ext_neg", "max", (1 << 16) - 1, 0, 0],
          ["max", "ext_pos", "auto", 15, 0.2, 0.5, 30], [1, "single", "m0", 15, 0, 0.5],
          [7, "sign", "max", 3, 0.5, 0.8]]

CONFIGS = [
    # latency: cycles from the FINISH transfer (the docstring's figures)
    dict(mapping="yao2020", block=dict(), batches=B_YAO, latency=dict(first_cmd=16, end=1936, ready=2129)),
    dict(mapping="small", block=dict(max_batch=5), batches=B_SMALL, overflow=True, idle=0.2, bp=0.3),
    # the accumulator RAMs return the new data when an address is read as it is written (synthesis
    # leaves that case undefined: no_rw_check): the results must not depend on it
    dict(mapping="small", block=dict(max_batch=5, collision_new=True), batches=B_SMALL[:5], idle=0.2, bp=0.3),
    # li2018 in situ (issue 15): the output layer O (Q1.15 deltas) and the hidden layer H, whose deltas
    # (T << shift, rtl/hidden_error.py: s26 for T s17 and shifts up to 9) are wider
    dict(mapping="li2018", layer="O", block=dict(max_batch=8), batches=B_SMALL[:6], idle=0.2, bp=0.3),
    dict(mapping="li2018", layer="H", block=dict(max_batch=8, delta_bits=26), batches=B_SMALL[:6], idle=0.2, bp=0.3),
    # elm-board's output layer O by the sign rule (issue 16): sign errors need 2 bits
    dict(mapping="elm-board", layer="O", block=dict(max_batch=16, delta_bits=2, rule="sign"), batches=B_SIGN),
]


def _cfg_id(c):
    layer = "-" + c["layer"] if "layer" in c else ""
    rule = "-" + c["block"]["rule"] if "rule" in c["block"] else ""
    return c["mapping"] + layer + rule + ("-collision_new" if c["block"].get("collision_new") else "")


@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
def test_update_engine(cfg):
    p = dict(cfg, seed=4321)
    blk, _ = make_block(p)
    harness.run_block(blk, "update_engine", "tb.test_update_engine", p)
