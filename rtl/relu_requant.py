"""Bounded ReLU + requantisation: x = min((max(A, 0) * M + 2**(sh-1)) >> sh, 255).

Golden counterpart: golden.datapath.relu_requant. One signed accumulator per input transfer, one
u8 activation per output transfer, in the same order (so the output stream connects directly to
rtl.maxpool.MaxPool's input: both payloads are {"x": u8}).

The multiplier M (u16) and the shift sh are configuration ports (per layer, set at run time). They
are sampled together with each accepted accumulator, so the controller may change them as soon as
the last item of a layer has been accepted, without draining the pipeline. sh = 1..2**sh_bits - 1
is golden's range (docs/datapath.md: 1..48); sh = 0 (not defined by the golden model, whose
2**(sh-1) is then not an integer) gives min(max(A,0)*M, 255), no rounding.

Pipeline: stage 1 registers max(A,0)*M (one DSP multiply), stage 2 (the output register) rounds,
shifts and saturates. Rounding uses floor((P + 2**(sh-1)) / 2**sh) = (floor(P / 2**(sh-1)) + 1) >> 1,
so there is no variable-position rounding constant. Throughput one item per cycle, latency 2
cycles (an accumulator accepted at clock edge k is on the output from edge k+2); a stall on the
output propagates back through the stages (bubbles are squeezed out).
"""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

ACT_MAX = 255


class ReluRequant(wiring.Component):
    def __init__(self, acc_bits: int = 21, m_bits: int = 16, sh_bits: int = 6):
        self.acc_bits, self.m_bits, self.sh_bits = acc_bits, m_bits, sh_bits
        self.prod_bits = (acc_bits - 1) + m_bits          # max(A,0) < 2**(acc_bits-1)
        self.in_layout = data.StructLayout({"acc": signed(acc_bits)})
        self.out_layout = data.StructLayout({"x": unsigned(8)})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "m": In(unsigned(m_bits)),
            "sh": In(unsigned(sh_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        acc = self.i.payload.acc

        # stage 1: ReLU and multiply
        s1_valid = Signal()
        s1_prod = Signal(unsigned(self.prod_bits))
        s1_sh = Signal(unsigned(self.sh_bits))

        adv2 = ~self.o.valid | self.o.ready        # output register free or being emptied
        adv1 = ~s1_valid | adv2                    # stage 1 free or moving on
        m.d.comb += self.i.ready.eq(adv1)

        relu = Mux(acc[-1], 0, acc[:self.acc_bits - 1])
        with m.If(adv1):
            m.d.sync += [s1_valid.eq(self.i.valid),
                         s1_prod.eq(relu * self.m),
                         s1_sh.eq(self.sh)]

        # stage 2: round half up, shift, saturate
        half = Signal(unsigned(self.prod_bits + 1))
        m.d.comb += half.eq((s1_prod >> (s1_sh - 1)[:self.sh_bits]) + 1)   # floor(P / 2**(sh-1)) + 1
        q = Mux(s1_sh == 0, s1_prod, half >> 1)
        with m.If(adv2):
            m.d.sync += [self.o.valid.eq(s1_valid),
                         self.o.payload.x.eq(Mux(q > ACT_MAX, ACT_MAX, q))]
        return m


def default_instances():
    return {"relu_requant": ReluRequant()}
