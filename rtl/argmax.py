"""Argmax over K logits, ties to the lowest index; golden.datapath.argmax.

Input stream: one signed logit per transfer, {"z": s(logit_bits)}, classes in order 0..K-1, vectors
back to back (the block counts K transfers, no framing; this is the order the FC group accumulator
delivers its outputs in). Output stream: one transfer per vector, {"index": class, "max": logit}.

A running maximum is compared with each new logit using strict `>`, so the first of equal maxima
wins. The result register is loaded when the K-th logit is accepted: latency 1 cycle from the last
logit, throughput one logit per cycle (K cycles per vector). Only the K-th logit of a vector can be
stalled, by a full, back-pressured output register.
"""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def _idx(k: int) -> unsigned:
    return unsigned(max(1, (k - 1).bit_length()))


class Argmax(wiring.Component):
    def __init__(self, k: int = 10, logit_bits: int = 21):
        if k < 1:
            raise ValueError("argmax needs at least one logit")
        self.k, self.logit_bits = k, logit_bits
        self.in_layout = data.StructLayout({"z": signed(logit_bits)})
        self.out_layout = data.StructLayout({"index": _idx(k), "max": signed(logit_bits)})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        cnt = Signal(_idx(self.k))
        best = Signal(signed(self.logit_bits))
        best_idx = Signal(_idx(self.k))
        z = self.i.payload.z
        take = (cnt == 0) | (z > best)              # strict: ties keep the lower index
        new_best = Mux(take, z, best)
        new_idx = Mux(take, cnt, best_idx)
        last = cnt == self.k - 1

        m.d.comb += self.i.ready.eq(~last | ~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [best.eq(new_best), best_idx.eq(new_idx)]
            with m.If(last):
                m.d.sync += [cnt.eq(0), self.o.valid.eq(1),
                             self.o.payload.index.eq(new_idx), self.o.payload.max.eq(new_best)]
            with m.Else():
                m.d.sync += cnt.eq(cnt + 1)
        return m


def default_instances():
    return {"argmax": Argmax()}
