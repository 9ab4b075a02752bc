"""Open-loop programming (Li 2018): a cell moved from its read code towards a target code by the
number of identical pulses the nominal device model needs, then no verify.

Golden counterpart: golden/hybrid.py `PairProgrammer._program` in mode "open": n =
`nominal_pulses(p, code_now, target)` (the nominal cell: no noise, no device-to-device spread,
starting from the read state, codes of VERIFY_LSB_NA = 20 nA, i.e. 0.1 uS at V_READ), then
`Crossbar.open_loop(cell, direction, n)` if n > 0 (SET if target > code_now, else RESET).
The nominal model of a linear device (li2018) is g_{k+1} = clip(g_k +- dG_L, g_lo, g_hi) (RESET
scaled by zeta); n is the k in 0..max_pulses whose g_k is closest to the target, the search
stopping after the step that crosses (or reaches) the target or stops moving, ties to the smaller
k. Here in fixed point: codes << FRAC, the step and the window edges rounded to 2**-FRAC codes
(elaboration data from the golden DeviceParams, `OpenLoop.for_device`). Exact ties can only occur
where a pulse lands on the window top (an integer code, 200 for li2018); golden's float sums then
pick that pulse (li2018: from 198 to 199, n = 1), so the RTL does too. With FRAC = 20 this equals
golden's nominal_pulses on all 2**16 (code_now, target) pairs of 8-bit codes (checked offline; the
test runs the edges and a random sample through the RTL).

  cmd  In  stream {pe, row, bl, code (read now), target}: one cell write (the pair programmer's
           write command plus the code it read for that cell).
  req  Out stream rtl/write_verify.py req_layout {op SET/RESET, pe, row, bl, width}: the n
           identical pulses (width = `pulse_cycles`), no READ.
  res  Out stream rtl/write_verify.py res_layout {pe, row, bl, ok = 1, pulses = n, final_code =
           target (nominal: nothing is verified)}: one per cmd, after its last pulse was taken
           (also for n = 0), so the pair programmer's pending-result count works unchanged.
  busy Out  a command in flight.

Timing: the search takes 4 cycles per candidate pulse (step; clip; difference; compare and
update), registers between; then one cycle per pulse request at full rate.
"""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .write_verify import ReqOp

FRAC = 20


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class OpenLoop(wiring.Component):
    def __init__(self, req_layout, res_layout, step_set, step_reset, lo, hi, max_pulses, n_pe=8, n_rows=128,
                 n_bl=16, code_bits=8, frac=FRAC, width_init=1):
        self.req_layout, self.res_layout = req_layout, res_layout
        self.step_set, self.step_reset, self.lo, self.hi = int(step_set), int(step_reset), int(lo), int(hi)
        self.max_pulses, self.code_bits, self.frac = int(max_pulses), code_bits, frac
        self.g_bits = code_bits + frac + 2        # fixed-point state (codes << frac), room for the step
        self.cmd_layout = data.StructLayout({"pe": _bits(n_pe), "row": _bits(n_rows), "bl": _bits(n_bl),
                                             "code": code_bits, "target": code_bits})
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "req": Out(stream.Signature(req_layout)),
            "res": Out(stream.Signature(res_layout)),
            "pulse_cycles": In(req_layout["width"].shape, init=width_init),
            "busy": Out(1),
        })

    @classmethod
    def for_device(cls, p, req_layout, res_layout, frac=FRAC, **kw):
        """Elaboration data from golden DeviceParams p (a linear model: constant nominal steps)."""
        from golden.devices import NA_PER_US
        from golden.write_verify import VERIFY_LSB_NA
        if p.model != "linear":
            raise ValueError(f"open-loop unit: device {p.name} is {p.model!r}, only 'linear' has constant steps")
        us = VERIFY_LSB_NA / NA_PER_US              # uS per code
        k = p.nominal_k()

        def fx(v):
            return round(v / us * (1 << frac))
        return cls(req_layout, res_layout, fx(k), fx(p.zeta * k), fx(p.g_lo_us), fx(p.g_hi_us), p.max_pulses,
                   frac=frac, **kw)

    def elaborate(self, platform):
        m = Module()
        W = self.g_bits
        c = Signal.like(self.cmd.payload)
        up = Signal()
        g, g1, t = Signal(signed(W)), Signal(signed(W)), Signal(signed(W))
        best, ad = Signal(unsigned(W)), Signal(unsigned(W))
        n, bn = Signal(range(self.max_pulses + 2)), Signal(range(self.max_pulses + 1))
        raw = Signal(signed(W + 1))
        st = {s: Signal(init=(s == "IDLE"), name=f"st_{s.lower()}")
              for s in ("IDLE", "ADD", "CLIP", "DIFF", "CMP", "PULSE", "RES")}

        def goto(a, b):
            m.d.sync += [st[a].eq(0), st[b].eq(1)]
        m.d.comb += [self.cmd.ready.eq(st["IDLE"]), self.busy.eq(~st["IDLE"])]
        with m.If(st["IDLE"] & self.cmd.valid):
            p = self.cmd.payload
            m.d.sync += [c.eq(p), up.eq(p.target > p.code), g.eq(p.code << self.frac), t.eq(p.target << self.frac),
                         best.eq(Mux(p.target > p.code, p.target - p.code, p.code - p.target) << self.frac),
                         n.eq(1), bn.eq(0)]
            if self.max_pulses == 0:
                goto("IDLE", "RES")
            else:
                goto("IDLE", "ADD")
        with m.If(st["ADD"]):
            m.d.sync += raw.eq(Mux(up, g + self.step_set, g - self.step_reset))
            goto("ADD", "CLIP")
        with m.If(st["CLIP"]):
            m.d.sync += g1.eq(Mux(raw > self.hi, self.hi, Mux(raw < self.lo, self.lo, raw)))
            goto("CLIP", "DIFF")
        with m.If(st["DIFF"]):
            m.d.sync += ad.eq(Mux(t > g1, t - g1, g1 - t))
            goto("DIFF", "CMP")
        with m.If(st["CMP"]):
            # golden: closer (ties: the smaller count, except a pulse landing on the window top)
            tie_top = (ad == best) & up & (g1 == self.hi) & (g != self.hi)
            with m.If((ad < best) | tie_top):
                m.d.sync += [best.eq(ad), bn.eq(n)]
            # stop: no move, the target crossed or reached, or max_pulses candidates tried
            crossed = (g1 == t) | (g == t) | ((g1 < t) != (g < t))
            m.d.sync += [g.eq(g1), n.eq(n + 1)]
            with m.If((g1 == g) | crossed | (n == self.max_pulses)):
                goto("CMP", "PULSE")
            with m.Else():
                goto("CMP", "ADD")
        self._pulses(m, st, goto, c, up, bn)
        return m

    def _pulses(self, m, st, goto, c, up, bn):
        """PULSE: bn requests (op by direction), registered; RES: the result."""
        left = Signal.like(bn)
        req_v, res_v = Signal(), Signal()
        rq, rs = self.req.payload, self.res.payload
        m.d.comb += [self.req.valid.eq(req_v), self.res.valid.eq(res_v),
                     rq.pe.eq(c.pe), rq.row.eq(c.row), rq.bl.eq(c.bl), rq.width.eq(self.pulse_cycles),
                     rq.op.as_value().eq(Mux(up, ReqOp.SET.value, ReqOp.RESET.value)),
                     rs.pe.eq(c.pe), rs.row.eq(c.row), rs.bl.eq(c.bl), rs.ok.eq(1), rs.pulses.eq(bn),
                     rs.final_code.eq(c.target)]
        started = Signal()
        with m.If(st["PULSE"]):
            with m.If(~started):
                m.d.sync += [started.eq(1), left.eq(bn), req_v.eq(bn != 0)]
                with m.If(bn == 0):
                    m.d.sync += [started.eq(0), res_v.eq(1)]
                    goto("PULSE", "RES")
            with m.Elif(self.req.ready):
                m.d.sync += left.eq(left - 1)
                with m.If(left == 1):
                    m.d.sync += [req_v.eq(0), started.eq(0), res_v.eq(1)]
                    goto("PULSE", "RES")
        with m.If(st["RES"] & ~res_v):
            m.d.sync += res_v.eq(1)          # max_pulses = 0: straight from IDLE
        with m.If(st["RES"] & res_v & self.res.ready):
            m.d.sync += res_v.eq(0)
            goto("RES", "IDLE")


def open_resolution(p, code_bits=8):
    """(down, up) tables for rtl/pair_programmer.py's open mode: per read code, the largest integer
    part a with a <= golden PairProgrammer("open")._resolution(code, RESET / SET) (half a nominal
    pulse from that state, in codes; smaller near and outside the window edges)."""
    import math

    from golden.crossbar import Crossbar
    from golden.devices import RESET, SET
    from golden.hybrid import PairProgrammer
    gp = PairProgrammer(Crossbar(p, n_pe=1), "open")
    return tuple(tuple(max(0, math.floor(gp._resolution(c, d))) for c in range(1 << code_bits)) for d in (RESET, SET))


def window_codes(p):
    """(lo, hi) of the pair rule in verify codes, as golden PairProgrammer computes them."""
    from golden.crossbar import Crossbar
    from golden.hybrid import PairProgrammer
    gp = PairProgrammer(Crossbar(p, n_pe=1), "open")
    return gp.lo, gp.hi


def default_instances():
    from golden.devices import preset
    from .write_verify import WriteVerify
    wv = WriteVerify()
    wv._MustUse__silence = True        # built for its layouts only
    return {"open_loop": OpenLoop.for_device(preset("li2018"), wv.req_layout, wv.res_layout)}
