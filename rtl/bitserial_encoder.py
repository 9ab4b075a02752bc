"""Bit-serial pulse encoder: a vector of N B-bit inputs -> B time slots of N bit-line pulse enables.

Golden counterpart: golden.datapath.bitserial_encode (slot k carries bit k of every input, LSB
first). Interfaces:

  i       In  stream {x: N x uB}           one input vector per transfer
  o       Out stream {slot, last}          slot token. A transfer *starts* the pulse of that slot:
                                           `bl` carries the slot's bit plane during the `width`
                                           cycles that follow the transfer edge, then 0 for `gap`
                                           cycles. The consumer (the ADC sequencer) accepts a token
                                           only when it has a free sample-and-hold group, so
                                           back-pressure on `o` delays pulses, it never shortens them.
  bl      Out N                            BL pulse enables (registered).
  sample  Out 1                            high in the last cycle of every pulse: the instant the
                                           S&H samples the SL currents of the slot just announced.

Timing: a slot period is T = width + gap cycles. The next token is offered in the last cycle of
the current period (during the gap, or during the last pulse cycle when gap = 0), so with a
ready consumer the slots follow each other every T cycles, across vector boundaries too: the
next vector is accepted into the (single) vector register in the same edge that starts the
previous vector's last pulse (the bit plane is copied into `bl` then), so slot 0 of vector n+1
follows slot B-1 of vector n without an idle slot. Throughput: one vector per B*T cycles.
Latency: a vector accepted while idle pulses slot 0 from the second cycle after its transfer.
"""
from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class BitserialEncoder(wiring.Component):
    def __init__(self, n: int = 16, bits: int = 8, width: int = 4, gap: int = 0):
        if n < 1 or bits < 1 or width < 1 or gap < 0:
            raise ValueError(f"need n >= 1, bits >= 1, width >= 1, gap >= 0 (got {n}, {bits}, {width}, {gap})")
        self.n, self.bits, self.width, self.gap = n, bits, width, gap
        self.period = width + gap
        self.in_layout = data.StructLayout({"x": data.ArrayLayout(unsigned(bits), n)})
        self.slot_layout = data.StructLayout({"slot": _bits(bits), "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.slot_layout)),
            "bl": Out(n),
            "sample": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        T = self.period
        x = Signal(self.in_layout)                 # current vector
        loaded = Signal()                          # x holds a vector with slots left to pulse
        slot = Signal(_bits(self.bits))            # next slot to announce
        busy = Signal()                            # inside a slot period
        cnt = Signal(range(max(T, 2)))                   # cycle within the period (0 = first pulse cycle)

        last = slot == self.bits - 1
        period_end = busy & (cnt == T - 1)
        m.d.comb += [
            self.o.valid.eq(loaded & (~busy | period_end)),
            self.o.payload.slot.eq(slot),
            self.o.payload.last.eq(last),
            self.sample.eq(busy & (cnt == self.width - 1)),
        ]
        go = self.o.valid & self.o.ready
        # The vector register is free once the last slot's bit plane has been copied into bl.
        m.d.comb += self.i.ready.eq(~loaded | (go & last))

        # Period counter and the end of the pulse.
        with m.If(busy):
            m.d.sync += cnt.eq(cnt + 1)
            with m.If(cnt == self.width - 1):
                m.d.sync += self.bl.eq(0)
            with m.If(period_end):
                m.d.sync += [busy.eq(0), cnt.eq(0)]
        # Start of a pulse (overrides the above when back to back).
        with m.If(go):
            plane = [x.x[j].bit_select(slot, 1) for j in range(self.n)]
            m.d.sync += [self.bl.eq(Cat(*plane)), busy.eq(1), cnt.eq(0), slot.eq(0 if self.bits == 1 else slot + 1)]
            with m.If(last):
                m.d.sync += [slot.eq(0), loaded.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [x.eq(self.i.payload), loaded.eq(1)]
        return m


def default_instances():
    return {"bitserial_encoder": BitserialEncoder()}
