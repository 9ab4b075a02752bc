"""Bit-serial encoder (rtl/bitserial_encoder.py, the read lane's pulse side) against
golden.datapath.bitserial_encode.

Read groups arrive on `cmd` with random idle cycles; the outputs are recorded cycle by cycle. A
group accepted at cycle f pulses slot k in cycles f+1+k*P .. f+(k+1)*P: `bl` is the golden bit
plane k of its patch (0 for a null group, n_out = 0), `pulse` is high for a non-null group,
`sample` (= `sh_sample`) in the slot's last cycle with `slot` = k, `sh_bank` = k % 2; `group_end`
is high in the group's last cycle only, and the next group is accepted in that cycle when offered
(back to back: exactly input_bits * pulse_cycles cycles per group). Outside groups everything is
0. Edge cases: all-zero and all-ones patches (full-scale inputs), null groups, n_out = max_out.

Mutation seen caught: the patch shift register of BL j loaded from `cmd.payload.patch[j + 1]`
(BLs swapped) -> "group 2 slot 0 cycle 0: got {'bl': 55858, ...}, expected {'bl': 46181, ...}".
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def groups_with_idle(dut):
        from cocotb.triggers import ReadOnly, RisingEdge

        from golden.datapath import bitserial_encode
        from rtl.bitserial_encoder import BitserialEncoder
        p = harness.params()
        blk = BitserialEncoder(**p["block"])
        N, B, P, MO = blk.n_bl, blk.input_bits, blk.pulse_cycles, p["block"]["max_out"]
        rng = np.random.default_rng(p["seed"])
        cmds = []
        for t in range(p["groups"]):
            x = rng.integers(0, 1 << B, N)
            if t % 5 == 0:
                x[:] = (1 << B) - 1                 # full-scale inputs: every BL in every slot
            elif t % 5 == 1:
                x[:] = 0
            n_out = 0 if t % 7 == 3 else (MO if t % 4 == 0 else int(rng.integers(1, MO + 1)))
            cmds.append({"patch": sum(int(v) << (B * j) for j, v in enumerate(x)), "x": x,
                         "row_base": int(rng.integers(0, 128 - 2 * MO + 1)), "n_out": n_out, "tag": t & 0xFF})
        await harness.start_clock_and_reset(dut)
        src = harness.StreamSource(dut, "cmd", dut.clk, blk.cmd_layout, idle=p["idle"], rng=random.Random(p["seed"]))
        trace = []

        async def monitor():
            while True:
                await ReadOnly()
                trace.append({k: int(getattr(dut, n).value) for k, n in [
                    ("fire", "cmd__valid"), ("ready", "cmd__ready"), ("bl", "bl"), ("pulse", "pulse"),
                    ("sample", "sample"), ("sh_sample", "sh_sample"), ("sh_bank", "sh_bank"), ("slot", "slot"),
                    ("end", "group_end"), ("row_base", "row_base"), ("n_out", "n_out"), ("tag", "tag")]})
                trace[-1]["fire"] &= trace[-1]["ready"]
                await RisingEdge(dut.clk)
        cocotb.start_soon(monitor())
        await src.send([{k: v for k, v in c.items() if k != "x"} for c in cmds])
        for _ in range(B * P + 4):
            await RisingEdge(dut.clk)
        fires = [t for t, r in enumerate(trace) if r["fire"]]
        assert len(fires) == len(cmds), (len(fires), len(cmds))
        owned = set()
        for f, c in zip(fires, cmds):
            planes = bitserial_encode(c["x"], B)                # (B, N) golden
            real = c["n_out"] != 0
            for k in range(B):
                for q in range(P):
                    t = f + 1 + k * P + q
                    r, last = trace[t], q == P - 1
                    owned.add(t)
                    bl = sum(int(planes[k, j]) << j for j in range(N)) if real else 0
                    exp = {"bl": bl, "pulse": int(real), "sample": int(real and last), "sh_sample": int(real and last),
                           "sh_bank": k % 2, "slot": k, "end": int(k == B - 1 and last), "row_base": c["row_base"],
                           "n_out": c["n_out"], "tag": c["tag"]}
                    got = {n: r[n] for n in exp}
                    assert got == exp, f"group {c['tag']} slot {k} cycle {q}: got {got}, expected {exp}"
        for t, r in enumerate(trace):
            if t not in owned:
                assert (r["bl"], r["pulse"], r["sample"], r["end"]) == (0, 0, 0, 0), f"cycle {t} outside a group: {r}"
        if p["idle"] == 0:                               # back to back: exactly B * P cycles per group
            assert all(b - a == B * P for a, b in zip(fires, fires[1:])), [b - a for a, b in zip(fires, fires[1:])]
        n_slots = B * sum(c["n_out"] != 0 for c in cmds)
        assert int(dut.slot_reads.value) == n_slots, (int(dut.slot_reads.value), n_slots)
        # activity counters (golden/activity.py): the ones of the pulsed bit planes, 2 n_out SLs per slot
        n_bl = sum(int(bitserial_encode(c["x"], B).sum()) for c in cmds if c["n_out"] != 0)
        n_sl = B * sum(2 * c["n_out"] for c in cmds)
        got = (int(dut.bl_pulses.value), int(dut.sl_selections.value))
        assert got == (n_bl, n_sl), f"bl_pulses, sl_selections {got}, expected {(n_bl, n_sl)}"
        dut._log.info(f"{len(cmds)} groups, {len(trace)} cycles compared")


@pytest.mark.parametrize("idle", [0.0, 0.6])
def test_bitserial_encoder(idle):
    from rtl.bitserial_encoder import BitserialEncoder
    block = dict(n_bl=16, n_rows=128, input_bits=8, max_out=12, pulse_cycles=4)
    harness.run_block(BitserialEncoder(**block), "bitserial_encoder", "tb.test_bitserial_encoder",
                      {"block": block, "seed": 11, "groups": 30, "idle": idle})
