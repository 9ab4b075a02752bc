"""Step sequencer (rtl/sequencer.py) against the layer sequence of the golden model.

The expected steps are the weight layers of a network of golden/networks.py in order (yao2020: three
steps; li2018: two), with their constants from golden/ alone: input map (H, W, C) from
golden.cnn.shapes, the output positions of the convolution (a dense layer as a convolution whose
kernel covers its input: 1 x 1), the output channels, the
groups per position (the most read groups golden.mapping.build_mapping puts on one PE) and the
requant multiplier of a (made-up) requant table. The test plays the rest of the controller: an
image arrives (`img_full`) at random times, possibly while the previous one is still running; each
step ends (`step_done`) after a random time, the issuer's end (`issue_end`) comes at a random
point of it, the logits (`logits_ready`) are held a random time. Checked every step: `step`, `step_oh`,
`sc`, `issue`; per image: one `start` pulse, `restart` with it and with each step advance,
`running` from the start until the logits, `cycles` = the running cycles before the logits, and
`timestamp` counting every cycle. `map_hold` (the training feeder still reads the last map) is raised
at random with an image's logits and dropped during the next image's step that writes that map (the
second to last): that step (and no other) must not issue while it is up, and must issue once it falls.

Mutations seen caught: the constants' table indexed with `step + 1` instead of `step` (the
constants of the wrong layer); the map-writing step entered without its wait (`enter & map_hold`
never set: li2018's step 0 issues under the hold); the wait on every step's entry instead of step
n_steps - 2's (yao2020's step 0 waits).
"""
import random

import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

REQUANT = {"C1": (301, 12), "C3": (1234, 14), "H": (77, 9)}


def golden_steps(name="yao2020"):
    """-> the expected constants per weight layer of network `name`, from golden/ only."""
    from golden import cnn
    from golden.networks import network
    net = network(name)
    mp = net.mapping()
    shapes = cnn.shapes(net.layers, net.input_shape)
    out, shape = [], net.input_shape
    for i, L in enumerate(net.layers):
        if isinstance(L, cnn.Pool):
            shape = shapes[i]
            continue
        h, w, c = shape
        if isinstance(L, cnn.Conv):
            oh, ow, n_out = h + 2 * L.pad - L.k + 1, w + 2 * L.pad - L.k + 1, L.out_ch
        else:
            oh, ow, n_out = 1, 1, L.n_out
        pes = [g.pe for g in mp.groups[L.name]]
        ng = max(pes.count(p) for p in set(pes))
        out.append({"h": h, "w": w, "c": c, "wc": w * c, "ng1": ng - 1, "oh1": oh - 1, "ow1": ow - 1,
                    "no1": n_out - 1, "no2": max(n_out - 2, 0), "m": REQUANT.get(L.name, (0, 0))[0]})
        shape = shapes[i]
    return out


def make_block(name="yao2020"):
    from golden.networks import network
    from rtl.controller import plan
    from rtl.sequencer import Sequencer
    net = network(name)
    return Sequencer(plan(net.layers, net.mapping(), REQUANT, net.input_shape))


if cocotb is not None:
    class Env:
        """The cycle counter, the `start` / `restart` pulses and the running cycles, watched every cycle."""

        def __init__(self, dut):
            self.dut, self.cycle, self.starts, self.restarts, self.run_cycles = dut, 0, [], [], 0
            self.holds = 0          # steps seen waiting for map_hold

        async def watch(self):
            from cocotb.triggers import ReadOnly, RisingEdge
            d, ts = self.dut, None
            while True:
                await ReadOnly()
                t = int(d.timestamp.value)
                assert ts is None or t == (ts + 1) & 0xFFFFFFFF, f"timestamp {ts} -> {t}"
                ts = t
                if int(d.start.value):
                    self.starts.append(self.cycle)
                    self.run_cycles = 0
                if int(d.restart.value):
                    self.restarts.append(self.cycle)
                self.run_cycles += int(d.running.value)
                await RisingEdge(d.clk)
                self.cycle += 1

    async def cycles(dut, n):
        from cocotb.triggers import RisingEdge
        for _ in range(n):
            await RisingEdge(dut.clk)

    async def pulse(dut, sig):
        from cocotb.triggers import RisingEdge
        sig.value = 1
        await RisingEdge(dut.clk)
        sig.value = 0

    async def run_image(dut, env, exp, rng, n, next_image):
        """Image `n` through the steps; `next_image`: the next image arrives during this one."""
        from cocotb.triggers import ReadOnly, RisingEdge
        from rtl.sequencer import Sequencer
        for _ in range(200):
            await ReadOnly()
            if len(env.starts) > n:
                break
            await RisingEdge(dut.clk)
        assert len(env.starts) == n + 1, "no start"
        await RisingEdge(dut.clk)
        for si, k in enumerate(exp):
            await cycles(dut, rng.randint(2, 6))
            await ReadOnly()
            assert int(dut.running.value) == 1
            assert int(dut.step.value) == si and int(dut.step_oh.value) == 1 << si, \
                f"step {int(dut.step.value)} / {int(dut.step_oh.value):b}, expected {si}"
            sc = Sequencer.const_layout.from_bits(int(dut.sc.value))
            got = {n: int(getattr(sc, n)) for n, _ in Sequencer.const_layout}
            assert got == k, f"step {si}: constants {got}, expected {k}"
            if si == len(exp) - 2 and int(dut.map_hold.value):
                await map_wait(dut, env, rng, si)
            assert int(dut.issue.value) == 1, f"step {si}: issuer not running"
            await RisingEdge(dut.clk)
            await pulse(dut, dut.issue_end)
            await ReadOnly()
            assert int(dut.issue.value) == 0, f"step {si}: issuer still running after its end"
            await RisingEdge(dut.clk)
            await cycles(dut, rng.randint(0, 8))
            if si == 1 and next_image:
                dut.img_full.value = 1
            if si < len(exp) - 1:
                n_re = len(env.restarts)
                await pulse(dut, dut.step_done)
                if si == 0 and not next_image:
                    dut.img_full.value = 0          # C1 done: the image buffer is free
                await ReadOnly()
                assert len(env.restarts) == n_re + 1, f"step {si}: no restart with the step advance"
                await RisingEdge(dut.clk)
        dut.logits_ready.value = 1
        dut.map_hold.value = int(rng.random() < 0.5)   # (the feeder's claim of this image)
        await RisingEdge(dut.clk)
        run = env.run_cycles
        await ReadOnly()
        assert int(dut.running.value) == 0, "still running after the logits"
        assert int(dut.cycles.value) == run - 1, f"cycles {int(dut.cycles.value)}, expected {run - 1}"
        await RisingEdge(dut.clk)
        await cycles(dut, rng.randint(0, 5))
        dut.logits_ready.value = 0

    async def map_wait(dut, env, rng, si):
        """The map-writing step under `map_hold`: no issue until the hold falls, then issue."""
        from cocotb.triggers import ReadOnly, RisingEdge
        for _ in range(rng.randint(1, 6)):
            assert int(dut.issue.value) == 0, f"step {si} issues while map_hold"
            await RisingEdge(dut.clk)
            await ReadOnly()
        await RisingEdge(dut.clk)
        dut.map_hold.value = 0
        await RisingEdge(dut.clk)
        await ReadOnly()
        env.holds += 1

    @cocotb.test()
    async def sequencer_images(dut):
        p = harness.params()
        exp = golden_steps(p["network"])
        rng = random.Random(p["seed"])
        for s in ("img_full", "step_done", "logits_ready", "issue_end", "map_hold"):
            getattr(dut, s).value = 0
        await harness.start_clock_and_reset(dut)
        env = Env(dut)
        cocotb.start_soon(env.watch())
        dut.img_full.value = 1
        for n in range(p["images"]):
            nxt = n < p["images"] - 1 and rng.random() < 0.5
            await run_image(dut, env, exp, rng, n, nxt)
            if not nxt:
                dut.img_full.value = 0
                await cycles(dut, rng.randint(0, 10))
                dut.img_full.value = int(n < p["images"] - 1)
        assert len(env.starts) == p["images"]
        assert env.holds >= 2, f"only {env.holds} waits for map_hold seen"
        dut._log.info(f"{p['images']} images, {len(exp)} steps each, {len(env.restarts)} restarts, "
                      f"{env.holds} waits for map_hold")


@pytest.mark.parametrize("network,seed", [("yao2020", 5), ("li2018", 6)])
def test_sequencer(network, seed):
    harness.run_block(make_block(network), "sequencer", "tb.test_sequencer",
                      dict(seed=seed, images=10, network=network))
