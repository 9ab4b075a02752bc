"""Differential pair subtraction: D = S(G+ row) - S(G- row) per output, signed.

Golden counterpart: golden.datapath.differential. A weight is G+ - G- on two adjacent SL rows,
G+ on the even row 2o and G- on the odd row 2o+1 of a read group (golden/mapping.py). The input
is rtl/shift_add.py's output stream (one S per row, rows of a read in ascending order, so each
G+ row is immediately followed by its G- row); the G+ sum is held until its G- partner arrives
and one D leaves per pair, tagged with the pair index `pair` = row >> 1 (the absolute pair on
the PE; rtl/group_accumulator.py turns it into the output index of the read).

  i  In  stream {sum: u(sum_bits), row}      = ShiftAdd.out_layout
  o  Out stream {d: s(sum_bits + 1), pair}

Throughput: one input per cycle (one D per two inputs). Latency: D is valid the cycle after the
G- row is accepted (one output register).
"""
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class Differential(wiring.Component):
    def __init__(self, sum_bits: int = 16, rows: int = 128):
        if rows < 2 or rows % 2:
            raise ValueError(f"rows must be even and >= 2, got {rows}")
        self.sum_bits, self.rows = sum_bits, rows
        self.d_bits = sum_bits + 1
        self.in_layout = data.StructLayout({"sum": sum_bits, "row": _bits(rows)})
        self.out_layout = data.StructLayout({"d": signed(self.d_bits), "pair": _bits(rows // 2)})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        pos = Signal(self.sum_bits)       # S of the G+ row waiting for its G- row
        p = self.i.payload
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(p.row[0]):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.d.eq(pos - p.sum),
                             self.o.payload.pair.eq(p.row >> 1)]
            with m.Else():
                m.d.sync += pos.eq(p.sum)
        return m


def default_instances():
    return {"differential": Differential()}
