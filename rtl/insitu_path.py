"""In-situ backward path of a two-layer dense network (Li 2018's 64-54-10; issue 15): output deltas
-> error codes -> transposed reads of the output layer's read groups on the PEs -> hidden deltas.

Golden counterpart: golden/insitu.py InsituTrainer.backward for layer O of li2018 (error_code,
layer_transposed, hidden_error, masked by relu'(h) = 0 < h < 255). Units only, wired with
wiring.connect: rtl/error_code.py (ErrorCode), one rtl/transposed_read.py (TransposedRead) per
read group of the output layer (li2018: groups 0..3 on PEs 0..3, each on its own PE port, so the
four reads run in parallel), rtl/hidden_error.py (HiddenError).

Elaboration data: `groups`, the output layer's read groups (golden.mapping ReadGroup: inputs,
row_base, n_out), group k on port pe{k}.

  i   In  stream {d: n_out x s17 (Q1.15 deltas of the result stage), h: n_in x u8 (the output
          layer's inputs, the hidden activations)}: one image.
  o   Out stream {d: n_in x s(HiddenError.d_bits)}: delta_h of the image (HiddenError's o).
  pe{k} Out PEBoardSignature(transposed=True) of group k's TransposedRead.

Glue (the only logic here, no arithmetic): one image at a time (`i` is ready while idle, the image's
h is held in a register until HiddenError has taken it); ErrorCode's result is registered once and
offered to every group's TransposedRead cmd (err padded with zeros to max_out, the group's row_base,
n_out, tag = k) and to HiddenError.img (h, shift), each valid cleared by its own transfer; the
groups' results reach HiddenError.t through a fixed-priority pick (lowest k first, chosen on valid
only). The image ends when HiddenError.o is taken.
What is not here yet (issue 15): the H and O layers' UpdateEngines and the programming path.
"""
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .error_code import ErrorCode
from .hidden_error import HiddenError
from .pe_board import PEBoardSignature
from .transposed_read import TransposedRead


def li2018_groups(layer="O"):
    from golden.crossbar import N_PE
    from golden.mapping import build_mapping
    from golden.networks import network
    net = network("li2018")
    return build_mapping(net.layers, net.placement, n_pe=N_PE).groups[layer]


class InsituPath(wiring.Component):
    def __init__(self, groups=None, d_bits=17, pulse_cycles=4):
        self.groups = list(li2018_groups() if groups is None else groups)
        self.n_out = self.groups[0].n_out
        self.ec = ErrorCode(n=self.n_out, d_bits=d_bits)
        self.trs = [TransposedRead(pulse_cycles=pulse_cycles) for _ in self.groups]
        self.he = HiddenError([g.inputs for g in self.groups], max_shift=self.ec.max_shift)
        self.n_in = self.he.n_in
        self.in_layout = data.StructLayout({"d": data.ArrayLayout(signed(d_bits), self.n_out),
                                            "h": data.ArrayLayout(unsigned(8), self.n_in)})
        tr = self.trs[0]
        ports = {"i": In(stream.Signature(self.in_layout)), "o": Out(stream.Signature(self.he.out_layout))}
        for k in range(len(self.groups)):
            ports[f"pe{k}"] = Out(PEBoardSignature(tr.n_bl, 32, 8, tr.n_rows, transposed=True,
                                                   bl_code_bits=tr.bl_code_bits))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ec, m.submodules.he = ec, he = self.ec, self.he
        for k, tr in enumerate(self.trs):
            m.submodules[f"tr{k}"] = tr
            wiring.connect(m, tr.pe, wiring.flipped(getattr(self, f"pe{k}")))
        wiring.connect(m, he.o, wiring.flipped(self.o))
        busy = Signal()
        h = Signal.like(self.i.payload.h)
        # one image at a time: d into ErrorCode, h held
        m.d.comb += [ec.i.payload.d.eq(self.i.payload.d), ec.i.valid.eq(self.i.valid & ~busy),
                     self.i.ready.eq(ec.i.ready & ~busy)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [busy.eq(1), h.eq(self.i.payload.h)]
        with m.If(he.o.valid & he.o.ready):
            m.d.sync += busy.eq(0)
        # ErrorCode's result registered once, offered to every group's read and to HiddenError.img
        pend = Signal(len(self.trs) + 1)
        m.d.comb += ec.o.ready.eq(pend == 0)
        with m.If(ec.o.valid & ec.o.ready):
            m.d.sync += pend.eq(-1)
        for k, (g, tr) in enumerate(zip(self.groups, self.trs)):
            p = tr.cmd.payload
            m.d.comb += tr.cmd.valid.eq(pend[k])
            with m.If(ec.o.valid & ec.o.ready):
                m.d.sync += [p.row_base.eq(g.row_base), p.n_out.eq(g.n_out), p.tag.eq(k)]
                m.d.sync += [p.err[o].eq(ec.o.payload.err[o] if o < self.n_out else 0) for o in range(tr.max_out)]
            with m.If(tr.cmd.valid & tr.cmd.ready):
                m.d.sync += pend[k].eq(0)
        m.d.comb += he.img.valid.eq(pend[-1])
        with m.If(ec.o.valid & ec.o.ready):
            m.d.sync += [he.img.payload.h.eq(h), he.img.payload.shift.eq(ec.o.payload.shift)]
        with m.If(he.img.valid & he.img.ready):
            m.d.sync += pend[-1].eq(0)
        # the groups' results -> HiddenError.t, lowest k first (chosen on valid only)
        for k in reversed(range(len(self.trs))):
            tr = self.trs[k]
            with m.If(tr.res.valid):
                m.d.comb += [he.t.valid.eq(1), he.t.payload.eq(tr.res.payload)]
        for k, tr in enumerate(self.trs):
            lower = [t.res.valid for t in self.trs[:k]]
            m.d.comb += tr.res.ready.eq(he.t.ready & ~_any(lower))
        return m


def _any(sigs):
    out = 0
    for s in sigs:
        out = out | s
    return out


def default_instances():
    return {"insitu_path": InsituPath()}
