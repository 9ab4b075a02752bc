"""MUX/ADC sequencer (rtl/adc_sequencer.py, the read lane's conversion side) on a Python PE model
whose ADCs are golden.adc.ADC.

The test plays the pulse side (rtl/bitserial_encoder.py's timing: groups of input_bits slots of
pulse_cycles cycles, back to back or with random idle between groups, `sample` in a slot's last
cycle) and the PE: at `sample` S&H bank slot % 2 holds the slot's SL currents (random, with
zero and beyond-full-scale currents); at `adc_start` the 32 ADCs convert MUX input `adc_sel` of
bank `adc_bank` (golden ADC) and the codes return the next cycle, where `rv_slot`, `rv_sel`,
`rv_rot` label them. Each code is credited to SL rv_sel * 32 + a of its group, as rtl/shift_add.py
does. Expected: every SL of every slot of a group credited exactly once with the golden code of
its current, so that golden shift_add + differential of the credited codes equal those of the
golden codes; `rv_rot` = row_base % 32; `conv_rounds` counts the adc_start cycles. A conversion
late past the next same-parity sample would read the wrong bank and mismatch. Edge cases:
row_base 0, the last rows (row_base + 2 n_out = 128), a group straddling two MUX inputs with
max fan-in (n_out = 12), null groups.

Mutation seen caught: cv_bank latched as ~slot[0] (the other S&H bank converted) -> "conversion
of S&H bank 1, which holds no sample yet".
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

A, ROWS = 32, 128


def _groups(rng, n, max_out):
    out = []
    for t in range(n):
        n_out = [max_out, 1, 0, max_out][t] if t < 4 else int(rng.integers(0, max_out + 1))
        rb = [0, ROWS - 2, 3, A - 1 - max_out][t] if t < 4 else int(rng.integers(0, ROWS - 2 * max(n_out, 1) + 1))
        if t == 4:
            n_out, rb = max_out, ROWS - 2 * max_out       # the last rows
        out.append((rb, n_out))
    return out


if cocotb is not None:
    @cocotb.test()
    async def conversions_cover_the_groups(dut):
        from cocotb.triggers import ReadOnly, RisingEdge

        from golden.adc import ADC
        from golden.datapath import differential, shift_add
        p = harness.params()
        B, P, MO = p["input_bits"], p["pulse_cycles"], p["max_out"]
        rng = np.random.default_rng(p["seed"])
        prng = random.Random(p["seed"])
        adc = ADC()
        fs = adc.lsb_ua * (adc.max_code + 1)
        groups = _groups(rng, p["groups"], MO)
        cur = [rng.uniform(0, 1.3 * fs, (B, ROWS)) for _ in groups]     # > fs: saturating codes
        for g in range(0, len(groups), 6):
            cur[g][:] = 0
        # cycle schedule of the pulse side: (group, slot, sample) per cycle, None when idle
        sched = []
        for g in range(len(groups)):
            while prng.random() < p["idle"]:
                sched.append(None)
            sched += [(g, k, q == P - 1) for k in range(B) for q in range(P)]
        sched += [None] * (P + 4)
        await harness.start_clock_and_reset(dut)
        bank = [np.zeros(ROWS), np.zeros(ROWS)]
        credit = {}                 # (group, slot, row) -> codes credited
        pending, last_sampled, starts = None, {}, 0  # last_sampled: bank -> (group, slot)
        for c in sched:
            if c is not None:
                g, k, smp = c
                rb, n_out = groups[g]
                dut.row_base.value, dut.n_out.value, dut.slot.value = rb, n_out, k
                dut.sample.value = int(smp and n_out != 0)
            else:
                dut.sample.value = 0
            await ReadOnly()
            if pending is not None:             # codes of last cycle's adc_start arrive now
                codes, gk = pending
                g, k = gk
                rb, n_out = groups[g]
                assert int(dut.rv_slot.value) == k and int(dut.rv_rot.value) == rb % A, \
                    (int(dut.rv_slot.value), k, int(dut.rv_rot.value), rb)
                sel = int(dut.rv_sel.value)
                for a in range(A):
                    row = sel * A + a
                    if rb <= row < rb + 2 * n_out:
                        credit.setdefault((g, k, row), []).append(int(codes[a]))
                pending = None
            if int(dut.adc_start.value):
                starts += 1
                b, sel = int(dut.adc_bank.value), int(dut.adc_sel.value)
                assert b in last_sampled, f"conversion of S&H bank {b}, which holds no sample yet"
                codes = adc.convert(bank[b][sel * A:(sel + 1) * A])
                pending = (codes, last_sampled[b])
            if c is not None and c[2] and groups[c[0]][1] != 0:   # the S&H captures at the edge
                bank[c[1] % 2] = cur[c[0]][c[1]].copy()
                last_sampled[c[1] % 2] = (c[0], c[1])
            await RisingEdge(dut.clk)
        for g, (rb, n_out) in enumerate(groups):
            if n_out == 0:
                assert not any(key[0] == g for key in credit), f"null group {g} converted"
                continue
            rows = range(rb, rb + 2 * n_out)
            for k in range(B):
                for r in rows:
                    assert len(credit.get((g, k, r), [])) == 1, f"group {g} slot {k} row {r}: {credit.get((g, k, r))}"
            got = np.array([[credit[(g, k, r)][0] for r in rows] for k in range(B)])
            exp = adc.convert(cur[g][:, rb:rb + 2 * n_out])             # golden codes (B, 2 n_out)
            assert np.array_equal(differential(shift_add(got, axis=0).astype(np.int64)),
                                  differential(shift_add(exp, axis=0).astype(np.int64))), (g, got, exp)
            assert np.array_equal(got, exp), (g, got, exp)
        n = sum(len(v) for v in credit.values())
        assert n == sum(2 * no * B for _, no in groups), n
        assert int(dut.conv_rounds.value) == starts, (int(dut.conv_rounds.value), starts)
        dut._log.info(f"{len(groups)} groups, {n} codes credited, {starts} conversion rounds")


@pytest.mark.parametrize("idle", [0.0, 0.5])
def test_adc_sequencer(idle):
    from rtl.adc_sequencer import AdcSequencer
    harness.run_block(AdcSequencer(ROWS, A, 8, 12), "adc_sequencer", "tb.test_adc_sequencer",
                      {"input_bits": 8, "pulse_cycles": 4, "max_out": 12, "seed": 5, "groups": 40, "idle": idle})
