"""Bit-serial pulse encoder (rtl/bitserial_encoder.py) against golden.datapath.bitserial_encode.

The whole BL waveform is recorded cycle by cycle and compared with the waveform the golden bit
planes imply: after the transfer of the token of slot k of vector v, `bl` equals
bitserial_encode(X, B)[k, v] for exactly `width` cycles (with `sample` high in the last one), and
is 0 in every cycle outside a pulse. With no idle input and no back-pressure the token transfers
must be exactly `width + gap` cycles apart from the first slot of the first vector to the last
slot of the last one (no idle slot between back-to-back vectors).
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


def _vectors(rng, n_vec, n, bits):
    top = (1 << bits) - 1
    edge = [np.zeros(n, np.int64), np.full(n, top, np.int64),            # all zeros, all ones
            np.array([top if j % 2 else 0 for j in range(n)]),            # alternating
            np.array([1 << (j % bits) for j in range(n)])]                # one bit per input
    rand = [rng.integers(0, top + 1, n) for _ in range(max(0, n_vec - len(edge)))]
    return np.array((edge + rand)[:n_vec] if n_vec >= len(edge) else edge[:n_vec])


if cocotb is not None:
    async def _scenario(dut, blk, X, idle, bp, seed):
        from cocotb.triggers import ReadOnly, RisingEdge

        from golden.datapath import bitserial_encode
        from tb import readpath_util as ru
        n, bits, width, T = blk.n, blk.bits, blk.width, blk.period
        planes = bitserial_encode(X, bits)                      # (B, V, N) golden
        await ru.reset(dut)
        tasks = ru.Tasks()
        src = harness.StreamSource(dut, "i", dut.clk, blk.in_layout, idle=idle, rng=random.Random(seed))
        sink = harness.StreamSink(dut, "o", dut.clk, blk.slot_layout, backpressure=bp, rng=random.Random(seed + 1))
        tasks.start(sink.run())
        trace = []  # per cycle: (transfer?, slot, last, bl, sample)

        async def monitor():
            while True:
                await ReadOnly()
                go = bool(dut.o__valid.value) and bool(dut.o__ready.value)
                pl = harness.unpack(blk.slot_layout, int(dut.o__payload.value))
                trace.append((go, pl["slot"], pl["last"], int(dut.bl.value), int(dut.sample.value)))
                await RisingEdge(dut.clk)

        tasks.start(monitor())
        await src.send([{"x": ru.pack_array(vec, bits)} for vec in X])
        await sink.wait_for(len(X) * bits)
        for _ in range(T + 2):
            await RisingEdge(dut.clk)
        tasks.cancel()

        gos = [c for c, t in enumerate(trace) if t[0]]
        assert len(gos) == len(X) * bits, f"{len(gos)} slot tokens, expected {len(X) * bits}"
        exp_bl = [0] * len(trace)
        exp_sample = [0] * len(trace)
        for i, c in enumerate(gos):
            v, k = divmod(i, bits)
            _, slot, last, _, _ = trace[c]
            assert (slot, last) == (k, int(k == bits - 1)), f"token {i}: got slot {slot} last {last}, expected {k}"
            word = sum(int(b) << j for j, b in enumerate(planes[k, v]))
            for d in range(1, width + 1):
                assert exp_bl[c + d] == 0 and exp_sample[c + d] == 0, f"pulses overlap at cycle {c + d}"
                exp_bl[c + d] = word
            exp_sample[c + width] = 1
            if i:
                assert c - gos[i - 1] >= T, f"token {i} only {c - gos[i - 1]} cycles after the previous (T={T})"
        for c, t in enumerate(trace):
            assert t[3] == exp_bl[c], f"cycle {c}: bl {t[3]:0{n}b}, expected {exp_bl[c]:0{n}b}"
            assert t[4] == exp_sample[c], f"cycle {c}: sample {t[4]}, expected {exp_sample[c]}"
        span = gos[-1] - gos[0]
        if idle == 0 and bp == 0:
            assert span == (len(gos) - 1) * T, f"{span} cycles for {len(gos)} slots: idle slots (T={T})"
        dut._log.info(f"idle {idle} bp {bp}: {len(X)} vectors, {len(gos)} slots, {len(trace)} cycles of BL "
                      f"waveform compared; slot period {span / max(1, len(gos) - 1):.3f} cycles (T={T})")

    @cocotb.test()
    async def encoder_waveform(dut):
        from rtl.bitserial_encoder import BitserialEncoder
        p = harness.params()
        blk = BitserialEncoder(**p["block"])
        nrng = np.random.default_rng(p["seed"])
        await harness.start_clock_and_reset(dut)
        for i, sc in enumerate(p["scenarios"]):
            X = _vectors(nrng, sc["vectors"], blk.n, blk.bits)
            await _scenario(dut, blk, X, sc["idle"], sc["bp"], p["seed"] + 10 * i)


SCENARIOS = [dict(idle=0.0, bp=0.0, vectors=24),    # back to back: checks the slot period exactly
             dict(idle=0.3, bp=0.4, vectors=40)]
CONFIGS = [
    dict(block=dict(n=16, bits=8, width=4, gap=0), scenarios=SCENARIOS),     # defaults (golden.perf.Timing)
    dict(block=dict(n=9, bits=4, width=3, gap=2), scenarios=SCENARIOS),
    dict(block=dict(n=5, bits=3, width=1, gap=0), scenarios=SCENARIOS),      # a new slot every cycle
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "n{n}-b{bits}-w{width}-g{gap}".format(**c["block"]))
def test_bitserial_encoder(cfg):
    from rtl.bitserial_encoder import BitserialEncoder
    harness.run_block(BitserialEncoder(**cfg["block"]), "bitserial_encoder", "tb.test_bitserial_encoder",
                      dict(cfg, seed=99))
