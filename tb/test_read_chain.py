"""The read path end to end: bit-serial encoder -> ADC sequencer -> shift-and-add -> differential ->
group accumulator (rtl/bitserial_encoder.py, rtl/adc_sequencer.py, rtl/read_pipeline.py joined by
a test-only top), against golden.datapath.layer_accumulate on golden.analog.IdealArray.

The testbench is the analog side, cycle by cycle: when the sequencer strobes sh_sample[g], S&H
group g takes the SL currents IdealArray.read(pe, <the BL enables on the encoder's `bl` output in
that cycle>) of the PE of the read being pulsed; `latency` cycles after adc_convert[a] the ADC
returns golden.adc.ADC.convert of the held current of SL adc_sel[a]*A + a. So the pulse waveform,
the sampling instant, the S&H ping-pong, the MUX/ADC sequencing, the tags and the digital sums are
all checked at once: A must equal layer_accumulate for whole layers (C1, C3 on two PEs, FC).
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


def chain_top(n=16, bits=8, width=4, gap=0, rows=128, adcs=32, code_bits=8, groups=12):
    """Encoder -> sequencer -> read pipeline, the ADC/S&H interface and the BLs as ports."""
    from amaranth.hdl import Module
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    from rtl.adc_sequencer import AdcSequencer
    from rtl.bitserial_encoder import BitserialEncoder
    from rtl.read_pipeline import ReadPipeline

    class ReadChain(wiring.Component):
        def __init__(self):
            self.enc = BitserialEncoder(n, bits, width, gap)
            self.seq = AdcSequencer(rows, adcs, code_bits, bits)
            self.pipe = ReadPipeline(code_bits, bits, rows, groups)
            sig = self.seq.signature.members
            super().__init__({
                "x": In(stream.Signature(self.enc.in_layout)),
                "cmd": In(stream.Signature(self.seq.cmd_layout)),
                "gcmd": In(stream.Signature(self.pipe.cmd_layout)),
                "o": Out(stream.Signature(self.pipe.out_layout)),
                "bl": Out(n),
                **{k: sig[k] for k in ("sh_sample", "adc_convert", "adc_sel", "adc_grp", "adc_done", "adc_code")},
            })

        def elaborate(self, platform):
            m = Module()
            m.submodules.enc, m.submodules.seq, m.submodules.pipe = enc, seq, pipe = self.enc, self.seq, self.pipe
            wiring.connect(m, wiring.flipped(self.x), enc.i)
            wiring.connect(m, enc.o, seq.slot)
            wiring.connect(m, wiring.flipped(self.cmd), seq.cmd)
            wiring.connect(m, seq.o, pipe.i)
            wiring.connect(m, wiring.flipped(self.gcmd), pipe.cmd)
            wiring.connect(m, pipe.o, wiring.flipped(self.o))
            m.d.comb += [seq.sample.eq(enc.sample), self.bl.eq(enc.bl), self.sh_sample.eq(seq.sh_sample),
                         self.adc_convert.eq(seq.adc_convert), self.adc_sel.eq(seq.adc_sel),
                         self.adc_grp.eq(seq.adc_grp), seq.adc_done.eq(self.adc_done),
                         seq.adc_code.eq(self.adc_code)]
            return m

    return ReadChain()


if cocotb is not None:
    async def _analog(dut, top, array, adc, read_pes, lat, log):
        """S&H groups and ADCs around the sequencer (see module docstring)."""
        from cocotb.triggers import ReadOnly, RisingEdge
        seq = top.seq
        A, cb, sb, B, n_bl = seq.adcs, seq.code_bits, seq.sel_bits, top.enc.bits, top.enc.n
        held = [None, None]
        events = {}
        cyc, samples = 0, 0
        while True:
            done, word = 0, 0
            for a, code in events.pop(cyc, []):
                done |= 1 << a
                word |= code << (a * cb)
            dut.adc_done.value = done
            dut.adc_code.value = word
            await ReadOnly()
            sh = int(dut.sh_sample.value)
            if sh:
                bl = int(dut.bl.value)
                bits = np.array([[bl >> j & 1 for j in range(n_bl)]])
                pe = read_pes[samples // B]
                held[sh >> 1] = array.read(pe, bits, slice(0, seq.rows))[0]      # (rows,) uA
                samples += 1
                log["samples"].append(cyc)
            conv = int(dut.adc_convert.value)
            if conv:
                sels, grps = int(dut.adc_sel.value), int(dut.adc_grp.value)
                for a in range(A):
                    if conv >> a & 1:
                        row = ((sels >> (a * sb)) & ((1 << sb) - 1)) * A + a
                        code = int(adc.convert(held[grps >> a & 1][row], dtype=np.float32))
                        events.setdefault(cyc + lat, []).append((a, code))
            await RisingEdge(dut.clk)
            cyc += 1

    async def _scenario(dut, top, sc, nrng, seed):
        from cocotb.triggers import RisingEdge

        from golden.adc import ADC
        from golden.analog import IdealArray
        from golden.datapath import layer_accumulate
        from golden.mapping import build_mapping
        from tb import readpath_util as ru
        mp = build_mapping()
        groups = mp.groups[sc["layer"]]
        m, n_out, B = sc["vectors"], groups[0].n_out, top.enc.bits
        fan_in = max(max(g.inputs) for g in groups) + 1
        array = IdealArray(nrng.integers(0, 8, (mp.n_pe, mp.n_rows, mp.n_bl)))
        cols = nrng.integers(0, 256, (m, fan_in))
        adc = ADC(8, sc.get("full_scale_ua"))
        expected_a = layer_accumulate(array, groups, cols, B, adc)          # golden
        xs, cmds, gcmds, pes = [], [], [], []
        for v in range(m):
            for gi, g in enumerate(groups):
                x = np.zeros(top.enc.n, np.int64)
                x[:len(g.inputs)] = cols[v, list(g.inputs)]
                xs.append({"x": ru.pack_array(x, B)})
                cmds.append({"first": g.row_base, "count": 2 * g.n_out})
                gcmds.append({"base": g.row_base // 2, "count": g.n_out, "first": int(gi == 0),
                              "last": int(gi == len(groups) - 1)})
                pes.append(g.pe)
        expected = [{"acc": int(expected_a[v, o]), "out": o} for v in range(m) for o in range(n_out)]
        await ru.reset(dut)
        tasks = ru.Tasks()
        log = {"samples": []}
        idle = sc["idle"]
        sink = harness.StreamSink(dut, "o", dut.clk, top.pipe.out_layout, backpressure=sc["bp"],
                                  rng=random.Random(seed))
        tasks.start(sink.run())
        tasks.start(_analog(dut, top, array, adc, pes, sc["lat"], log))
        for name, lay, items, k in (("x", top.enc.in_layout, xs, 1), ("cmd", top.seq.cmd_layout, cmds, 2),
                                    ("gcmd", top.pipe.cmd_layout, gcmds, 3)):
            src = harness.StreamSource(dut, name, dut.clk, lay, idle=idle, rng=random.Random(seed + k))
            tasks.start(src.send(items))
        got = await sink.wait_for(len(expected), timeout_cycles=100_000)
        for _ in range(5):
            await RisingEdge(dut.clk)
        tasks.cancel()
        dut.adc_done.value = 0
        assert len(got) == len(expected), f"{len(got)} A out, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"A {i} (vector {i // n_out}, output {i % n_out}): got {g}, expected {e}"
        s = log["samples"]
        assert len(s) == len(xs) * B, f"{len(s)} samples for {len(xs)} reads of {B} slots"
        per_slot = (s[-1] - s[0]) / (len(s) - 1)
        dut._log.info(f"{sc['layer']} latency {sc['lat']} idle {idle} bp {sc['bp']}"
                      f"{' fs ' + str(sc['full_scale_ua']) if sc.get('full_scale_ua') else ''}: {m} vectors, "
                      f"{len(xs)} reads of {2 * n_out} rows, {len(expected)} A compared; "
                      f"{per_slot:.2f} cycles/slot, {per_slot * B * len(groups):.0f} cycles/vector")

    @cocotb.test()
    async def read_chain_layers(dut):
        p = harness.params()
        top = chain_top(**p["block"])
        nrng = np.random.default_rng(p["seed"])
        dut.adc_done.value = 0
        await harness.start_clock_and_reset(dut)
        for i, sc in enumerate(p["scenarios"]):
            await _scenario(dut, top, sc, nrng, p["seed"] + 10 * i)


SCENARIOS = [
    dict(layer="C1", vectors=6, lat=1, idle=0.0, bp=0.0),
    dict(layer="C3", vectors=2, lat=1, idle=0.0, bp=0.0),
    dict(layer="FC", vectors=2, lat=3, idle=0.3, bp=0.4),
    dict(layer="C3", vectors=1, lat=30, idle=0.0, bp=0.2, full_scale_ua=12.0),     # saturating ADC
]
CONFIGS = [dict(block=dict(), scenarios=SCENARIOS)]     # the default parameters of every block


@pytest.mark.parametrize("cfg", CONFIGS, ids=["defaults"])
def test_read_chain(cfg):
    harness.run_block(chain_top(**cfg["block"]), "read_chain", "tb.test_read_chain", dict(cfg, seed=4))
