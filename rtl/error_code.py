"""Error codes of a delta vector: the per-image block exponent the transposed read drives on the SLs.

Golden counterpart: golden/transposed_read.py `error_code(d, bits)` (one row d of n signed values):
  s = max(0, bitlen(max_o |d_o|) - bits),  err_o = clip((d_o + 2**(s-1)) >> s, +-(2**bits - 1))
  (s = 0: err = d; >> is arithmetic, so a negative tie rounds towards +inf as in NumPy).
bitlen(max |d|) = bitlen(OR of all |d|), so no comparator tree: the magnitudes are OR-reduced.

  i  In  stream {d: n x s(d_bits), tag}: one delta vector (li2018's output layer: n = 10 Q1.15
         deltas p - onehot, s17)
  o  Out stream {err: n x s(err_bits+1), shift: 0..d_bits-err_bits, tag}: err is the `err`
         field of TransposedRead's cmd payload (rtl/transposed_read.py; the consumer pads it to
         max_out and adds row_base, n_out, tag per read group); shift goes to HiddenError
         (rtl/hidden_error.py), which restores T << shift.

Pipeline of 5 register stages (|d|; OR; bitlen -> shift, half; d + half; >> shift and clip into
the output register), one vector per cycle at full rate; every stage advances only when the output
register is free or being taken (o.ready), so back-pressure stalls the whole pipeline and i.ready
= that enable.
"""
from amaranth.hdl import C, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.transposed_read import ERR_BITS


class ErrorCode(wiring.Component):
    def __init__(self, n=10, d_bits=17, err_bits=ERR_BITS, tag_bits=8):
        if d_bits <= err_bits:
            raise ValueError(f"d_bits ({d_bits}) must exceed err_bits ({err_bits})")
        self.n, self.d_bits, self.err_bits = n, d_bits, err_bits
        self.max_shift = d_bits - err_bits             # |d| <= 2**(d_bits-1): bitlen <= d_bits
        self.in_layout = data.StructLayout({"d": data.ArrayLayout(signed(d_bits), n), "tag": tag_bits})
        self.out_layout = data.StructLayout({"err": data.ArrayLayout(signed(err_bits + 1), n),
                                             "shift": range(self.max_shift + 1), "tag": tag_bits})
        super().__init__({"i": In(stream.Signature(self.in_layout)),
                          "o": Out(stream.Signature(self.out_layout))})

    def elaborate(self, platform):
        m = Module()
        n, D, B = self.n, self.d_bits, self.err_bits
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        def stage(name, prev_d, prev_v, prev_tag):
            d = [Signal(signed(D + 1), name=f"{name}_d{k}") for k in range(n)]
            v, tag = Signal(name=f"{name}_v"), Signal.like(self.i.payload.tag, name=f"{name}_tag")
            with m.If(en):
                m.d.sync += [v.eq(prev_v), tag.eq(prev_tag)] + [d[k].eq(prev_d[k]) for k in range(n)]
            return d, v, tag

        p = self.i.payload
        # stage 1: the vector and every magnitude (|-2**(D-1)| fits D unsigned bits)
        d1, v1, t1 = stage("s1", [p.d[k] for k in range(n)], self.i.valid, p.tag)
        mag = [Signal(unsigned(D), name=f"mag{k}") for k in range(n)]
        with m.If(en):
            m.d.sync += [mag[k].eq(Mux(p.d[k] < 0, -p.d[k], p.d[k])[:D]) for k in range(n)]
        # stage 2: OR of the magnitudes (same bit length as their maximum)
        d2, v2, t2 = stage("s2", d1, v1, t1)
        orv = Signal(D)
        acc = mag[0]
        for k in range(1, n):
            acc = acc | mag[k]
        with m.If(en):
            m.d.sync += orv.eq(acc)
        # stage 3: shift = max(0, bitlen - B) and the rounding half 2**(shift-1)
        d3, v3, t3 = stage("s3", d2, v2, t2)
        sh3 = Signal(range(self.max_shift + 1))
        half3 = Signal(D)
        bl, sh = Signal(range(D + 1)), Signal(range(self.max_shift + 1))
        for b in range(D):
            with m.If(orv[b]):
                m.d.comb += bl.eq(b + 1)
        m.d.comb += sh.eq(Mux(bl > B, bl - B, 0))
        with m.If(en):
            m.d.sync += [sh3.eq(sh), half3.eq((C(1, D + 1) << sh) >> 1)]
        # stage 4: d + half
        d4, v4, t4 = stage("s4", [d3[k] + half3 for k in range(n)], v3, t3)
        sh4 = Signal.like(sh3)
        with m.If(en):
            m.d.sync += sh4.eq(sh3)
        # stage 5 (output register): >> shift, clipped to +-(2**B - 1)
        lim = (1 << B) - 1
        with m.If(en):
            m.d.sync += [self.o.valid.eq(v4), self.o.payload.tag.eq(t4), self.o.payload.shift.eq(sh4)]
            for k in range(n):
                q = Signal(signed(D + 1), name=f"q{k}")
                m.d.comb += q.eq(d4[k] >> sh4)
                m.d.sync += self.o.payload.err[k].eq(Mux(q > lim, lim, Mux(q < -lim, -lim, q)))
        return m


def default_instances():
    return {"error_code": ErrorCode()}
