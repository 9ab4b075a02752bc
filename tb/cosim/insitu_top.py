"""The in-situ training loop in fabric (issue 15, Li 2018's 64-54-10): one co-simulation top with
the li2018 controller (forward, softmax, output deltas, training feeder) and rtl/insitu_path.py
InsituPath (transposed reads, hidden deltas, both layers' updates, open-loop programming) on the
same 8 behavioural PEs (tb/cosim/hdl/pe_model.v). The board ELM's loop (issue 16, elm-board:
sign-WH on the output layer alone) is `SignLoopTop` below; `loop_top` picks the top by the
output layer's rule.

PEs: the controller drives every PE's SL-side read pins (SimTop); InsituPath's transposed-read
pins (sl_drive, bl_sample -> bl_valid, bl_codes: the BL-side ADCs, BL_ADC) go to the PE of each of
its read groups (li2018: groups 0-3 on PEs 0-3). Both read the same cell currents (one backdoor
load). The session keeps the two apart in time (tb/cosim/insitu_loop_main.py: the next image is
fed once the path has done the previous image's transposed reads).

InsituPath's `i` ({d, h, x, finish}) is assembled here, in fabric:
  d, h  the controller's training feeder stream (rtl/feeder.py, the tap of InsituSimTop): DELTA
        items write d[index], V items h[index]; the n_hid-th V item completes the image.
  x     the image's 64 u8 inputs as the controller takes them: a tap of the controller's image
        stream (16 words of 4 pixels, first pixel low, then the label word), captured while
        `train` is on and queued (x FIFO, 4 deep) until the image's feed completes. Chosen over a
        host-side x: the bytes the controller computed on, no second copy from the host, and no
        port into the controller's image buffer (rtl/ is not touched).
  finish  the `fin` stream (the host's end of a batch), queued behind the batch's images.
The completed items go through a 4-deep FIFO into InsituPath (it takes one image at a time).
`err` (sticky): bit 0 an item found that FIFO full, bit 1 a feed completed with no x queued,
bit 2 an x found the x FIFO full.

Programming: InsituPath's pulses (req) and verify reads (rd_req / rd_rsp) are top ports, served by
tb/cosim/open_board.py Board (the RTL's copy of the board, golden physics). InsituPath's `mode`
(the top's build): "open" (Li's blind pulses) or "closed" (Yao's threshold rule + write-verify:
`req` also carries the write-verify READs, answered on the top port `rsp`; `wv_res_valid` / `wv_res`
tap each cell's result; `max_pulses` registered like the other runtime inputs; served by
open_board.py VerifyBoard). The controller's own
programming path (write-verify, pair programmer) stays idle in this top: no host write-verify
commands, and its update engine never gets a FINISH, so no arbiter is needed (its ports stay
SimTop's, unused). `done` is counted (done_count), its overflow flag kept (upd_overflow).
"""
from __future__ import annotations

from amaranth.hdl import Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from tb.cosim.insitu_main import insitu_controller
from tb.cosim.sim_top import SimTop, adc_shift_for

FIFO_DEPTH = 4
FIFO_SIGN = 16           # SignLoopTop's item FIFO (the feeder's items back to back, SignPath at its own pace)
MAX_BATCH = 128          # InsituPath's update engines: exact sums for batches up to 128 (Li: 100)
# InsituPath's ports on the top (its runtime inputs registered); th_code renamed (SimTop has the
# controller's)
PATH_IN = ("pulse_cycles", "mult_h", "shift_h", "mult_o", "shift_o")


class InsituLoopTop(SimTop):
    """li2018 controller + InsituPath on SimTop's 8 pe_model instances (module docstring); the
    feeder tap of tb/cosim/insitu_main.py InsituSimTop (feed_valid, feed) as well."""

    def __init__(self, controller, path, adc_shift, bl_shift):
        self.path, self.bl_shift = path, bl_shift
        self.pe_group = {g.pe: k for k, g in enumerate(path.groups)}
        ps = path.signature.members
        ports = {k: ps[k] for k in ("rd_req", "rd_rsp", "req", "pulses", "prog_busy", "cmd_valid", "cmd",
                                    "dh_valid", "dh") + PATH_IN}
        ports |= {"ip_th_code": ps["th_code"], "fin": In(stream.Signature(1)), "fed": Out(32),
                  "done_count": Out(32), "upd_overflow": Out(1), "bw_idle": Out(1), "err": Out(3),
                  "feed_valid": Out(1), "feed": Out(controller.upd.in_layout)}
        if path.mode == "closed":
            ports |= {k: ps[k] for k in ("rsp", "wv_res_valid", "wv_res", "max_pulses")}
        super().__init__(controller, adc_shift, extra_ports=ports)

    def _transposed_pins(self, m, p) -> dict:
        k = self.pe_group.get(p)
        if k is None:
            return super()._transposed_pins(m, p)
        pe = getattr(self.path, f"pe{k}")
        return dict(i_sl_drive=pe.sl_drive, i_bl_sample=pe.bl_sample, i_bl_shift=self.bl_shift,
                    o_bl_valid=pe.bl_valid, o_bl_codes=pe.bl_codes, p_BL_CODE_BITS=self.path.trs[0].bl_code_bits)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.submodules.path = p = self.path
        u = self.ctrl.programming.upd_i
        m.d.comb += [self.feed_valid.eq(u.valid & u.ready), self.feed.eq(u.payload)]
        for k in ("rd_req", "req"):
            wiring.connect(m, getattr(p, k), wiring.flipped(getattr(self, k)))
        wiring.connect(m, wiring.flipped(self.rd_rsp), p.rd_rsp)
        m.d.sync += [getattr(p, k).eq(getattr(self, k)) for k in PATH_IN] + [p.th_code.eq(self.ip_th_code)]
        if p.mode == "closed":
            wiring.connect(m, wiring.flipped(self.rsp), p.rsp)
            m.d.comb += [self.wv_res_valid.eq(p.wv_res_valid), self.wv_res.eq(p.wv_res)]
            m.d.sync += p.max_pulses.eq(self.max_pulses)
        m.d.comb += [self.pulses.eq(p.pulses), self.prog_busy.eq(p.prog_busy), self.cmd_valid.eq(p.cmd_valid),
                     self.cmd.eq(p.cmd), self.dh_valid.eq(p.dh_valid), self.dh.eq(p.dh), p.done.ready.eq(1)]
        count_done(m, self, p)
        x = self._x_queue(m)
        self._assemble(m, x)
        return m

    def _x_queue(self, m):
        """The controller's image stream tapped: each image's pixels -> the x FIFO (train on)."""
        c, n_x = self.ctrl, self.path.n_x
        n_pw = -(-n_x // 4)
        if c.image_words != n_pw + 1:
            raise ValueError(f"image of {c.image_words} words, expected {n_pw} pixel words + a label")
        m.submodules.x_fifo = xf = SyncFIFO(width=8 * n_x, depth=FIFO_DEPTH)
        xr = Signal(8 * n_x)
        wc = Signal(range(c.image_words))
        with m.If(c.image.valid & c.image.ready):
            m.d.sync += wc.eq(Mux(wc == c.image_words - 1, 0, wc + 1))
            with m.Switch(wc):
                for w in range(n_pw):
                    with m.Case(w):
                        m.d.sync += [xr[8 * i:8 * i + 8].eq(c.image.payload[8 * (i - 4 * w):8 * (i - 4 * w) + 8])
                                     for i in range(4 * w, min(4 * w + 4, n_x))]
        m.d.comb += [xf.w_data.eq(xr), xf.w_en.eq(c.image.valid & c.image.ready & (wc == c.image_words - 1)
                                                  & self.train)]
        with m.If(xf.w_en & ~xf.w_rdy):
            m.d.sync += self.err[2].eq(1)
        return xf

    def _assemble(self, m, xf):
        """Feeder items (d, h) + the x FIFO -> InsituPath's `i` items, through the item FIFO;
        `fin` queued behind them as a finish item."""
        from rtl.update_engine import Op
        p = self.path
        u = self.ctrl.programming.upd_i
        item = Signal(p.in_layout)
        vcnt = Signal(range(p.n_hid))
        push = Signal()
        m.d.sync += push.eq(0)
        with m.If(u.valid & u.ready):
            with m.If(u.payload.op == Op.DELTA):
                with m.Switch(u.payload.index):
                    for o in range(p.n_out):
                        with m.Case(o):
                            m.d.sync += item.d[o].eq(u.payload.value)
            with m.Elif(u.payload.op == Op.V):
                with m.Switch(u.payload.index):
                    for j in range(p.n_hid):
                        with m.Case(j):
                            m.d.sync += item.h[j].eq(u.payload.value[:8])
                m.d.sync += vcnt.eq(Mux(vcnt == p.n_hid - 1, 0, vcnt + 1))
                with m.If(vcnt == p.n_hid - 1):
                    m.d.sync += push.eq(1)
        m.submodules.i_fifo = f = SyncFIFO(width=len(Value.cast(item)), depth=FIFO_DEPTH)
        w = Signal(p.in_layout)
        m.d.comb += [w.d.eq(item.d), w.h.eq(item.h), w.x.eq(xf.r_data), w.finish.eq(~push),
                     f.w_data.eq(w), f.w_en.eq(push | self.fin.valid), self.fin.ready.eq(f.w_rdy & ~push),
                     xf.r_en.eq(push),
                     p.i.payload.eq(f.r_data), p.i.valid.eq(f.r_rdy), f.r_en.eq(p.i.ready),
                     self.bw_idle.eq(~f.r_rdy & p.i.ready & ~push & (vcnt == 0))]
        m.d.sync += self.fed.eq(self.fed + push)
        with m.If(push & ~f.w_rdy):
            m.d.sync += self.err[0].eq(1)
        with m.If(push & ~xf.r_rdy):
            m.d.sync += self.err[1].eq(1)


def count_done(m, top, p):
    """The path's `done` stream taken at once: counted on `done_count`, its overflow kept."""
    with m.If(p.done.valid):
        m.d.sync += top.done_count.eq(top.done_count + 1)
        with m.If(p.done.payload):
            m.d.sync += top.upd_overflow.eq(1)


class SignLoopTop(SimTop):
    """The sign-WH training loop in fabric (issue 16, elm-board): the controller built with
    error="sign" (rtl/result.py: the feeder's DELTA items are the sign errors e) and rtl/sign_path.py
    SignPath (update engine rule "sign" + pair pulser) for the output layer, on SimTop's 8 PE models.
    The hidden layer is frozen: no transposed reads, no x; SignPath's pulses program the output
    layer's PE (elm-board: PE 4) through the top port `req` (tb/cosim/open_board.py Board).

    SignPath's `i` is the controller's training feeder stream (the tap, as InsituLoopTop's) as it
    is: each transfer registered, then a FIFO (FIFO_SIGN deep) into SignPath; `fin` (the end of a
    batch) queued behind as its FINISH item. `fed` counts images (their last V item), `bw_idle`:
    nothing queued for SignPath; `done_valid`: SignPath's `done` (the batch's pulses all taken).
    `err` (sticky): an item found the FIFO full."""

    def __init__(self, controller, path, adc_shift):
        self.path = path
        ps = path.signature.members
        ports = {k: ps[k] for k in ("req", "pulses", "cmd_valid", "cmd", "pulse_cycles")}
        ports |= {"fin": In(stream.Signature(1)), "fed": Out(32), "done_count": Out(32), "done_valid": Out(1),
                  "upd_overflow": Out(1), "bw_idle": Out(1), "err": Out(1),
                  "feed_valid": Out(1), "feed": Out(controller.upd.in_layout)}
        super().__init__(controller, adc_shift, extra_ports=ports)

    def elaborate(self, platform):
        from rtl.update_engine import Op
        m = super().elaborate(platform)
        m.submodules.path = p = self.path
        u = self.ctrl.programming.upd_i
        m.d.comb += [self.feed_valid.eq(u.valid & u.ready), self.feed.eq(u.payload)]
        wiring.connect(m, p.req, wiring.flipped(self.req))
        m.d.sync += p.pulse_cycles.eq(self.pulse_cycles)
        m.d.comb += [self.pulses.eq(p.pulses), self.cmd_valid.eq(p.cmd_valid), self.cmd.eq(p.cmd),
                     p.done.ready.eq(1), self.done_valid.eq(p.done.valid)]
        count_done(m, self, p)
        it, it_v = Signal(p.in_layout), Signal()           # the feeder's transfer, registered
        m.d.sync += it_v.eq(u.valid & u.ready)
        with m.If(u.valid & u.ready):      # (value: e in {-1, 0, 1} or h in 0..255, both fit SignPath's)
            m.d.sync += [it.op.eq(u.payload.op), it.index.eq(u.payload.index), it.value.eq(u.payload.value)]
        m.submodules.i_fifo = f = SyncFIFO(width=len(Value.cast(it)), depth=FIFO_SIGN)
        w = Signal(p.in_layout)
        with m.If(it_v):
            m.d.comb += w.eq(it)
        with m.Else():
            m.d.comb += w.op.eq(Op.FINISH)
        m.d.comb += [f.w_data.eq(w), f.w_en.eq(it_v | self.fin.valid), self.fin.ready.eq(f.w_rdy & ~it_v),
                     p.i.payload.eq(f.r_data), p.i.valid.eq(f.r_rdy), f.r_en.eq(p.i.ready),
                     self.bw_idle.eq(~f.r_rdy & ~it_v)]
        m.d.sync += self.fed.eq(self.fed + (it_v & (it.op == Op.V) & (it.index == p.upd.n_in - 1)))
        with m.If(it_v & ~f.w_rdy):
            m.d.sync += self.err.eq(1)
        return m


def loop_path(t, device="li2018", mode="open"):
    """The training path of InsituTrainer t's loop: SignPath for a sign-WH output layer (elm-board),
    else (li2018) InsituPath on device preset `device` in `mode` ("open" / "closed", t's cfg.mode)."""
    if t.rules[-1] == "sign":
        from rtl.sign_path import SignPath
        return SignPath.for_layer(t.mapping, t.layers[-1].name, max_batch=MAX_BATCH)
    from rtl.insitu_path import InsituPath
    return InsituPath(t.mapping, max_batch=MAX_BATCH, device=device, mode=mode)


def loop_top(t, device="li2018", mode="open"):
    """The top for InsituTrainer t (its network's in-situ scales) with `loop_path(t, device, mode)`:
    SignLoopTop for SignPath, InsituLoopTop for InsituPath."""
    from golden.insitu import SL_ADC
    from golden.transposed_read import BL_ADC
    path = loop_path(t, device, mode)
    if t.rules[-1] == "sign":
        return SignLoopTop(insitu_controller(t), path, adc_shift_for(SL_ADC))
    return InsituLoopTop(insitu_controller(t), path, adc_shift_for(SL_ADC), adc_shift_for(BL_ADC))
