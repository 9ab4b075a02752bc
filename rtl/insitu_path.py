"""In-situ training path of a two-layer dense network (Li 2018's 64-54-10; issue 15): per image the
output deltas -> error codes -> transposed reads of the output layer's read groups on the PEs ->
hidden deltas, both layers' update accumulation, and on FINISH both layers' programming commands
through Li's open-loop programming to the PE programming ports.

Golden counterpart: golden/insitu.py InsituTrainer.backward (error_code, layer_transposed,
hidden_error masked by relu'(h) = 0 < h < 255) and InsituTrainer.updates + update.commands, layer H
first then layer O (step's order). Units only, wired with wiring.connect: rtl/error_code.py
(ErrorCode), one rtl/transposed_read.py (TransposedRead) per read group of the output layer (li2018:
groups 0..3 on PEs 0..3, each on its own PE port, so the four reads run in parallel),
rtl/hidden_error.py (HiddenError), two rtl/update_engine.py (UpdateEngine): `upd_h` (layer H: V = x,
delta = HiddenError's d, delta_bits = HiddenError.d_bits) and `upd_o` (layer O: V = h, the s17 deltas),
rtl/open_programmer.py (OpenPairProgrammer, golden PairProgrammer(xb, "open")) taking their commands.

  i   In  stream {d: n_out x s17 (Q1.15 deltas of the result stage), h: n_hid x u8 (hidden
          activations), x: n_x x u8 (the image's inputs), finish}: one image, or (finish=1) the end
          of the batch (d, h, x ignored).
  rd_req / rd_rsp, req, done, pulse_cycles, pulses  OpenPairProgrammer's ports (its docstring:
          the verify reads, the SET / RESET pulses for the PEs' prog_req -- shared with a
          WriteVerify through an arbiter on the board --, a `done` per end marker, so two a batch).
  prog_busy  Out: OpenPairProgrammer.busy.
  cmd_valid, cmd  Out: a tap of the programmer's cmd (UpdateEngine.out_layout of upd_h): the commands
          of layer H and its end marker, then those of layer O (fields copied) and its end marker.
  dh_valid, dh  Out: a tap of HiddenError's o (dh_valid a cycle with a hidden delta vector taken).
  mult_h, shift_h, mult_o, shift_o, th_code  In: the engines' runtime ports (golden: InsituTrainer
          upd[0], upd[1], th).
  pe{k} Out PEBoardSignature(transposed=True) of group k's TransposedRead.

Glue (the only logic here, no arithmetic): one image at a time (`i` is ready while idle; the image's
d, h, x are held in registers until both engines have them); ErrorCode's result is registered once
and offered to every group's TransposedRead cmd (err padded with zeros to max_out, the group's
row_base, n_out, tag = k) and to HiddenError.img (h, shift), each valid cleared by its own transfer;
the groups' results reach HiddenError.t through a fixed-priority pick (lowest k first, chosen on
valid only). Serialisers feed the engines their DELTA items then V items (upd_o: d then h, right
away; upd_h: HiddenError's d, registered, then x). FINISH goes to both engines; the output takes
upd_h's stream up to its end marker, then upd_o's.

Regimes (`mode`, elaboration time; golden InsituConfig.mode, PairProgrammer(xb, mode)):
  "open"    Li's blind identical pulses: rtl/open_programmer.py OpenPairProgrammer (above).
  "closed"  Yao's threshold rule with closed-loop write-verify, composed as rtl/programming.py does:
            rtl/pair_programmer.py PairProgrammer (closed: margin = the device's verify margin, window
            from golden PairProgrammer) -> rtl/write_verify.py WriteVerify, its results back to the
            pair programmer (failed cells blocked for good). Same ports as open mode, with these
            differences: `req` carries WriteVerify's requests, op SET / RESET and READ (a verify read
            of the cell being programmed, answered in order on `rsp`); `pulses` counts SET / RESET
            only (golden PairProgrammer.stats.pulses); extra ports:
    rsp         In stream {code}: the verify ADC code of every READ on `req` (rtl/programming.py prog_rsp)
    wv_res_valid, wv_res  Out: a tap of WriteVerify's result per programmed cell (res_layout: pe, row,
                bl, ok, pulses, final_code; ok = 0: the cell is blocked from now on)
    max_pulses  In: WriteVerify's pulse limit per cell (init: the device preset's max_pulses)
  The threshold (th_code) is the same engine port in both regimes (golden default_threshold differs).
Not here (issue 15): the arbiter on prog_req, the routing of the 8 PEs' ports and the forward pass
(controller).
"""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .error_code import ErrorCode
from .hidden_error import HiddenError
from .open_loop import window_codes
from .open_programmer import OpenPairProgrammer
from .pair_programmer import PairProgrammer
from .pe_board import PEBoardSignature
from .transposed_read import TransposedRead
from .update_engine import Op, UpdateEngine
from .write_verify import ReqOp, WriteVerify


def li2018_mapping():
    from golden.crossbar import N_PE
    from golden.mapping import build_mapping
    from golden.networks import network
    net = network("li2018")
    return build_mapping(net.layers, net.placement, n_pe=N_PE)


def _table(groups):
    return [(g.pe, g.row_base, tuple(g.inputs)) for g in groups], groups[0].n_out


class InsituPath(wiring.Component):
    def __init__(self, mapping=None, hidden="H", out="O", d_bits=17, pulse_cycles=4, max_batch=16, device="li2018",
                 mode="open"):
        if mode not in ("open", "closed"):
            raise ValueError(f"InsituPath mode must be 'open' or 'closed', got {mode!r}")
        self.mode = mode
        mp = li2018_mapping() if mapping is None else mapping
        self.groups, gh = list(mp.groups[out]), list(mp.groups[hidden])
        self.n_out = self.groups[0].n_out
        self.ec = ErrorCode(n=self.n_out, d_bits=d_bits)
        self.trs = [TransposedRead(pulse_cycles=pulse_cycles) for _ in self.groups]
        self.he = HiddenError([g.inputs for g in self.groups], max_shift=self.ec.max_shift)
        self.n_hid = self.he.n_in
        self.upd_o = UpdateEngine(*_table(self.groups), max_batch=max_batch, delta_bits=d_bits)
        self.upd_h = UpdateEngine(*_table(gh), max_batch=max_batch, delta_bits=self.he.d_bits)
        self.n_x = self.upd_h.n_in
        self.in_layout = data.StructLayout({"d": data.ArrayLayout(signed(d_bits), self.n_out),
                                            "h": data.ArrayLayout(unsigned(8), self.n_hid),
                                            "x": data.ArrayLayout(unsigned(8), self.n_x), "finish": 1})
        self.out_layout = self.upd_h.out_layout
        extra = self._programmer(device)
        self.req_layout = self.wv.req_layout
        tr, uh, uo, pg = self.trs[0], self.upd_h, self.upd_o, self.prog
        ports = {"i": In(stream.Signature(self.in_layout)),
                 "cmd_valid": Out(1), "cmd": Out(self.out_layout),
                 "dh_valid": Out(1), "dh": Out(self.he.out_layout),
                 "rd_req": Out(pg.signature.members["rd_req"].signature),
                 "rd_rsp": In(stream.Signature(pg.rd_rsp.payload.shape())),
                 "req": Out(stream.Signature(self.req_layout)),
                 "done": Out(pg.signature.members["done"].signature),
                 "pulse_cycles": In(self.req_layout["width"].shape, init=1),
                 "pulses": Out(32), "prog_busy": Out(1),
                 "mult_h": In(uh.mult_bits), "shift_h": In(uh.shift_bits),
                 "mult_o": In(uo.mult_bits), "shift_o": In(uo.shift_bits), "th_code": In(uh.th_bits), **extra}
        for k in range(len(self.groups)):
            ports[f"pe{k}"] = Out(PEBoardSignature(tr.n_bl, 32, 8, tr.n_rows, transposed=True,
                                                   bl_code_bits=tr.bl_code_bits))
        super().__init__(ports)

    def _programmer(self, device):
        """self.prog (the programmer taking the commands) and self.wv (open: a WriteVerify built for
        its layouts only; closed: the write-verify sequencer); -> the mode's extra ports."""
        if self.mode == "open":
            self.prog = OpenPairProgrammer(self.out_layout, device=device)
            self.wv = WriteVerify()
            self.wv._MustUse__silence = True                # layouts only (OpenPairProgrammer has its own)
            return {}
        from golden.crossbar import Crossbar
        xb = Crossbar(device, n_pe=1)
        self.margin = xb.margin_code
        self.wv = WriteVerify(margin_init=self.margin, max_pulses_init=xb.max_pulses)
        lo, hi = window_codes(xb.p)
        self.prog = PairProgrammer(self.out_layout, self.wv.cmd_layout, self.wv.res_layout, lo=lo, hi=hi,
                                   margin=self.margin)
        return {"rsp": In(stream.Signature(self.wv.rsp_layout)),
                "wv_res_valid": Out(1), "wv_res": Out(self.wv.res_layout),
                "max_pulses": In(self.wv.max_pulses.shape(), init=xb.max_pulses)}

    def elaborate(self, platform):
        m = Module()
        m.submodules.ec, m.submodules.he = self.ec, self.he
        m.submodules.upd_h, m.submodules.upd_o = self.upd_h, self.upd_o
        m.submodules.prog = pg = self.prog
        for port in ("rd_req", "req", "done") if self.mode == "open" else ("rd_req", "done"):
            wiring.connect(m, getattr(pg, port), wiring.flipped(getattr(self, port)))
        wiring.connect(m, wiring.flipped(self.rd_rsp), pg.rd_rsp)
        if self.mode == "open":
            m.d.comb += [pg.pulse_cycles.eq(self.pulse_cycles), self.pulses.eq(pg.pulses), self.prog_busy.eq(pg.busy)]
        else:
            self._write_verify(m)
        m.d.comb += [self.cmd_valid.eq(pg.cmd.valid & pg.cmd.ready), self.cmd.eq(pg.cmd.payload)]
        for k, tr in enumerate(self.trs):
            m.submodules[f"tr{k}"] = tr
            wiring.connect(m, tr.pe, wiring.flipped(getattr(self, f"pe{k}")))
        for u, sfx in ((self.upd_h, "h"), (self.upd_o, "o")):
            m.d.comb += [u.mult.eq(getattr(self, f"mult_{sfx}")), u.shift.eq(getattr(self, f"shift_{sfx}")),
                         u.th_code.eq(self.th_code)]
        img = self._backward(m)
        self._feed(m, img)
        self._commands(m)
        return m

    def _write_verify(self, m):
        """Closed mode: the pair programmer's targets through WriteVerify (rtl/programming.py's wiring,
        no host commands); its results go back to the pair programmer and out on the wv_res tap."""
        pp = self.prog
        m.submodules.write_verify = wv = self.wv
        wiring.connect(m, pp.wv_cmd, wv.cmd)
        wiring.connect(m, wv.req, wiring.flipped(self.req))
        wiring.connect(m, wiring.flipped(self.rsp), wv.rsp)
        m.d.comb += [wv.res.ready.eq(1), pp.wv_res.eq(wv.res.payload), pp.wv_res_fire.eq(wv.res.valid),
                     self.wv_res_valid.eq(wv.res.valid), self.wv_res.eq(wv.res.payload),
                     wv.pulse_cycles.eq(self.pulse_cycles), wv.max_pulses.eq(self.max_pulses),
                     wv.margin.eq(self.margin),
                     self.prog_busy.eq(pp.busy | ~pp.cmd.ready | ~wv.cmd.ready)]
        with m.If(self.req.valid & self.req.ready & (self.req.payload.op != ReqOp.READ)):
            m.d.sync += self.pulses.eq(self.pulses + 1)

    def _backward(self, m):
        """Input register, ErrorCode -> the groups' TransposedReads -> HiddenError (module docstring)."""
        ec, he = self.ec, self.he
        busy = Signal()
        img = Signal.like(self.i.payload)
        take = self.i.valid & self.i.ready
        m.d.comb += [ec.i.payload.d.eq(self.i.payload.d), ec.i.valid.eq(self.i.valid & ~busy & ~self.i.payload.finish)]
        with m.If(take):
            m.d.sync += [busy.eq(1), img.eq(self.i.payload)]
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
            m.d.sync += [he.img.payload.h.eq(img.h), he.img.payload.shift.eq(ec.o.payload.shift)]
        with m.If(he.img.valid & he.img.ready):
            m.d.sync += pend[-1].eq(0)
        for k in reversed(range(len(self.trs))):       # lowest k wins (the last assignment)
            tr = self.trs[k]
            with m.If(tr.res.valid):
                m.d.comb += [he.t.valid.eq(1), he.t.payload.eq(tr.res.payload)]
        for k, tr in enumerate(self.trs):
            lower = 0
            for t in self.trs[:k]:
                lower = lower | t.res.valid
            m.d.comb += tr.res.ready.eq(he.t.ready & ~lower)
        self._busy = busy
        return img

    def _feed(self, m, img):
        """Serialisers: upd_o gets d then h, upd_h HiddenError's d then x; FINISH to both."""
        uo, uh, he = self.upd_o, self.upd_h, self.he
        no, nh, nx = self.n_out, self.n_hid, self.n_x
        co, ch = Signal(range(no + nh + 1)), Signal(range(nh + nx + 1))
        fo, fh = Signal(), Signal()                     # the engine's items are all sent
        act, dh_held, fin = Signal(), Signal(), Signal()
        dh = Signal.like(he.o.payload)
        take = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(~self._busy & self.ec.i.ready)
        with m.If(take):
            m.d.sync += [act.eq(~self.i.payload.finish), fin.eq(self.i.payload.finish),
                         co.eq(0), ch.eq(0), fo.eq(0), fh.eq(0), dh_held.eq(0)]
        m.d.comb += [he.o.ready.eq(~dh_held), self.dh_valid.eq(he.o.valid & he.o.ready), self.dh.eq(he.o.payload)]
        with m.If(he.o.valid & he.o.ready):
            m.d.sync += [dh_held.eq(1), dh.eq(he.o.payload)]
        # upd_o: DELTA d[0..no-1], V h[0..nh-1]; upd_h: DELTA dh[0..nh-1], V x[0..nx-1]
        self._serialise(m, uo, co, fo, img.d, img.h, act | fin, fin)
        self._serialise(m, uh, ch, fh, dh.d, img.x, dh_held | fin, fin)
        with m.If(self._busy & fo & fh):
            m.d.sync += [self._busy.eq(0), act.eq(0), fin.eq(0)]

    def _serialise(self, m, eng, cnt, done, deltas, inputs, go, fin):
        """One update engine's items of an image: DELTA deltas[0..], then V inputs[0..] (or FINISH),
        counted by `cnt`; `done` once the last has been taken."""
        nd, nv = len(deltas), len(inputs)
        val = Signal(signed(eng.in_layout.members["value"].width))
        with m.Switch(cnt):
            for c in range(nd + nv):
                with m.Case(c):
                    m.d.comb += val.eq(deltas[c] if c < nd else inputs[c - nd])
        m.d.comb += [eng.i.payload.op.eq(Mux(fin, Op.FINISH, Mux(cnt < nd, Op.DELTA, Op.V))),
                     eng.i.payload.index.eq(Mux(cnt < nd, cnt, cnt - nd)), eng.i.payload.value.eq(val),
                     eng.i.valid.eq(self._busy & ~done & go)]
        with m.If(eng.i.valid & eng.i.ready):
            m.d.sync += cnt.eq(cnt + 1)
            with m.If(fin | (cnt == nd + nv - 1)):
                m.d.sync += done.eq(1)

    def _commands(self, m):
        """upd_h's commands up to its end marker, then upd_o's."""
        uo, uh = self.upd_o, self.upd_h
        sel_o = Signal()
        o = self.prog.cmd
        p = o.payload
        with m.If(sel_o):
            m.d.comb += [o.valid.eq(uo.o.valid), uo.o.ready.eq(o.ready)]
            m.d.comb += [getattr(p, f).eq(getattr(uo.o.payload, f))
                         for f in ("pe", "row_pos", "bl", "m", "n", "d_code", "end", "overflow")]
        with m.Else():
            m.d.comb += [o.valid.eq(uh.o.valid), uh.o.ready.eq(o.ready), p.eq(uh.o.payload)]
        with m.If(o.valid & o.ready & p.end):
            m.d.sync += sel_o.eq(~sel_o)


def default_instances():
    return {"insitu_path": InsituPath(), "insitu_path_closed": InsituPath(mode="closed")}
