"""Position accumulator: per output channel, the sum of the lanes' differential sums over the read
groups of one output position (one A per channel and position).

Golden counterpart: golden.datapath.layer_accumulate (A = the sum of the read groups' D); the lanes
of a step run the position's groups in lockstep, group slot by group slot (a lane with fewer groups
than the others runs null groups, D = 0), so A = sum over slots of sum over lanes of D.

  i      In  stream {d: [n_lanes][max_out] s(d_bits), tag: 2}
                    one item per group slot, all lanes' D at once (the lanes' `res`, in lockstep);
                    tag bit 0: the position's first slot (A restarts from it), bit 1: its last (A is
                    finished). `ready` is always 1: the lanes cannot wait.
  h      Out [max_out] s(acc_bits)
                    the last finished position's A, held; `shift` moves it down one channel
  done   Out 1      a finished position enters `h` at the end of this cycle (2 cycles after its item)
  shift  In  1      h[o] <- h[o + 1] (the post takes h[0], one channel per cycle); a finished
                    position loading in the same cycle wins

Pipeline (timing: the lanes' D subtraction, the sum over lanes and the accumulation are three carry
chains): the lanes' D are registered (dl), then their sum (dsum), then accumulated. The item's
valid and tag are registered in copies (rtl/replica.py), one per slice of the channels; each
slice's registers are a submodule `accum{k}` (a clock enable copy of its own, see
the board core's enable copies: one enable flip-flop reached all max_out * acc_bits registers).
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .replica import replicas, slices


class Accumulator(wiring.Component):
    def __init__(self, n_lanes: int, max_out: int, d_bits: int, acc_bits: int, n_slices: int | None = None):
        self.n_lanes, self.max_out, self.d_bits, self.acc_bits = n_lanes, max_out, d_bits, acc_bits
        self.n_slices = n_slices or min(4, max_out)     # accum{k} submodules
        self.in_layout = data.StructLayout({
            "d": data.ArrayLayout(data.ArrayLayout(signed(d_bits), max_out), n_lanes),
            "tag": 2,
        })
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "h": Out(data.ArrayLayout(signed(acc_bits), max_out)),
            "done": Out(1),
            "shift": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        NL, MO, acc_bits = self.n_lanes, self.max_out, self.acc_bits
        m.d.comb += self.i.ready.eq(1)
        A = [Signal(signed(acc_bits), name=f"A{o}") for o in range(MO)]
        H = [Signal(signed(acc_bits), name=f"H{o}") for o in range(MO)]   # finished position
        m.d.comb += [self.h[o].eq(H[o]) for o in range(MO)]
        res_valid = Signal()
        tag = Signal(2)
        rv0, tag0 = Signal(), Signal(2)
        dl = [[Signal(signed(self.d_bits), name=f"dl{li}_{o}") for o in range(MO)] for li in range(NL)]
        dsum = [Signal(signed(self.d_bits + NL.bit_length()), name=f"dsum{o}") for o in range(MO)]
        m.d.sync += [rv0.eq(self.i.valid), tag0.eq(self.i.payload.tag), res_valid.eq(rv0), tag.eq(tag0)]
        m.d.comb += self.done.eq(res_valid & tag[1])
        NRV = self.n_slices
        rv_dup = replicas(res_valid, NRV, "res_valid")
        tag_dup = replicas(tag, NRV, "tag")
        m.d.sync += [r.eq(rv0) for r in rv_dup] + [t.eq(tag0) for t in tag_dup]
        for k, (lo, hi) in enumerate(slices(MO, NRV)):
            m.submodules[f"accum{k}"] = ma = Module()
            for o in range(lo, hi):
                ma.d.sync += [dl[li][o].eq(self.i.payload.d[li][o]) for li in range(NL)]
                ma.d.sync += dsum[o].eq(sum((dl[li][o] for li in range(NL)), Const(0, signed(acc_bits))))
                s = dsum[o]
                new = Mux(tag_dup[k][0], s, A[o] + s)
                with ma.If(rv_dup[k]):
                    ma.d.sync += A[o].eq(new)
                with ma.If(rv_dup[k] & tag_dup[k][1]):      # a finished position, over the shift
                    ma.d.sync += H[o].eq(new)
                if o < MO - 1:
                    with ma.Elif(self.shift):
                        ma.d.sync += H[o].eq(H[o + 1])
        return m
