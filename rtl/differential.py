"""Differential sums of a read group: D[o] = S[2o] - S[2o+1], released at a fixed latency.

Golden counterpart: golden.datapath.differential (a weight is G+ - G- on two adjacent SLs, G+ on
the even row 2o and G- on the odd row 2o+1 of the group, golden/mapping.py); outputs o >= n_out
of the group are 0. The result leaves a fixed pulse_cycles + 5 cycles after the group's last
pulse cycle (`group_end`), whatever the number of conversion rounds (<= pulse_cycles) or a null
group: lanes in lockstep deliver together.

  group_end, tag, n_out  In   from rtl/bitserial_encoder.py: the group's last cycle, its tag and size
  s                      In   2 * max_out x u(sum_bits): the group's sums (rtl/shift_add.py `fin`)
  res                    Out  stream {d: max_out x s(sum_bits + 1), tag}; valid for one cycle,
                              ready ignored (the consumer always accepts)
  diff_subs              Out  32: counter of the subtractions made, n_out per group (golden.activity)
"""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class Differential(wiring.Component):
    def __init__(self, sum_bits=16, max_out=12, pulse_cycles=4, tag_bits=8):
        self.sum_bits, self.max_out, self.pulse_cycles = sum_bits, max_out, pulse_cycles
        self.d_bits = sum_bits + 1                      # D: s17
        self.res_layout = data.StructLayout({
            "d": data.ArrayLayout(signed(self.d_bits), max_out),
            "tag": tag_bits,
        })
        super().__init__({
            "group_end": In(1), "tag": In(tag_bits), "n_out": In(_bits(max_out + 1)),
            "s": In(data.ArrayLayout(unsigned(sum_bits), 2 * max_out)),
            "res": Out(stream.Signature(self.res_layout)),
            "diff_subs": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        P = self.pulse_cycles
        rt = Signal(range(P + 6))
        done_n_out = Signal.like(self.n_out)
        with m.If(self.group_end):
            m.d.sync += [rt.eq(P + 5), self.res.payload.tag.eq(self.tag), done_n_out.eq(self.n_out)]
        with m.Elif(rt != 0):
            m.d.sync += rt.eq(rt - 1)
        m.d.comb += self.res.valid.eq(rt == 1)
        with m.If(rt == 1):
            m.d.sync += self.diff_subs.eq(self.diff_subs + done_n_out)
        for o in range(self.max_out):
            d = Signal(signed(self.d_bits), name=f"d{o}")
            m.d.comb += d.eq(Mux(o < done_n_out, self.s[2 * o] - self.s[2 * o + 1], 0))
            m.d.comb += self.res.payload.d[o].eq(d)
        return m


def default_instances():
    return {"differential": Differential()}
