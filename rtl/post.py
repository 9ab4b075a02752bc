"""Post of the conv steps: bounded ReLU + requant + max-pool, written into the next feature map.

golden.datapath.relu_requant then golden.datapath.maxpool (golden.cnn.maxpool_forward), as the
controller runs them: per finished conv position (all output channels in the accumulator), one
output channel po per cycle goes through a pipeline, stage registers q_*[k]: 0 take `h0` (the
accumulator shifts its channels down by one per taken channel: no MO:1 multiplexer), ReLU, pooled
address; 1 multiply by M (two partial products, one DSP each); 2 their sum; 3 round, shift,
saturate to u8, read the pooled cell; 4 register both; 5 write max(old, act) (the first visit of a
window writes without reading). Positions outside the pooled area (Ho or Wo not a multiple of the
pool) are dropped. The pooled position is kept as counters (offset in the window, base
addresses) instead of dividing the position by the pool size.

Signature (plain signals: the controller's accumulator hands a position over as a whole):
  h0       In(signed(acc_bits)): the channel po of the finished position (valid with `go`).
  go       In(1): a channel is taken this cycle (a finished position is held, on a conv step).
  last     Out(1): the channel taken with `go` is the position's last (a register).
  done     Out(1): one-cycle pulse, the step's last position has left stage 5 (so the next step
           never reads a cell still being written).
  step, step_oh  In: the running step, binary and one-hot (steps as rtl/controller.py plan()).
  oh1, ow1, no1, no2  In(8): the step's Ho - 1, Wo - 1, output channels - 1, - 2 (registers).
  m        In(16): the step's requant multiplier M (a register; the shift is per step, wired).
  wr[i]    Out: write port (en, addr, data) of feature map i + 1 (all its copies).
  rd[i]    Out: read port (addr, data one cycle later) of feature map i + 1's `rmw` copy.
  requant_ops, fm_writes, pool_ops  Out(32): activity counters (golden/activity.py): channels
           requantised, map writes, max-pool compares (each with its read of the pooled cell).
The step constants follow `step` one cycle later; every use is at least two cycles after a step
change. Conv steps have >= 2 output channels, so a position lasts >= 2 cycles (the counters' next
values and "last" flags are registers computed in between).

The pipeline's and the position counters' next-value registers are a submodule `pipe`, so a
clock enable can be given to them by its own copy (rtl/replica.py EnableCopies).
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .replica import replicas

FmWrite = wiring.Signature({"en": Out(1), "addr": Out(16), "data": Out(8)})
FmRead = wiring.Signature({"addr": Out(16), "data": In(8)})


class Post(wiring.Component):
    QL = 5                            # the last stage (writes)

    def __init__(self, steps, acc_bits: int):
        if any(st.n_out < 2 for st in steps[:-1]):
            raise ValueError("a conv step needs at least 2 output channels (post timing)")
        self.steps, self.acc_bits = steps, acc_bits
        ns = len(steps)
        super().__init__({
            "h0": In(signed(acc_bits)), "go": In(1), "last": Out(1), "done": Out(1),
            "step": In(range(ns + 1)), "step_oh": In(ns),
            "oh1": In(8), "ow1": In(8), "no1": In(8), "no2": In(8), "m": In(16),
            "wr": Out(FmWrite).array(ns - 1),
            "rd": Out(FmRead).array(ns - 1),
            "requant_ops": Out(32), "fm_writes": Out(32), "pool_ops": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        steps, QL, acc_bits = self.steps, self.QL, self.acc_bits
        NS = len(steps)
        step_oh, post_go, po_last = self.step_oh, self.go, self.last
        po = Signal(range(max(st.n_out for st in steps) + 1))        # output channel being stored
        pho = Signal(8)
        pwo = Signal(8)
        prh = Signal(4)                   # pho % pool
        prw = Signal(4)                   # pwo % pool
        prow = Signal(16)                 # (pho // pool) * ow * oc
        pbase = Signal(16)                # ((pho // pool) * ow + pwo // pool) * oc
        # "last" flags of the position counters as registers, for timing: pwo, pho change when po
        # wraps (>= 2 cycles apart: conv steps have >= 2 channels), po_last follows po's next value
        last_pwo = Signal()
        last_pho = Signal()
        m.d.sync += [last_pwo.eq(pwo == self.ow1), last_pho.eq(pho == self.oh1)]
        last_pos = Signal()               # this position is the step's last
        m.d.comb += last_pos.eq(last_pwo & last_pho)
        pin = Signal()                    # this position falls in a pooling window
        q_v = [Signal(name=f"qv{k}") for k in range(QL + 1)]      # per stage: valid, write, end of step
        q_go = [Signal(name=f"qgo{k}") for k in range(QL + 1)]
        q_end = [Signal(name=f"qend{k}") for k in range(QL + 1)]
        q_first = [Signal(name=f"qfirst{k}") for k in range(QL + 1)]
        q_addr = [Signal(16, name=f"qaddr{k}") for k in range(QL + 1)]
        m.submodules.pipe = mp = Module()
        for k in range(1, QL):
            mp.d.sync += [q_v[k + 1].eq(q_v[k]), q_go[k + 1].eq(q_go[k]), q_end[k + 1].eq(q_end[k]),
                          q_first[k + 1].eq(q_first[k]), q_addr[k + 1].eq(q_addr[k])]
        mp.d.sync += [q_v[1].eq(post_go), q_go[1].eq(post_go & pin), q_end[1].eq(last_pos & po_last),
                      q_first[1].eq((prh == 0) & (prw == 0)), q_addr[1].eq(pbase + po)]
        hval = self.h0
        q_relu = Signal(acc_bits - 1)
        q_m = Signal(16)
        q_prod = Signal(acc_bits + 15)
        q_act = Signal(8)
        q_act4 = Signal(8)
        [q_mh] = replicas(q_m, 1, "q_m")      # the second multiplier's own copy of M
        mp.d.sync += [q_relu.eq(Mux(hval[-1], 0, hval[:-1])), q_m.eq(self.m), q_mh.eq(self.m)]
        # the product as two registered partial products (one DSP each), then their sum (timing)
        SPL = 18
        q_pl = Signal(min(acc_bits - 1, SPL) + 16)
        q_ph = Signal(max(acc_bits - 1 - SPL, 1) + 16)
        mp.d.sync += [q_pl.eq(q_relu[:SPL] * q_m), q_ph.eq(q_relu[SPL:] * q_mh if acc_bits - 1 > SPL else 0)]
        mp.d.sync += q_prod.eq(q_pl + (q_ph << SPL))
        m.d.comb += [rp.addr.eq(q_addr[3]) for rp in self.rd]

        def on(si):        # Case pattern of step si on step_oh
            return "".join("1" if b == si else "-" for b in reversed(range(NS)))
        with m.Switch(step_oh):
            for si, st in enumerate(steps):
                with m.Case(on(si)):
                    if st.requant is not None:
                        p = st.pool
                        oh, ow, oc = st.out_shape
                        m.d.comb += pin.eq((pho < oh * p) & (pwo < ow * p))
                        # shift and rounding constant of the step: wiring and one adder
                        rq = (q_prod + (1 << (st.requant[1] - 1))) >> st.requant[1]
                        m.d.sync += q_act.eq(Mux(rq > 255, 255, rq))
                        # each map's pooled cell in its own register (no step multiplexer after
                        # the block RAM's clock-to-out)
                        q_old = Signal(8, name=f"q_old{si}")
                        m.d.sync += [q_old.eq(self.rd[si].data), q_act4.eq(q_act)]
                        with m.If(q_go[QL]):
                            m.d.comb += [self.wr[si].en.eq(1), self.wr[si].addr.eq(q_addr[QL]),
                                         self.wr[si].data.eq(Mux(q_first[QL] | (q_act4 > q_old), q_act4, q_old))]
        self._counters(m, mp, post_go, po_last, last_pos, (po, pho, pwo, prh, prw, prow, pbase))
        # activity counters at the last stage (its flags are registers)
        with m.If(q_v[QL]):
            m.d.sync += self.requant_ops.eq(self.requant_ops + 1)
        with m.If(q_go[QL]):
            m.d.sync += self.fm_writes.eq(self.fm_writes + 1)
        with m.If(q_go[QL] & ~q_first[QL]):
            m.d.sync += self.pool_ops.eq(self.pool_ops + 1)
        with m.If(q_v[QL] & q_end[QL]):
            m.d.sync += self.done.eq(1)
        with m.If(self.done):
            m.d.sync += self.done.eq(0)
        return m

    def _counters(self, m, mp, post_go, po_last, last_pos, regs):
        """The position counters: advance the window offsets and the base addresses at a position's
        last channel (the step's pool size and strides in registers, the "last" flags registered)."""
        steps, step = self.steps, self.step
        po, pho, pwo, prh, prw, prow, pbase = regs
        sc_p1 = Signal(4)                 # pool - 1
        sc_prs = Signal(16)               # pooled row stride ow * oc, pooled column stride oc
        sc_pcs = Signal(16)
        m.d.sync += [sc_p1.eq(Array(Const(st.pool - 1, 4) for st in steps)[step]),
                     sc_prs.eq(Array(Const(st.out_shape[1] * st.out_shape[2], 16) for st in steps)[step]),
                     sc_pcs.eq(Array(Const(st.out_shape[2], 16) for st in steps)[step])]
        # the counters' values for the next position, computed into registers every cycle from
        # the counters (a position lasts >= 2 cycles: they are ready for its last channel), so the
        # update is a clock enable and a plain load (timing). The counters' "last" tests: register
        # compares of the counters (c_*, valid a cycle after a change) and of the next values (n_*,
        # used in the cycle just after the load, when c_* still describe the old values)
        nx_pwo, nx_pho = Signal(8), Signal(8)
        nx_prw, nx_prh = Signal(4), Signal(4)
        nx_prow, nx_pbase = Signal(16), Signal(16)
        adv = post_go & po_last
        just = Signal()
        mp.d.sync += just.eq(adv)
        e = {}
        for n, cur_, nxt_, k in (("pwo", pwo, nx_pwo, self.ow1), ("pho", pho, nx_pho, self.oh1),
                                 ("prh", prh, nx_prh, sc_p1), ("prw", prw, nx_prw, sc_p1)):
            c_, n_ = Signal(name=f"c_{n}"), Signal(name=f"n_{n}")
            mp.d.sync += [c_.eq(cur_ == k), n_.eq(nxt_ == k)]
            e[n] = Mux(just, n_, c_)
        e_pwo, e_pho, e_prh, e_prw = e["pwo"], e["pho"], e["prh"], e["prw"]
        with mp.If(e_pwo):
            mp.d.sync += [nx_pwo.eq(0), nx_prw.eq(0)]
            with mp.If(e_pho):
                mp.d.sync += [nx_pho.eq(0), nx_prh.eq(0), nx_prow.eq(0), nx_pbase.eq(0)]
            with mp.Elif(e_prh):
                mp.d.sync += [nx_pho.eq(pho + 1), nx_prh.eq(0), nx_prow.eq(prow + sc_prs), nx_pbase.eq(prow + sc_prs)]
            with mp.Else():
                mp.d.sync += [nx_pho.eq(pho + 1), nx_prh.eq(prh + 1), nx_prow.eq(prow), nx_pbase.eq(prow)]
        with mp.Else():
            mp.d.sync += [nx_pwo.eq(pwo + 1), nx_pho.eq(pho), nx_prh.eq(prh), nx_prow.eq(prow)]
            with mp.If(e_prw):
                mp.d.sync += [nx_prw.eq(0), nx_pbase.eq(pbase + sc_pcs)]
            with mp.Else():
                mp.d.sync += [nx_prw.eq(prw + 1), nx_pbase.eq(pbase)]
        with m.If(adv):
            m.d.sync += [pwo.eq(nx_pwo), pho.eq(nx_pho), prw.eq(nx_prw), prh.eq(nx_prh), prow.eq(nx_prow),
                         pbase.eq(nx_pbase)]
        with m.If(post_go):
            m.d.sync += po_last.eq(Mux(po_last, self.no1 == 0, po == self.no2))
            with m.If(po_last):
                m.d.sync += po.eq(0)
            with m.Else():
                m.d.sync += po.eq(po + 1)

