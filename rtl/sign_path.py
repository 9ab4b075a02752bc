"""The sign-WH training path of one layer (Bennett 2019; elm-board's output layer O): the update
engine with the sign rule composed with the pair pulser.

Golden counterpart: golden/insitu.py InsituTrainer.updates + step for a layer of rule "sign":
acc = V^T e over the batch (e = golden.update.sign_error), d = -sign(acc) (golden.update.sign_rule),
commands row by row (golden.update.commands), each one RESET pulse on the lowered device and one
SET pulse on the raised one (golden/pair_pulser.py).

    i --> UpdateEngine(rule="sign") (rtl/update_engine.py) --o/cmd--> PairPulser (rtl/pair_pulser.py) --> req

  i            In  stream: the engine's in_layout - per image the n_out errors (op DELTA, e in {-1, 0, 1})
               and the layer's inputs (op V, h), then FINISH after the batch's last image
  req          Out stream: rtl/write_verify.py req_layout, SET / RESET pulses (the PE port's prog_req)
  done         Out stream {overflow}: once the batch's pulses were all taken
  pulse_cycles In: width of every pulse
  pulses       Out(32): pulses sent since reset
  cmd_valid, cmd  Out: a copy of every command the engine hands the pulser (observation: tests, counters)

The layer's read groups are elaboration data (`groups`, `n_out`: rtl/update_engine.py fc_groups);
errors need delta_bits = 2; max_batch bounds the images per batch (accumulators exact below it).
"""
from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .pair_pulser import PairPulser
from .update_engine import UpdateEngine
from .write_verify import WriteVerify


class SignPath(wiring.Component):
    def __init__(self, groups, n_out, n_pe=8, n_rows=128, n_bl=16, max_batch=16):
        self.upd = UpdateEngine(groups, n_out, n_pe=n_pe, n_rows=n_rows, n_bl=n_bl, max_batch=max_batch,
                                delta_bits=2, rule="sign")
        wv = WriteVerify(n_pe, n_rows, n_bl)
        wv._MustUse__silence = True                     # built for its layouts only
        self.pp = PairPulser(self.upd.out_layout, wv.req_layout)
        self.in_layout, self.cmd_layout, self.req_layout = self.upd.in_layout, self.upd.out_layout, wv.req_layout
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "req": Out(stream.Signature(wv.req_layout)),
            "done": Out(stream.Signature(data.StructLayout({"overflow": 1}))),
            "pulse_cycles": In(wv.req_layout["width"].shape, init=1),
            "pulses": Out(32),
            "cmd_valid": Out(1),
            "cmd": Out(self.upd.out_layout),
        })

    @classmethod
    def for_layer(cls, mapping, layer, **kw):
        from .update_engine import fc_groups
        return cls(*fc_groups(mapping, layer), n_pe=mapping.n_pe, n_rows=mapping.n_rows, n_bl=mapping.n_bl, **kw)

    def elaborate(self, platform):
        m = Module()
        m.submodules.update_engine = upd = self.upd
        m.submodules.pair_pulser = pp = self.pp
        wiring.connect(m, wiring.flipped(self.i), upd.i)
        wiring.connect(m, upd.o, pp.cmd)
        wiring.connect(m, pp.req, wiring.flipped(self.req))
        wiring.connect(m, pp.done, wiring.flipped(self.done))
        m.d.comb += [pp.pulse_cycles.eq(self.pulse_cycles), self.pulses.eq(pp.pulses),
                     self.cmd_valid.eq(upd.o.valid & upd.o.ready), self.cmd.eq(upd.o.payload)]
        return m


def default_instances():
    from golden.networks import network
    return {"sign_path": SignPath.for_layer(network("elm-board").mapping(), "O")}
