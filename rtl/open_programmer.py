"""Open-loop pair programming (Li 2018): the pair programmer in open mode composed with the
open-loop pulse unit; the update engine's commands become blind identical pulses, no verify.

Golden counterpart: golden/hybrid.py PairProgrammer(xb, "open").apply per command: both devices
read once (verify reads), the pair rule (golden.hybrid.pair_plan) with the open-loop resolution
(half a nominal pulse at the read state), then per write the nominal pulse count
(nominal_pulses) as identical pulses (Crossbar.open_loop), lowered device first. Nothing is
verified, so no cell is ever blocked.

    cmd --> PairProgrammer (rtl/pair_programmer.py, resolution tables) --wv_cmd + wv_from-->
            OpenLoop (rtl/open_loop.py) --req--> PE programming drivers (SET / RESET pulses)
            OpenLoop.res --> PairProgrammer.wv_res (always taken: the next command waits for it)

  cmd        In  stream: the update engine's out_layout (pe, row_pos, bl, ..., d_code, end, overflow)
  rd_req / rd_rsp  Out / In streams: the verify reads of c+ and c- (rtl/pair_programmer.py)
  req        Out stream: rtl/write_verify.py req_layout, op SET / RESET only (the PE port's
             prog_req; share it with the write-verify sequencer by an arbiter: only one of them
             programs at a time)
  done       Out stream: the end-of-batch marker, once every command before it is programmed
  pulse_cycles In: width of every pulse
  pulses     Out(32): pulses sent since reset (golden PairProgrammer.stats.pulses)
  busy       Out: a command in flight

Elaboration data from the golden DeviceParams `device` (a linear model, e.g. li2018): the window
codes, the resolution tables, the nominal step (rtl/open_loop.py `for_device`).
"""
from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .open_loop import OpenLoop, open_resolution, window_codes
from .pair_programmer import PairProgrammer
from .write_verify import WriteVerify


class OpenPairProgrammer(wiring.Component):
    def __init__(self, cmd_layout, device="li2018", n_pe=8, n_rows=128, n_bl=16, code_bits=8):
        from golden.devices import preset
        p = preset(device)
        wv = WriteVerify(n_pe, n_rows, n_bl, code_bits)
        wv._MustUse__silence = True                     # built for its layouts only
        lo, hi = window_codes(p)
        self.pp = PairProgrammer(cmd_layout, wv.cmd_layout, wv.res_layout, n_pe, n_rows, n_bl, code_bits,
                                 lo=lo, hi=hi, margin=0, resolution=open_resolution(p, code_bits))
        self.ol = OpenLoop.for_device(p, wv.req_layout, wv.res_layout, n_pe=n_pe, n_rows=n_rows, n_bl=n_bl,
                                      code_bits=code_bits)
        self.req_layout = wv.req_layout
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout)),
            "rd_req": Out(stream.Signature(self.pp.rd_layout)),
            "rd_rsp": In(stream.Signature(data.StructLayout({"code": code_bits}))),
            "req": Out(stream.Signature(wv.req_layout)),
            "done": Out(stream.Signature(data.StructLayout({"overflow": 1}))),
            "pulse_cycles": In(wv.req_layout["width"].shape, init=1),
            "pulses": Out(32),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.pair_programmer = pp = self.pp
        m.submodules.open_loop = ol = self.ol
        wiring.connect(m, wiring.flipped(self.cmd), pp.cmd)
        wiring.connect(m, pp.rd_req, wiring.flipped(self.rd_req))
        wiring.connect(m, wiring.flipped(self.rd_rsp), pp.rd_rsp)
        wiring.connect(m, ol.req, wiring.flipped(self.req))
        wiring.connect(m, pp.done, wiring.flipped(self.done))
        w = pp.wv_cmd.payload
        m.d.comb += [ol.cmd.valid.eq(pp.wv_cmd.valid), pp.wv_cmd.ready.eq(ol.cmd.ready),
                     ol.cmd.payload.pe.eq(w.pe), ol.cmd.payload.row.eq(w.row), ol.cmd.payload.bl.eq(w.bl),
                     ol.cmd.payload.target.eq(w.target), ol.cmd.payload.code.eq(pp.wv_from),
                     ol.res.ready.eq(1), pp.wv_res.eq(ol.res.payload), pp.wv_res_fire.eq(ol.res.valid),
                     ol.pulse_cycles.eq(self.pulse_cycles),
                     self.busy.eq(pp.busy | ol.busy | ~pp.cmd.ready)]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += self.pulses.eq(self.pulses + 1)
        return m


def default_instances():
    from .update_engine import UpdateEngine, fc_groups
    upd = UpdateEngine(*fc_groups())
    upd._MustUse__silence = True                         # built for its command layout only
    return {"open_programmer": OpenPairProgrammer(upd.out_layout)}
