"""MUX/ADC sequencer (rtl/adc_sequencer.py) with a modelled encoder, S&H and ADCs.

The testbench plays the world around the sequencer, cycle by cycle:
  * the bit-serial encoder: slot tokens (random idle), a `width`-cycle pulse after each accepted
    token with the `sample` strobe in its last cycle, the next token offered `width + gap`
    cycles after the previous transfer (the timing of rtl/bitserial_encoder.py);
  * the two S&H groups: on sh_sample[g] the group holds the (read, slot) being pulsed;
  * A ADCs with a fixed latency: on adc_convert[a] the ADC converts MUX input adc_sel[a] of group
    adc_grp[a], i.e. SL row adc_sel[a]*A + a, and `latency` cycles later returns the code the test
    chose for that (read, slot, row): golden.adc.ADC.convert of random SL currents (saturating
    ones and exact half-LSB ties included). The model flags a convert on a busy ADC, a convert of
    an empty group or of a row outside the read's range, and a group re-sampled while one of its
    conversions is running.
The output stream must equal, in order, read by read, slot by slot, rows ascending, the codes the
test chose for each (read, slot, row). Clean scenarios (no idle, no back-pressure, fixed row
range) measure the cycles per slot against max(width + gap, ceil(count/A) x latency) and the
documented max(width + gap, ceil(count/A) x (latency + 2), count).
"""
import math
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


def _codes(nrng, n_reads, slots, rows, adc_bits):
    """ADC codes per read: (slots, rows), from golden.adc.ADC.convert on random currents."""
    from golden.adc import ADC
    adc = ADC(adc_bits)
    fs = adc.lsb_ua * (1 << adc_bits)
    cur = nrng.uniform(0, 1.1 * fs, (n_reads, slots, rows))                       # ~9 % saturate
    ties = nrng.random(cur.shape) < 0.1
    cur[ties] = (nrng.integers(0, 1 << adc_bits, ties.sum()) + 0.5) * adc.lsb_ua   # exact half-LSB
    cur[:, :, :3] = [0.0, fs, -1.0]                                                 # zero, full scale, below
    return adc.convert(cur).astype(np.int64)


if cocotb is not None:
    async def _world(dut, blk, reads, codes, width, gap, lat, idle, rng, log):
        """Encoder tokens + sample strobe, S&H groups and the ADCs (see module docstring)."""
        from cocotb.triggers import ReadOnly, RisingEdge
        A, cb, sb = blk.adcs, blk.code_bits, blk.sel_bits
        T = width + gap
        tokens = [(r, k) for r in range(len(reads)) for k in range(blk.slots)]
        j, offer_at, offering = 0, 0, False
        sample_at, sample_tok = -1, None
        held, held_ver = [None, None], [0, 0]
        busy = [False] * A
        events = {}
        cyc = 0
        while True:
            sample_now = sample_at == cyc
            dut.sample.value = int(sample_now)
            if j < len(tokens) and cyc >= offer_at and not offering and rng.random() >= idle:
                offering = True
            dut.slot__valid.value = int(offering)
            if offering:
                k = tokens[j][1]
                dut.slot__payload.value = harness.pack(blk.slot_layout, slot=k, last=int(k == blk.slots - 1))
            done, word = 0, 0
            for a, code, g, ver in events.pop(cyc, []):
                assert held_ver[g] == ver, f"cycle {cyc}: S&H group {g} re-sampled during ADC {a}'s conversion"
                busy[a] = False
                done |= 1 << a
                word |= code << (a * cb)
            dut.adc_done.value = done
            dut.adc_code.value = word
            await ReadOnly()
            sh = int(dut.sh_sample.value)
            if sh:
                assert sample_now and sh in (1, 2), f"cycle {cyc}: sh_sample {sh:02b} (sample strobe {sample_now})"
                g = sh >> 1
                held[g] = sample_tok
                held_ver[g] += 1
            else:
                assert not sample_now, f"cycle {cyc}: sample strobe but no S&H group sampled"
            if offering and int(dut.slot__ready.value):
                log["tokens"].append(cyc)
                sample_at, sample_tok = cyc + width, j
                offer_at, offering = cyc + T, False
                j += 1
            conv = int(dut.adc_convert.value)
            if conv:
                sels, grps = int(dut.adc_sel.value), int(dut.adc_grp.value)
                for a in range(A):
                    if not conv >> a & 1:
                        continue
                    sel, g = (sels >> (a * sb)) & ((1 << sb) - 1), grps >> a & 1
                    row = sel * A + a
                    assert not busy[a], f"cycle {cyc}: convert on busy ADC {a}"
                    assert held[g] is not None, f"cycle {cyc}: ADC {a} converts empty S&H group {g}"
                    r, k = tokens[held[g]]
                    first, count = reads[r]
                    assert first <= row < first + count, \
                        f"cycle {cyc}: ADC {a} converts row {row}, outside read {r}'s rows {first}..{first + count - 1}"
                    busy[a] = True
                    events.setdefault(cyc + lat, []).append((a, int(codes[r][k, row]), g, held_ver[g]))
                    log["conversions"] += 1
            await RisingEdge(dut.clk)
            cyc += 1

    async def _scenario(dut, blk, sc, nrng, seed):
        from tb import readpath_util as ru
        S, A = blk.rows, blk.adcs
        rng = random.Random(seed)
        if "count" in sc:                                   # fixed range: throughput measurement
            reads = [(sc.get("first", 0), sc["count"])] * sc["reads"]
        else:
            edge = [(0, S), (S - 1, 1), (0, 1), (A // 2, A), (1, S - 1), (A - 1, 2)]
            reads = edge + [(f, rng.randint(1, S - f)) for f in (rng.randrange(S) for _ in range(sc["reads"]))]
        codes = _codes(nrng, len(reads), blk.slots, S, blk.code_bits)
        expected = [{"code": int(codes[r][k, row]), "slot": k, "row": row}
                    for r, (first, count) in enumerate(reads) for k in range(blk.slots)
                    for row in range(first, first + count)]
        await ru.reset(dut)
        tasks = ru.Tasks()
        src = harness.StreamSource(dut, "cmd", dut.clk, blk.cmd_layout, idle=sc["idle"], rng=random.Random(seed + 1))
        sink = harness.StreamSink(dut, "o", dut.clk, blk.out_layout, backpressure=sc["bp"], rng=random.Random(seed + 2))
        log = {"tokens": [], "conversions": 0}
        tasks.start(sink.run())
        tasks.start(_world(dut, blk, reads, codes, sc["width"], sc["gap"], sc["lat"], sc["idle"],
                           random.Random(seed + 3), log))
        tasks.start(src.send([{"first": f, "count": c} for f, c in reads]))
        got = await sink.wait_for(len(expected), timeout_cycles=200 * len(expected) + 10_000)
        for _ in range(sc["lat"] + 5):
            from cocotb.triggers import RisingEdge
            await RisingEdge(dut.clk)
        tasks.cancel()
        dut.slot__valid.value = 0
        dut.sample.value = 0
        dut.adc_done.value = 0
        assert len(got) == len(expected), f"{len(got)} codes out, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"code {i}: got {g}, expected {e}"
        assert log["conversions"] == len(expected), f"{log['conversions']} conversions for {len(expected)} codes"
        msg = (f"width {sc['width']} gap {sc['gap']} latency {sc['lat']} idle {sc['idle']} bp {sc['bp']}: "
               f"{len(reads)} reads, {len(expected)} codes compared")
        if "count" in sc:
            t = log["tokens"][blk.slots:]                       # steady state: skip the first read
            per_slot = (t[-1] - t[0]) / (len(t) - 1)
            convs = math.ceil(sc["count"] / A)
            T = sc["width"] + sc["gap"]
            bound = max(T, convs * sc["lat"])
            model = max(T, convs * (sc["lat"] + 2), sc["count"])
            msg += (f"; count {sc['count']}: {per_slot:.2f} cycles/slot, bound max(T, conv x lat) = {bound}, "
                    f"documented max(T, conv x (lat+2), count) = {model}")
            assert per_slot <= model + 0.01, msg
        dut._log.info(msg)
        return msg

    @cocotb.test()
    async def adc_sequencer(dut):
        from rtl.adc_sequencer import AdcSequencer
        p = harness.params()
        blk = AdcSequencer(**p["block"])
        nrng = np.random.default_rng(p["seed"])
        dut.slot__valid.value = 0
        dut.sample.value = 0
        dut.adc_done.value = 0
        await harness.start_clock_and_reset(dut)
        for i, sc in enumerate(p["scenarios"]):
            await _scenario(dut, blk, sc, nrng, p["seed"] + 100 * i)


def _clean(count, lat, width=4, gap=0, reads=4, first=0):
    """No idle, no back-pressure, a fixed row range: measures cycles per slot. Defaults: the
    golden.perf.Timing pulse (4 cycles = 50 ns at 80 MHz, no gap)."""
    return dict(count=count, first=first, lat=lat, width=width, gap=gap, idle=0.0, bp=0.0, reads=reads)


CONFIGS = [
    dict(block=dict(rows=128, adcs=32, code_bits=8, slots=8), scenarios=[
        _clean(16, 1), _clean(24, 1, first=16), _clean(20, 1, first=100), _clean(128, 1, reads=2),
        _clean(2, 1), _clean(4, 2, width=5, gap=1),
        _clean(32, 40, reads=3), _clean(128, 40, reads=2),
        dict(lat=6, width=5, gap=1, idle=0.3, bp=0.4, reads=8),
        dict(lat=1, width=1, gap=0, idle=0.2, bp=0.2, reads=6),
    ]),
    dict(block=dict(rows=24, adcs=8, code_bits=6, slots=4), scenarios=[
        _clean(24, 3, width=2, gap=0), _clean(5, 7, first=6, width=1, gap=0),
        dict(lat=3, width=3, gap=2, idle=0.3, bp=0.5, reads=30),
        dict(lat=1, width=1, gap=0, idle=0.1, bp=0.3, reads=30),
    ]),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "r{rows}-a{adcs}-cb{code_bits}-s{slots}".format(**c["block"]))
def test_adc_sequencer(cfg):
    from rtl.adc_sequencer import AdcSequencer
    harness.run_block(AdcSequencer(**cfg["block"]), "adc_sequencer", "tb.test_adc_sequencer", dict(cfg, seed=7))
