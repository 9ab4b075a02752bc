"""Hidden-layer error of one image from the transposed reads of the layer above:
delta_h[i] = (sum of T over the BLs that carry input i) << shift, times relu'(h_i) = (0 < h_i < 255).

Golden counterpart: golden/transposed_read.py `layer_transposed` (every read group's BL sums placed
at its fan-in indices g.inputs, summed where groups share an input) and `hidden_error` (T << shift),
masked as in golden/insitu.py InsituTrainer.backward (`* ((h > 0) & (h < 255))`).

Elaboration data: `groups`, the fan-in indices of each read group of the layer above
(tuple(g.inputs) for g in golden.mapping's groups of that layer, in that order: li2018's layer O:
(0..15), (16..31), (32..47), (48..53)); BL j of group k carries input groups[k][j].

  img  In  stream {h: n_in x u8, shift}: the image's hidden activations (the layer's inputs, u8)
           and the error-code shift of the layer above's delta (rtl/error_code.py o.shift).
           ready while idle; starts the image (clears the sums).
  t    In  stream {t: n_bl x s(t_bits), tag}: TransposedRead's res payload, tag = the group's
           index k in `groups` (the controller sets cmd.tag = k). Exactly len(groups) transfers
           per image, any order; ready once the image started, until all have been taken.
  o    Out stream {d: n_in x s(d_bits)}: delta_h of the image, d_bits = sum bits + max_shift.
           Payload and valid are registers, held until ready; then the unit takes the next img.

Pipeline: t payload and the one-hot of its tag registered; then each sum adds the BL of the selected
group (a mux over the groups that hold input i); when the last group's sums are in, one register
stage shifts and masks into the output.
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.transposed_read import BL_ADC, ERR_BITS


class HiddenError(wiring.Component):
    def __init__(self, groups, n_in=None, n_bl=16, t_bits=BL_ADC.bits + ERR_BITS + 1, max_shift=9, tag_bits=8):
        self.groups = [tuple(int(i) for i in g) for g in groups]
        if not self.groups or any(len(g) > n_bl or len(g) == 0 for g in self.groups):
            raise ValueError(f"groups: 1..{n_bl} fan-in indices each, got {[len(g) for g in self.groups]}")
        if len(self.groups) > 1 << tag_bits:
            raise ValueError(f"{len(self.groups)} groups do not fit a {tag_bits}-bit tag")
        self.n_in = max(max(g) for g in self.groups) + 1 if n_in is None else n_in
        self.src = [[(k, j) for k, g in enumerate(self.groups) for j, i in enumerate(g) if i == idx]
                    for idx in range(self.n_in)]          # (group, BL) pairs that carry input idx
        fan = max(1, max(len(s) for s in self.src))
        self.sum_bits = t_bits + (fan - 1).bit_length()
        self.n_bl, self.t_bits, self.max_shift = n_bl, t_bits, max_shift
        self.d_bits = self.sum_bits + max_shift
        self.img_layout = data.StructLayout({"h": data.ArrayLayout(unsigned(8), self.n_in),
                                             "shift": range(max_shift + 1)})
        self.t_layout = data.StructLayout({"t": data.ArrayLayout(signed(t_bits), n_bl), "tag": tag_bits})
        self.out_layout = data.StructLayout({"d": data.ArrayLayout(signed(self.d_bits), self.n_in)})
        super().__init__({"img": In(stream.Signature(self.img_layout)),
                          "t": In(stream.Signature(self.t_layout)),
                          "o": Out(stream.Signature(self.out_layout))})

    def elaborate(self, platform):
        m = Module()
        G, N = len(self.groups), self.n_in
        busy, done = Signal(), Signal()
        mask = Signal(N)
        shift = Signal.like(self.img.payload.shift)
        n_taken, n_summed = Signal(range(G + 1)), Signal(range(G + 1))
        sums = [Signal(signed(self.sum_bits), name=f"sum{i}") for i in range(N)]
        m.d.comb += [self.img.ready.eq(~busy), self.t.ready.eq(busy & (n_taken != G))]
        with m.If(self.img.valid & self.img.ready):
            h = self.img.payload.h
            m.d.sync += [busy.eq(1), done.eq(0), n_taken.eq(0), n_summed.eq(0), shift.eq(self.img.payload.shift),
                         mask.eq(Cat(((h[i] != 0) & (h[i] != 255)) for i in range(N)))]
            m.d.sync += [s.eq(0) for s in sums]
        # stage A: the BL sums and the one-hot of their group
        va = Signal()
        ta = [Signal(signed(self.t_bits), name=f"ta{j}") for j in range(self.n_bl)]
        sel = Signal(G)
        take = self.t.valid & self.t.ready
        m.d.sync += va.eq(take)
        with m.If(take):
            m.d.sync += [n_taken.eq(n_taken + 1), sel.eq(C(1, G) << self.t.payload.tag)]
            m.d.sync += [ta[j].eq(self.t.payload.t[j]) for j in range(self.n_bl)]
        # stage B: sum_i += T of the selected group's BL that carries input i
        with m.If(va):
            m.d.sync += n_summed.eq(n_summed + 1)
            for i, src in enumerate(self.src):
                add = 0
                for k, j in src:
                    add = Mux(sel[k], ta[j], add)
                if src:
                    m.d.sync += sums[i].eq(sums[i] + add)
        # output register: (sum << shift) masked, once every group is summed
        with m.If(busy & ~done & (n_summed == G)):
            m.d.sync += [done.eq(1), self.o.valid.eq(1)]
            m.d.sync += [self.o.payload.d[i].eq(Mux(mask[i], sums[i] << shift, 0)) for i in range(N)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [self.o.valid.eq(0), busy.eq(0)]
        return m


def default_instances():
    from golden.crossbar import N_PE
    from golden.mapping import build_mapping
    from golden.networks import network
    net = network("li2018")
    groups = build_mapping(net.layers, net.placement, n_pe=N_PE).groups["O"]
    return {"hidden_error": HiddenError([g.inputs for g in groups])}
