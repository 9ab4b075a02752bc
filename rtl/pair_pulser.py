"""Sign-rule pair programming (Bennett 2019): one identical pulse on each device of the pair.

Golden counterpart: golden/pair_pulser.py (PairPulser.apply, pulse_plan). A command of the update
engine with the sign rule (rtl/update_engine.py rule="sign": d_code in {-1, +1}) becomes two pulse
requests, the lowered device first: d_code > 0 -> RESET on G- (row_pos + 1), then SET on G+
(row_pos); d_code < 0 -> RESET on G+, then SET on G-. No verify read, no pair rule (blind). The
end-of-batch marker (end = 1) becomes one `done` item once the pulses of every command before it
were taken. A command with d_code 0 (the sign rule never makes one; golden refuses it) is taken and
dropped.

  cmd           In  stream: the update engine's out_layout (pe, row_pos, bl, m, n, d_code, end, overflow)
  req           Out stream: rtl/write_verify.py req_layout {op SET / RESET, pe, row, bl, width}, the PE
                port's prog_req (share it with the other programmers by an arbiter)
  done          Out stream {overflow}: the end marker
  pulse_cycles  In: width of every pulse
  pulses        Out(32): pulses sent since reset (golden PairPulser.pulses)
  busy          Out: a command or marker in flight

Timing: registered outputs; a command takes 3 cycles at full rate (accept, pulse 1, pulse 2), a
marker 2.
"""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .write_verify import ReqOp


class PairPulser(wiring.Component):
    def __init__(self, cmd_layout, req_layout):
        self.cmd_layout, self.req_layout = cmd_layout, req_layout
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout)),
            "req": Out(stream.Signature(req_layout)),
            "done": Out(stream.Signature(data.StructLayout({"overflow": 1}))),
            "pulse_cycles": In(req_layout["width"].shape, init=1),
            "pulses": Out(32),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        st_idle, st_p1, st_p2, st_done = Signal(init=1), Signal(), Signal(), Signal()
        c = Signal(self.cmd_layout, reset_less=True)
        up = Signal()                               # d_code > 0: G+ raised, G- lowered
        rq = self.req.payload
        op, row = Signal(ReqOp), Signal.like(rq.row)
        m.d.comb += [self.cmd.ready.eq(st_idle), self.busy.eq(~st_idle),
                     rq.width.eq(self.pulse_cycles), rq.pe.eq(c.pe), rq.bl.eq(c.bl), rq.op.eq(op), rq.row.eq(row)]
        with m.If(st_idle & self.cmd.valid):
            p = self.cmd.payload
            m.d.sync += [c.eq(p), up.eq(p.d_code > 0)]
            with m.If(p.end):
                m.d.sync += [st_idle.eq(0), st_done.eq(1), self.done.valid.eq(1),
                             self.done.payload.overflow.eq(p.overflow)]
            with m.Elif(p.d_code != 0):
                # first pulse: RESET on the lowered device
                m.d.sync += [st_idle.eq(0), st_p1.eq(1), self.req.valid.eq(1),
                             op.eq(ReqOp.RESET), row.eq(p.row_pos + (p.d_code > 0))]
        with m.If(st_p1 & self.req.ready):
            # second pulse: SET on the raised device
            m.d.sync += [st_p1.eq(0), st_p2.eq(1), op.eq(ReqOp.SET), row.eq(c.row_pos + Mux(up, 0, 1))]
        with m.If(st_p2 & self.req.ready):
            m.d.sync += [st_p2.eq(0), st_idle.eq(1), self.req.valid.eq(0)]
        with m.If(st_done & self.done.ready):
            m.d.sync += [st_done.eq(0), st_idle.eq(1), self.done.valid.eq(0)]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += self.pulses.eq(self.pulses + 1)
        return m


def default_instances():
    from golden.networks import network

    from .update_engine import UpdateEngine, fc_groups
    from .write_verify import WriteVerify
    upd = UpdateEngine(*fc_groups(network("elm-board").mapping(), "O"), max_batch=16, delta_bits=2, rule="sign")
    upd._MustUse__silence = True                         # built for its command layout only
    wv = WriteVerify()
    wv._MustUse__silence = True
    return {"pair_pulser": PairPulser(upd.out_layout, wv.req_layout)}
