"""UART PHY (rtl/uart.py) against a bit-level model of the line, 8N1.

Receiver: random bytes at the nominal baud rate and at +-3 % baud error, random idle gaps,
random back-pressure on `o`; line glitches shorter than half a bit (ignored); a stop bit of 0
(framing_error, no byte); a break (brk once, no byte); a byte arriving while the previous one
still waits (overrun, the first byte kept). Transmitter: random bytes with random idle cycles,
decoded from the pin by sampling every bit at 1/4 and 3/4 of its nominal period (both samples
must agree: the bit timing is exact to better than a quarter bit), stop bits checked, and
back-to-back bytes leave without gaps.
"""
import random

import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

PERIOD_NS = 10

if cocotb is not None:
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, Timer

    class Pulses:
        def __init__(self, dut):
            self.dut = dut
            self.n = {"framing_error": 0, "brk": 0, "overrun": 0}

        async def run(self):
            while True:
                await ReadOnly()
                for k in self.n:
                    self.n[k] += int(getattr(self.dut, k).value)
                await RisingEdge(self.dut.clk)

    async def line(dut, bits, bit_ps):
        for b in bits:
            dut.rx.value = b
            await Timer(bit_ps, unit="ps")

    def char(b, stop=1):
        return [0] + [(b >> i) & 1 for i in range(8)] + [stop]

    async def setup(dut):
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        dut.rx.value = 1
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await Timer(PERIOD_NS // 2, unit="ns")     # drive the line between clock edges

    @cocotb.test()
    async def uart_rx(dut):
        p = harness.params()
        d = p["divisor"]
        rng = random.Random(p["seed"])
        await setup(dut)
        pulses = Pulses(dut)
        cocotb.start_soon(pulses.run())
        sink = harness.StreamSink(dut, "o", dut.clk, backpressure=0.3, rng=random.Random(3))
        task = cocotb.start_soon(sink.run())
        expected = []
        nominal = d * PERIOD_NS * 1000
        for err in (0.0, +0.03, -0.03):
            bit_ps = int(round(nominal * (1 + err)))
            data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(40)]
            for b in data:
                await line(dut, char(b), bit_ps)
                expected.append(b)
                if rng.random() < 0.5:
                    await line(dut, [1] * rng.randint(1, 3), rng.randint(1, nominal) + 1)
        await line(dut, [1], nominal * 2)
        assert sink.items == expected, f"rx bytes differ:\n{sink.items}\n{expected}"
        assert pulses.n == {"framing_error": 0, "brk": 0, "overrun": 0}, pulses.n
        # glitches shorter than half a bit: no start bit, nothing received
        for w in range(1, d // 2 - 1):
            dut.rx.value = 0
            await Timer(w * PERIOD_NS, unit="ns")
            dut.rx.value = 1
            await Timer(nominal * 2, unit="ps")
        await line(dut, char(0x3C), nominal)
        expected.append(0x3C)
        await line(dut, [1], nominal * 2)
        assert sink.items == expected, "a glitch produced a byte"
        # framing error: stop bit 0
        await line(dut, char(0x5A, stop=0) + [1, 1], nominal)
        assert pulses.n["framing_error"] == 1 and sink.items == expected, pulses.n
        # break: 3 character times low, one event
        await line(dut, [0] * 30 + [1, 1], nominal)
        assert pulses.n["brk"] == 1 and pulses.n["framing_error"] == 1 and sink.items == expected, pulses.n
        await line(dut, char(0xA5) + [1], nominal)           # the receiver recovered
        expected.append(0xA5)
        assert sink.items == expected
        # overrun: nobody takes the bytes
        task.cancel()
        dut.o__ready.value = 0
        await line(dut, char(0x11) + char(0x22) + [1], nominal)
        assert pulses.n["overrun"] == 1, pulses.n
        await ReadOnly()
        assert int(dut.o__valid.value) == 1 and int(dut.o__payload.value) == 0x11
        dut._log.info(f"rx: {len(expected)} bytes, events {pulses.n}")

    async def decode_tx(dut, n, nominal_ns, out, starts):
        from cocotb.simtime import get_sim_time
        for _ in range(n):
            await FallingEdge(dut.tx)
            starts.append(get_sim_time("ns"))
            bits = []
            for i in range(10):
                await Timer(nominal_ns // 4, unit="ns")
                a = int(dut.tx.value)
                await Timer(nominal_ns // 2, unit="ns")
                b = int(dut.tx.value)
                assert a == b, f"bit {i} changes within its period"
                bits.append(a)
                if i < 9:
                    await Timer(nominal_ns - nominal_ns // 4 - nominal_ns // 2, unit="ns")
            assert bits[0] == 0 and bits[9] == 1, f"start/stop bits {bits}"
            out.append(sum(v << k for k, v in enumerate(bits[1:9])))

    @cocotb.test()
    async def uart_tx(dut):
        p = harness.params()
        d = p["divisor"]
        await setup(dut)
        await RisingEdge(dut.clk)
        data = [0x00, 0xFF, 0x55, 0xAA] + [random.Random(p["seed"]).randrange(256) for _ in range(60)]
        got, starts = [], []
        mon = cocotb.start_soon(decode_tx(dut, len(data), d * PERIOD_NS, got, starts))
        src = harness.StreamSource(dut, "i", dut.clk, idle=0.0, rng=random.Random(4))
        await src.send(data[:20])                           # back to back
        src.idle = 0.95                                     # then with idle gaps
        await src.send(data[20:])
        await mon
        assert got == data
        gaps = {round(b - a) for a, b in zip(starts[:19], starts[1:20])}
        assert gaps == {(10 * d + 1) * PERIOD_NS}, f"back-to-back start spacing {gaps} ns"
        dut._log.info(f"tx: {len(got)} bytes")


@pytest.mark.parametrize("divisor", [8, 13])
def test_uart(divisor):
    from rtl.uart import Uart
    harness.run_block(Uart(divisor), "uart", "tb.test_uart", {"divisor": divisor, "seed": 99})
