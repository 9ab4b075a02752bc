"""Shift-and-add accumulator: per source line, S = sum over slots of code << slot.

Golden counterpart: golden.datapath.shift_add. Codes arrive as a stream tagged with (row, slot),
in any interleaving of rows as long as each row's slots come in order 0..slots-1 (the ADC
sequencer delivers all rows of slot k before slot k+1). One partial sum per row is kept in a
small distributed RAM (asynchronous read, so a row may be updated on consecutive cycles); the
last slot's sum leaves on the output stream instead of being written back.
"""
from amaranth.hdl import Module, Mux, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class ShiftAdd(wiring.Component):
    def __init__(self, code_bits: int = 8, slots: int = 8, rows: int = 128):
        self.code_bits, self.slots, self.rows = code_bits, slots, rows
        self.sum_bits = code_bits + slots
        self.in_layout = data.StructLayout({"code": code_bits, "slot": _bits(slots), "row": _bits(rows)})
        self.out_layout = data.StructLayout({"sum": self.sum_bits, "row": _bits(rows)})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc = acc = Memory(shape=unsigned(self.sum_bits), depth=self.rows, init=[])
        rd = acc.read_port(domain="comb")
        wr = acc.write_port()
        p = self.i.payload
        partial = Mux(p.slot == 0, 0, rd.data) + (p.code << p.slot)
        m.d.comb += [rd.addr.eq(p.row), wr.addr.eq(p.row), wr.data.eq(partial)]

        # One output register; accept a new code whenever it is empty or being emptied.
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(p.slot == self.slots - 1):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.sum.eq(partial), self.o.payload.row.eq(p.row)]
            with m.Else():
                m.d.comb += wr.en.eq(1)
        return m


def default_instances():
    return {"shift_add": ShiftAdd()}
