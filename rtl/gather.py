"""Patch gather (the issuer): for every output position of a step and every group slot, the input
patch of each read lane, gathered from the step's input feature map, and the lanes' commands.

Golden counterpart: the patch of read group g at position (ho, wo) is golden.cnn.im2col of the
input map (zero padding) at that position, restricted to the group's unrolled fan-in indices
g.inputs (golden/mapping.py); golden.mapping.group_patch gives it.

The lanes run in lockstep (one group slot of every lane per hand-over); a lane with fewer groups
than the others in a step gets null groups (n_out = 0). Positions in raster order, group slots in
order within a position.

  cmd        Out stream {lane: [n_lanes] {patch: [n_bl] u8, row_base, n_out}, tag: 2}
                          one item per group slot, for all lanes; tag bit 0: the position's first
                          slot, bit 1: its last
  addr       Out [n_lanes] u16   feature-map address of each lane's tap (HWC order, byte address
                                 into the image words for step 0); the data must come back
                                 registered by the RAM (its read port) at the next cycle
  img_data   In  [lanes of step 0] u32   the image RAM's read data (4 pixels per word)
  fm{f}_data In  [lanes of step f + 1] u8  feature map f + 1's read data (one RAM copy per lane)
  step, step_oh, sc  In  the step (rtl/sequencer.py: number, one-hot, constants registers)
  active     In  1    the issuer runs (rtl/sequencer.py `issue`)
  restart    In  1    the position counters restart (a new step): they hold 0 from the next cycle
  end        Out 1    pulse: the step's last group slot has been handed over
  fm_reads   Out 32   counter: the map reads of the patches, one per valid in-bounds tap of a lane
                      (zero padding and null groups read nothing; golden.activity fm_reads)

Timing: address generation is pipelined (ho, wo, gi are stable during a gather): tap jj is issued
(stage 0); its table entry is registered (1), then y/x (2), y*(w*c), x*c and the in-bounds flag
(3: multiplier outputs registered), the address y*w*c + x*c + c (4); the RAM answers at stage 5
(its output is registered right away: block RAM clock-to-out is long) and stage 6 writes the
patch. 16 taps + 6 stages = 23 cycles per gather (24 from a hand-over: it starts on adv_gi),
hidden under a group's 32 pulse cycles. The pipeline's registers are a submodule `addr` (a clock
enable copy of its own, rtl/replica.py enable_groups); the patch registers stay in this module
(as a submodule of their own, yosys' synth_xilinx failed an assertion in ABC9: docs/synth.md).
"""
from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .sequencer import Sequencer, step_case


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


GL = 6      # stages of the gather pipeline: the patch is written at stage GL


class Gather(wiring.Component):
    """`steps`: the controller's step table (rtl/controller.py `plan`: per step the lanes' groups,
    their taps (valid, c, kh, kw) per BL, the pad)."""

    def __init__(self, steps, n_bl=16, n_rows=128, max_out=12):
        self.steps, self.n_bl = steps, n_bl
        self.n_lanes = max(len(s.lanes) for s in steps)
        self.lane_layout = data.StructLayout({
            "patch": data.ArrayLayout(unsigned(8), n_bl),
            "row_base": _bits(n_rows),
            "n_out": _bits(max_out + 1),        # 0: a null group
        })
        self.cmd_layout = data.StructLayout({"lane": data.ArrayLayout(self.lane_layout, self.n_lanes), "tag": 2})
        ports = {
            "cmd": Out(stream.Signature(self.cmd_layout)),
            "addr": Out(data.ArrayLayout(16, self.n_lanes)),
            "img_data": In(data.ArrayLayout(32, len(steps[0].lanes))),
            "step": In(range(len(steps) + 1)), "step_oh": In(len(steps)), "sc": In(Sequencer.const_layout),
            "active": In(1), "restart": In(1), "end": Out(1),
            "fm_reads": Out(32),
        }
        for f in range(len(steps) - 1):
            ports[f"fm{f}_data"] = In(data.ArrayLayout(8, len(steps[f + 1].lanes)))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        steps, NL, NBL = self.steps, self.n_lanes, self.n_bl
        # position counters and group slot, shared by the lanes (lockstep)
        s = SimpleNamespace()
        s.ho, s.wo = Signal(8), Signal(8)
        s.gi = Signal(range(max(2, *(len(st.lanes[0][1]) for st in steps))))   # >= 1 bit: one group a lane
        s.patches = [Signal(data.ArrayLayout(unsigned(8), NBL), name=f"patch{li}") for li in range(NL)]
        s.fetch_done = Signal()
        s.jj = Signal(range(NBL + 2))   # tap being issued this cycle
        s.g_v = [Signal(name=f"gv{k}") for k in range(GL + 1)]          # tap valid per stage
        s.g_j = [Signal(range(NBL), name=f"gj{k}") for k in range(GL + 1)]  # tap index per stage
        s.adv_gi = Signal()       # the group counters advance (a cycle after a hand-over, below)
        m.d.comb += [s.g_v[0].eq(self.active & ~s.fetch_done & (s.jj < NBL) & ~s.adv_gi), s.g_j[0].eq(s.jj)]
        m.submodules.addr = mad = Module()
        for k in range(GL):
            m.d.sync += [s.g_v[k + 1].eq(s.g_v[k]), s.g_j[k + 1].eq(s.g_j[k])]
        rd_data = self._address_pipeline(m, mad, s)
        # gather FSM: jj issues the taps; the data of the tap at the last stage goes into the patches
        with m.If(s.g_v[0]):
            m.d.sync += s.jj.eq(s.jj + 1)
        # activity counter: the lanes' reads at the last stage, counted a cycle later (registered)
        n_rd = Signal(range(NL + 1))
        m.d.sync += [n_rd.eq(Mux(s.g_v[GL], sum(s.q_inb[li] for li in range(NL)), 0)),
                     self.fm_reads.eq(self.fm_reads + n_rd)]
        with m.If(s.g_v[GL]):
            for li in range(NL):
                m.d.sync += s.patches[li][s.g_j[GL]].eq(Mux(s.q_inb[li], rd_data[li], 0))
            with m.If(s.g_j[GL] == NBL - 1):
                m.d.sync += s.fetch_done.eq(1)
        self._handover(m, s)
        with m.If(self.restart):   # a new step: the counters restart
            m.d.sync += [s.ho.eq(0), s.wo.eq(0), s.gi.eq(0), s.jj.eq(0), s.fetch_done.eq(0)]
        return m

    def _address_pipeline(self, m, mad, s):
        """Stages 1-5 in `mad`: table entry, y/x, products and bounds, address, RAM data; -> the
        per-lane tap data at stage GL (the step's source, an AND-OR on the one-hot step)."""
        steps, NL, NBL, sc, step_oh = self.steps, self.n_lanes, self.n_bl, self.sc, self.step_oh
        t_v = [Signal(name=f"tv{li}") for li in range(NL)]
        t_c = [Signal(8, name=f"tc{li}") for li in range(NL)]
        t_h = [Signal(8, name=f"th{li}") for li in range(NL)]
        t_w = [Signal(8, name=f"tw{li}") for li in range(NL)]
        y_v = [Signal(name=f"yv{li}") for li in range(NL)]
        y_c = [Signal(8, name=f"yc{li}") for li in range(NL)]
        ys = [Signal(signed(10), name=f"y{li}") for li in range(NL)]
        xs = [Signal(signed(10), name=f"x{li}") for li in range(NL)]
        r_inb = [Signal(name=f"rinb{li}") for li in range(NL)]
        r_c = [Signal(8, name=f"rc{li}") for li in range(NL)]
        r_x = [Signal(signed(18), name=f"rx{li}") for li in range(NL)]        # x * c
        r_y = [Signal(signed(18), name=f"ry{li}") for li in range(NL)]        # y * (w * c)
        lane_addr = [Signal(16, name=f"addr{li}") for li in range(NL)]
        lane_inb = [Signal(name=f"inb{li}") for li in range(NL)]
        # (ho - pad), (wo - pad): registered (ho, wo and the step change at a group hand-over, 2 cycles
        # before stage 2 of the next gather; so the pad comes from `step` itself, not a constants register)
        hop = Signal(signed(10))
        wop = Signal(signed(10))
        pad_now = Array(Const(st.pad, 8) for st in steps)[self.step]
        mad.d.sync += [hop.eq(s.ho - pad_now), wop.eq(s.wo - pad_now)]
        # tap table index gi * NBL + jj (jj < NBL while a tap is valid: wiring when NBL is a power of 2)
        tidx = Cat(s.jj[:_bits(NBL)], s.gi) if NBL & (NBL - 1) == 0 else s.gi * NBL + s.jj
        # per lane: the step's table entry, an AND-OR over the steps on the one-hot step
        for li in range(NL):
            tabs = [[], [], [], []]
            for si, st in enumerate(steps):
                if li < len(st.lanes):
                    flat = [t for g in st.taps[li] for t in g]
                    ib = _bits(len(flat))
                    for f, w in enumerate((1, 8, 8, 8)):
                        tab = Array(Const(t[f], w) for t in flat)
                        tabs[f].append(Mux(step_oh[si], tab[tidx[:ib]], 0))
            for f, dst in enumerate((t_v[li], t_c[li], t_h[li], t_w[li])):
                v = tabs[f][0]
                for x in tabs[f][1:]:
                    v = v | x
                mad.d.sync += dst.eq(v)
        for li in range(NL):
            mad.d.sync += [y_v[li].eq(t_v[li]), y_c[li].eq(t_c[li]), ys[li].eq(hop + t_h[li]), xs[li].eq(wop + t_w[li])]
            mad.d.sync += [r_inb[li].eq(y_v[li] & (ys[li] >= 0) & (ys[li] < sc.h) & (xs[li] >= 0) & (xs[li] < sc.w)),
                           r_y[li].eq(ys[li] * sc.wc), r_x[li].eq(xs[li] * sc.c), r_c[li].eq(y_c[li])]
            mad.d.sync += [lane_inb[li].eq(r_inb[li]), lane_addr[li].eq(r_y[li] + r_x[li] + r_c[li])]
            m.d.comb += self.addr[li].eq(lane_addr[li])
        prev_inb = [Signal(name=f"pinb{li}") for li in range(NL)]
        prev_byte = [Signal(2, name=f"pbyte{li}") for li in range(NL)]
        s.q_inb = [Signal(name=f"qinb{li}") for li in range(NL)]
        q_byte = [Signal(2, name=f"qbyte{li}") for li in range(NL)]
        for li in range(NL):
            mad.d.sync += [prev_inb[li].eq(lane_inb[li]), prev_byte[li].eq(lane_addr[li][:2]),
                           s.q_inb[li].eq(prev_inb[li]), q_byte[li].eq(prev_byte[li])]
        n_img = len(steps[0].lanes)
        fm_n = [len(steps[f + 1].lanes) for f in range(len(steps) - 1)]
        img_q = [Signal(32, name=f"imgq{li}") for li in range(n_img)]
        mad.d.sync += [img_q[li].eq(self.img_data[li]) for li in range(n_img)]
        fm_q = [[Signal(8, name=f"fmq{f}_{li}") for li in range(n)] for f, n in enumerate(fm_n)]
        for f, n in enumerate(fm_n):
            src = getattr(self, f"fm{f}_data")
            mad.d.sync += [fm_q[f][li].eq(src[li]) for li in range(n)]
        rd_data = [Signal(8, name=f"rd{li}") for li in range(NL)]
        # the step's source as an AND-OR on the one-hot step (no priority chain)
        for li in range(NL):
            srcs = []
            for si in range(len(steps)):
                if si == 0:
                    if li < n_img:
                        srcs.append(Mux(step_oh[si], img_q[li].word_select(q_byte[li], 8), 0))
                elif li < fm_n[si - 1]:
                    srcs.append(Mux(step_oh[si], fm_q[si - 1][li], 0))
            if srcs:
                acc_src = srcs[0]
                for x in srcs[1:]:
                    acc_src = acc_src | x
                m.d.comb += rd_data[li].eq(acc_src)
        return rd_data

    def _handover(self, m, s):
        """The patches and the group's lane parameters to the lanes; the counters' advance."""
        steps, NS, sc = self.steps, len(self.steps), self.sc
        # For timing the group's lane parameters, its tag and the "last group / column / row" flags
        # are registers, computed from gi, wo, ho in the cycle after they change (a hand-over is
        # >= 23 cycles after the previous one)
        last_gi = Signal()
        last_wo = Signal()
        last_ho = Signal()
        first_gi = Signal()
        m.d.sync += [last_gi.eq(s.gi == sc.ng1), last_wo.eq(s.wo == sc.ow1), last_ho.eq(s.ho == sc.oh1),
                     first_gi.eq(s.gi == 0)]
        m.d.comb += [self.cmd.valid.eq(self.active & s.fetch_done), self.cmd.payload.tag.eq(first_gi | (last_gi << 1))]
        for li in range(self.n_lanes):
            c_rb = Signal.like(self.cmd.payload.lane[li].row_base, name=f"crb{li}")
            c_no = Signal.like(self.cmd.payload.lane[li].n_out, name=f"cno{li}")
            m.d.comb += [self.cmd.payload.lane[li].patch.eq(s.patches[li]),
                         self.cmd.payload.lane[li].row_base.eq(c_rb), self.cmd.payload.lane[li].n_out.eq(c_no)]
            with m.Switch(self.step_oh):
                for si, st in enumerate(steps):
                    with m.Case(step_case(si, NS)):
                        if li < len(st.lanes):
                            gs = st.lanes[li][1]
                            rbt = Array(Const(g.row_base if g else 0, 8) for g in gs)
                            nto = Array(Const(g.n_out if g else 0, 8) for g in gs)
                            m.d.sync += [c_rb.eq(rbt[s.gi]), c_no.eq(nto[s.gi])]
                        else:
                            m.d.sync += c_no.eq(0)
        # the flags combined (registered too): each counter's enable is then fire & one flag
        end_row = Signal()
        end_all = Signal()
        m.d.sync += [end_row.eq((s.gi == sc.ng1) & (s.wo == sc.ow1)),
                     end_all.eq((s.gi == sc.ng1) & (s.wo == sc.ow1) & (s.ho == sc.oh1))]
        fire = Signal()
        m.d.comb += fire.eq(self.cmd.valid & self.cmd.ready)
        # the counters advance a cycle after the hand-over, on registered decisions (timing: each
        # counter's clock enable is then one LUT of flip-flops, not the lanes' ready through the
        # flags); the next gather starts then too (g_v[0] waits for adv_gi), still hidden under
        # the group's 32 pulse cycles, and the flags hold in between (they follow gi, wo, ho)
        adv_wo, adv_ho, adv_end = Signal(), Signal(), Signal()
        m.d.sync += [s.adv_gi.eq(fire), adv_wo.eq(fire & last_gi), adv_ho.eq(fire & end_row),
                     adv_end.eq(fire & end_all)]
        with m.If(fire):
            m.d.sync += [s.fetch_done.eq(0), s.jj.eq(0)]
        with m.If(s.adv_gi):
            m.d.sync += s.gi.eq(Mux(last_gi, 0, s.gi + 1))
        with m.If(adv_wo):
            m.d.sync += s.wo.eq(Mux(last_wo, 0, s.wo + 1))
        with m.If(adv_ho):
            m.d.sync += s.ho.eq(Mux(last_ho, 0, s.ho + 1))
        m.d.comb += self.end.eq(adv_end)
