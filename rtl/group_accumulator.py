"""Group accumulator: A = sum over a layer's read groups of D, per output.

Golden counterpart: the group sum of golden.datapath.layer_accumulate (acc = acc + d over the
groups); width golden.datapath.accumulator_bits: d_bits + ceil(log2(groups)) signed (C1 s17,
C3 s20, FC s21 with the default 17-bit D).

  cmd  In  stream {base, count, first, last}  one per read group: its outputs are pairs
                                              base .. base+count-1 of the D stream (base = the
                                              group's first SL row / 2); `first`: this is the
                                              layer's first group (accumulators start from 0);
                                              `last`: the last group (A leaves instead of being
                                              stored). Popped with the read's count-th D.
  i    In  stream {d, pair}                   = Differential.out_layout
  o    Out stream {acc: s(acc_bits), out}     one per output of a last-group read, out = pair - base

The partial sums live in a small distributed RAM of `outputs` words (asynchronous read, so an
output may be updated on consecutive cycles), addressed by pair - base; reads of successive
input vectors reuse it (process a vector's groups first..last, then the next vector's).
Throughput: one D per cycle. Latency: A is valid the cycle after the last group's D is accepted.
"""
import math

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class GroupAccumulator(wiring.Component):
    def __init__(self, d_bits: int = 17, groups: int = 12, outputs: int = 64):
        if groups < 1 or outputs < 1:
            raise ValueError(f"need groups >= 1 and outputs >= 1 (got {groups}, {outputs})")
        self.d_bits, self.groups, self.outputs = d_bits, groups, outputs
        self.acc_bits = d_bits + math.ceil(math.log2(groups))
        ob = _bits(outputs)
        self.cmd_layout = data.StructLayout({"base": ob, "count": outputs.bit_length(), "first": 1, "last": 1})
        self.in_layout = data.StructLayout({"d": signed(d_bits), "pair": ob})
        self.out_layout = data.StructLayout({"acc": signed(self.acc_bits), "out": ob})
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc = acc = Memory(shape=signed(self.acc_bits), depth=self.outputs, init=[])
        rd = acc.read_port(domain="comb")
        wr = acc.write_port()
        cmd, p = self.cmd.payload, self.i.payload
        addr = Signal(_bits(self.outputs))
        partial = Signal(signed(self.acc_bits))
        n = Signal(range(self.outputs + 1))          # D items of this read group so far
        m.d.comb += [
            addr.eq(p.pair - cmd.base),
            rd.addr.eq(addr), wr.addr.eq(addr),
            partial.eq(Mux(cmd.first, 0, rd.data) + p.d),
            wr.data.eq(partial),
            self.i.ready.eq(self.cmd.valid & (~self.o.valid | self.o.ready)),
        ]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(cmd.last):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.acc.eq(partial), self.o.payload.out.eq(addr)]
            with m.Else():
                m.d.comb += wr.en.eq(1)
            m.d.sync += n.eq(n + 1)
            with m.If(n == cmd.count - 1):
                m.d.sync += n.eq(0)
                m.d.comb += self.cmd.ready.eq(1)
        return m


def default_instances():
    return {"group_accumulator": GroupAccumulator()}
