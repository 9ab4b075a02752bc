"""The programming path: write-verify sequencer, update engine and pair programmer, wired as one unit.

    host cell commands (prog) --\\
                                 +--> WriteVerify (rtl/write_verify.py) --prog_req/prog_rsp--> PE board
    training items (upd_i) --> UpdateEngine --> PairProgrammer --/     \\--> per-cell results (prog_res)
                               (rtl/update_engine.py)  (rtl/pair_programmer.py: verify reads on
                                                        vread_req/vread_rsp; upd_done per batch)

The pair programmer's write-verify commands (training) have priority over the host's. Used by the
Controller (rtl/controller.py) and, shared by its groups, by rtl/replicated.py.

Signature:
  prog        In stream: cell commands from the host (rtl/write_verify.py cmd_layout).
  prog_res    Out stream: per-cell results of every write-verify command (res_layout).
  prog_req / prog_rsp  Out / In streams: the PE board's programming drivers and verify ADC.
  upd_i       In stream: the update engine's items (rtl/update_engine.py in_layout: DELTA, V, FINISH).
  vread_req / vread_rsp  Out / In streams: the pair programmer's conductance reads.
  upd_done    Out stream: the batch's programming is over (payload 1: the batch overflowed the
              update engine's exact accumulation).
  eta_m, eta_sh, th_code, clip_code  In: the update engine's learning rate, threshold, clipping.
  set_pulses, reset_pulses, verify_reads  Out(32): totals since reset (SET / RESET pulses sent,
              write-verify reads + the pair programmer's reads).
  engine_valid, pp_busy, pp_cmd_ready, wv_ready  Out(1): status (the update engine's output valid,
              the pair programmer busy / taking commands, the write-verify sequencer taking commands).

Submodules `write_verify`, `update_engine` (its `lanes{g}`), `pair_programmer`: each holds a large
group of registers and can take its own copy of a clock enable (rtl/replica.py EnableCopies).
"""
from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .pair_programmer import PairProgrammer
from .update_engine import UpdateEngine
from .write_verify import ReqOp, WriteVerify


class ProgrammingPath(wiring.Component):
    def __init__(self, fc_groups, n_out: int, n_pe=8, n_rows=128, n_bl=16, code_bits=8, window_codes=(25, 200),
                 max_batch=128):
        self.wv = WriteVerify(n_pe, n_rows, n_bl)
        self.upd = UpdateEngine(fc_groups, n_out, n_pe=n_pe, n_rows=n_rows, n_bl=n_bl, max_batch=max_batch)
        self.pp = PairProgrammer(self.upd.out_layout, self.wv.cmd_layout, self.wv.res_layout, n_pe, n_rows, n_bl,
                                 code_bits, lo=window_codes[0], hi=window_codes[1], margin=5)
        super().__init__({
            "prog": In(stream.Signature(self.wv.cmd_layout)),
            "prog_res": Out(stream.Signature(self.wv.res_layout)),
            "prog_req": Out(stream.Signature(self.wv.req_layout)),
            "prog_rsp": In(stream.Signature(self.wv.rsp_layout)),
            "upd_i": In(stream.Signature(self.upd.in_layout)),
            "upd_done": Out(stream.Signature(1)),
            "vread_req": Out(stream.Signature(self.pp.rd_layout)),
            "vread_rsp": In(stream.Signature(data.StructLayout({"code": code_bits}))),
            "eta_m": In(16), "eta_sh": In(6), "th_code": In(16, init=15),
            "clip_code": In(unsigned(self.upd.clip_bits)),
            "set_pulses": Out(32), "reset_pulses": Out(32), "verify_reads": Out(32),
            "engine_valid": Out(1), "pp_busy": Out(1), "pp_cmd_ready": Out(1), "wv_ready": Out(1),
        })

    def enable_groups(self) -> list[str]:
        """The submodule paths holding large groups of registers (rtl/replica.py EnableCopies)."""
        return ["update_engine", *(f"update_engine.{g}" for g in self.upd.enable_groups()),
                "pair_programmer", "write_verify"]

    def silence(self):
        """Layouts only (rtl/controller.py as a replica): the blocks are not elaborated."""
        for blk in (self, self.wv, self.upd, self.pp):
            blk._MustUse__silence = True

    def elaborate(self, platform):
        m = Module()
        m.submodules.write_verify = wv = self.wv
        m.submodules.update_engine = upd = self.upd
        m.submodules.pair_programmer = pp = self.pp
        # write-verify commands: the pair programmer (training) has priority over host commands
        with m.If(pp.wv_cmd.valid):
            m.d.comb += [wv.cmd.valid.eq(1), wv.cmd.payload.eq(pp.wv_cmd.payload), pp.wv_cmd.ready.eq(wv.cmd.ready)]
        with m.Else():
            m.d.comb += [wv.cmd.valid.eq(self.prog.valid), wv.cmd.payload.eq(self.prog.payload),
                         self.prog.ready.eq(wv.cmd.ready)]
        wiring.connect(m, wv.res, wiring.flipped(self.prog_res))
        m.d.comb += [pp.wv_res.eq(wv.res.payload), pp.wv_res_fire.eq(wv.res.valid & wv.res.ready)]
        wiring.connect(m, pp.rd_req, wiring.flipped(self.vread_req))
        wiring.connect(m, wiring.flipped(self.vread_rsp), pp.rd_rsp)
        wiring.connect(m, wiring.flipped(self.upd_i), upd.i)
        wiring.connect(m, upd.o, pp.cmd)
        m.d.comb += [upd.mult.eq(self.eta_m), upd.shift.eq(self.eta_sh), upd.th_code.eq(self.th_code),
                     upd.clip_code.eq(self.clip_code),
                     self.upd_done.valid.eq(pp.done.valid), pp.done.ready.eq(self.upd_done.ready),
                     self.upd_done.payload.eq(pp.done.payload.overflow)]   # 1: the batch overflowed the engine
        wiring.connect(m, wv.req, wiring.flipped(self.prog_req))
        wiring.connect(m, wiring.flipped(self.prog_rsp), wv.rsp)
        m.d.comb += [self.engine_valid.eq(upd.o.valid), self.pp_busy.eq(pp.busy), self.pp_cmd_ready.eq(pp.cmd.ready),
                     self.wv_ready.eq(wv.cmd.ready)]
        # counters: SET / RESET pulses, verify reads (write-verify reads + the pair programmer's reads)
        req, vr = self.prog_req, self.vread_req
        with m.If(req.valid & req.ready):
            with m.Switch(req.payload.op):
                with m.Case(ReqOp.SET):
                    m.d.sync += self.set_pulses.eq(self.set_pulses + 1)
                with m.Case(ReqOp.RESET):
                    m.d.sync += self.reset_pulses.eq(self.reset_pulses + 1)
        n_vr = (req.valid & req.ready & (req.payload.op == ReqOp.READ)) + (vr.valid & vr.ready)
        m.d.sync += self.verify_reads.eq(self.verify_reads + n_vr)
        return m


def connect_programming(m, c, pg):
    """Wire the programming path `pg` (a ProgrammingPath) to the ports of the same names of `c` (a
    Controller, or rtl/replicated.py's top, which shares one path among its groups); the update
    engine's input `pg.upd_i` and `clip_code` are left to the caller."""
    for name in ("prog_res", "prog_req", "vread_req", "upd_done"):
        wiring.connect(m, getattr(pg, name), wiring.flipped(getattr(c, name)))
    for name in ("prog", "prog_rsp", "vread_rsp"):
        wiring.connect(m, wiring.flipped(getattr(c, name)), getattr(pg, name))
    m.d.comb += [pg.eta_m.eq(c.eta_m), pg.eta_sh.eq(c.eta_sh), pg.th_code.eq(c.th_code),
                 c.set_pulses.eq(pg.set_pulses), c.reset_pulses.eq(pg.reset_pulses),
                 c.verify_reads.eq(pg.verify_reads)]


def default_instances():
    from .update_engine import fc_groups
    return {"mcnn_programming": ProgrammingPath(*fc_groups())}
