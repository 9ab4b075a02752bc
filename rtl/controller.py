"""The controller top: the whole inference datapath of the CNN on 8 PEs, driven by mapping data.

The layer sequence and every table come from the golden model (golden/cnn.py layers,
golden/mapping.py read groups), so another CNN of the same layer kinds generates another
controller. Per weight layer ("step"):

  issuer  --patches-->  read lanes (one per PE the layer uses, in lockstep)  --D-->  accumulator
     ^ feature-map RAM                     | PE ports (rtl/pe_board.py)             | A per position
     |                                                                              v
  next step's feature-map RAM  <--  post (rtl/post.py: bounded ReLU + requant + max-pool, read-modify-write)
  (last step: the logits go to the result stage, rtl/result.py: softmax, argmax, delta -> `result` stream;
   training: the feeder, rtl/feeder.py, hands deltas and FC inputs V to the programming path,
   rtl/programming.py: update engine -> pair programmer -> write-verify -> PE programming ports)

A dense layer is run as a convolution whose kernel covers its whole input map (k = H = W, one
output position): its unrolled fan-in c*H*W + h*W + w is then exactly the channel-major flatten
of golden/cnn.py. Patches are gathered from the feature-map RAM by an address generator, one
input per cycle (zero outside the map = padding); a group's gather (23 cycles, pipelined) hides under the
previous group's pulses (8 slots x 4 cycles), so the lanes pulse back to back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden import cnn
from golden.datapath import softmax_params
from golden.mapping import Mapping, build_mapping

from .pe_board import PEBoardSignature
from .read_lane import ReadLane
from .onehot import any_of
from .replica import replicas, slices
from .post import Post
from .result import ResultStage, result_layout
from .feeder import Feeder
from .programming import ProgrammingPath, connect_programming
from .update_engine import fc_groups


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


@dataclass
class Step:
    """One weight layer as the controller runs it (elaboration-time data)."""
    name: str
    in_shape: tuple            # (H, W, C) of the input feature map
    k: int
    pad: int
    out_hw: tuple              # (Ho, Wo) conv output positions
    n_out: int
    lanes: list                # per lane: (pe, [group or None, ...]) (None: null group)
    requant: tuple | None      # (M, sh) for conv steps; None for the final dense layer
    pool: int = 1
    out_shape: tuple = ()      # (H, W, C) written to the next feature map
    taps: list = field(default_factory=list)  # per lane, per group slot: [(valid, c, kh, kw)] * n_bl


def plan(layers=cnn.YAO2020, mapping: Mapping | None = None, requant=None, input_shape=cnn.INPUT_SHAPE,
         n_bl=16) -> list[Step]:
    mapping = mapping or build_mapping(layers)
    steps, shape = [], input_shape
    shapes = cnn.shapes(layers, input_shape)
    for i, L in enumerate(layers):
        if isinstance(L, cnn.Pool):
            st = steps[-1]
            st.pool = L.size
            st.out_shape = shapes[i]
            shape = shapes[i]
            continue
        h, w, c = shape
        if isinstance(L, cnn.Conv):
            k, pad, n_out = L.k, L.pad, L.out_ch
        else:
            if h != w:
                raise ValueError(f"{L.name}: a dense layer runs as a square convolution; input {shape}")
            k, pad, n_out = h, 0, L.n_out
        groups = mapping.groups[L.name]
        pes = []
        for g in groups:
            if g.pe not in pes:
                pes.append(g.pe)
        per = [[g for g in groups if g.pe == pe] for pe in pes]
        depth = max(len(p) for p in per)
        lanes = [(pe, gs + [None] * (depth - len(gs))) for pe, gs in zip(pes, per)]
        taps = []
        for _, gs in lanes:
            lt = []
            for g in gs:
                t = [(0, 0, 0, 0)] * n_bl
                if g is not None:
                    for j, f in enumerate(g.inputs):
                        t[j] = (1, f // (k * k), (f % (k * k)) // k, f % k)
                lt.append(t)
            taps.append(lt)
        oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        rq = None if isinstance(L, cnn.Dense) else tuple(requant[L.name])
        steps.append(Step(L.name, shape, k, pad, (oh, ow), n_out, lanes, rq, 1, (oh, ow, n_out), taps))
        shape = shapes[i]
    if steps[-1].requant is not None:
        raise ValueError("the last weight layer must be dense (it produces the logits)")
    return steps


class Controller(wiring.Component):
    """Inference controller. Ports: `image` stream (4 pixels per word, raster order), `result`
    stream (class and logits per image), 8 PE-board ports, counters."""

    def __init__(self, requant: dict, softmax: tuple, layers=cnn.YAO2020, mapping: Mapping | None = None,
                 n_pe=8, n_bl=16, n_rows=128, n_adc=32, input_bits=8, code_bits=8, pulse_cycles=4, logit_bits=24,
                 window_codes=(25, 200), replica: bool = False):
        # replica=True: one of the convolver groups of rtl/replicated.py, which owns the shared
        # programming path and the FC arbitration (see the ports added at the end of __init__)
        self.replica = replica
        self.steps = plan(layers, mapping, requant, n_bl=n_bl)
        self.n_pe, self.n_bl, self.n_rows, self.n_adc = n_pe, n_bl, n_rows, n_adc
        self.input_bits, self.code_bits, self.pulse_cycles = input_bits, code_bits, pulse_cycles
        self.n_lanes = max(len(s.lanes) for s in self.steps)
        self.max_out = max(s.n_out for s in self.steps)
        self.n_classes = self.steps[-1].n_out
        self.logit_bits = logit_bits
        self.softmax_m, self.softmax_sh = softmax
        h, w, c = self.steps[0].in_shape
        self.image_pixels = h * w * c
        self.image_words = (self.image_pixels + 3) // 4 + 1   # + one word carrying the label
        mapping = mapping or build_mapping(layers)
        # the programming path (rtl/programming.py); its blocks' layouts shape the ports below
        self.programming = ProgrammingPath(*fc_groups(mapping, self.steps[-1].name), n_pe=n_pe, n_rows=n_rows,
                                           n_bl=n_bl, code_bits=code_bits, window_codes=window_codes)
        self.wv, self.upd, self.pp = self.programming.wv, self.programming.upd, self.programming.pp
        self.result_layout = result_layout(self.n_classes, logit_bits)
        ports = {
            "image": In(stream.Signature(unsigned(32))),
            "result": Out(stream.Signature(self.result_layout)),
            "pe": Out(PEBoardSignature(n_bl, n_adc, code_bits, n_rows)).array(n_pe),
            # programming: cell commands in, per-cell results out (rtl/write_verify.py); the
            # request/response pair goes to the PE board's programming drivers and verify ADC
            "prog": In(stream.Signature(self.wv.cmd_layout)),
            "prog_res": Out(stream.Signature(self.wv.res_layout)),
            "prog_req": Out(stream.Signature(self.wv.req_layout)),
            "prog_rsp": In(stream.Signature(self.wv.rsp_layout)),
            # hybrid training (in fabric): with `train` set, every image's delta and FC input V go
            # to the update engine; `upd_finish` ends a batch; the commands go through the pair
            # programmer (verify reads on vread_req/vread_rsp) to the write-verify sequencer;
            # `upd_done` says the batch's programming is over (payload 1: the batch overflowed the
            # update engine's exact accumulation, rtl/update_engine.py)
            "train": In(1),
            "eta_m": In(16), "eta_sh": In(6), "th_code": In(16, init=15),
            "upd_finish": In(stream.Signature(1)),
            "upd_done": Out(stream.Signature(1)),
            "vread_req": Out(stream.Signature(self.pp.rd_layout)),
            "vread_rsp": In(stream.Signature(data.StructLayout({"code": code_bits}))),
            "cycles": Out(32),          # cycles of the last image, start -> logits ready
            "timestamp": Out(32),       # free-running cycle counter (throughput = result spacing)
            "slot_reads": Out(32),      # totals since reset
            "conv_rounds": Out(32),
            "lane_idle": Out(32),       # lane-cycles with no group while a step runs (stalls)
            "overrun": Out(1),          # sticky: a position finished before the previous was stored
            "set_pulses": Out(32),      # programming totals since reset: SET / RESET pulses sent to the
            "reset_pulses": Out(32),    # PE board, verify reads (write-verify reads + the pair
            "verify_reads": Out(32),    # programmer's conductance reads)
            "busy": Out(1),             # an image, a result or training work is in flight
            "status": Out(8),           # training path state (status register): see elaborate
        }
        if replica:
            # no programming path of its own: the training feeder's stream leaves on `upd_out` (to the
            # shared update engine); the last (dense) step runs only while `fc_gnt` (shared FC PEs)
            for k in ("prog", "prog_res", "prog_req", "prog_rsp", "eta_m", "eta_sh", "th_code", "upd_done",
                      "vread_req", "vread_rsp", "set_pulses", "reset_pulses", "verify_reads"):
                del ports[k]
            ports.update({"upd_out": Out(stream.Signature(self.upd.in_layout)), "fc_req": Out(1), "fc_gnt": In(1)})
            self.programming.silence()     # layouts only: not elaborated here
        super().__init__(ports)

    def _n_accum(self) -> int:      # channel slices of the accumulation (accum{k})
        return min(4, self.max_out)

    def enable_groups(self) -> list[str]:
        """The submodule paths that hold large groups of registers: run under a clock enable (the
        board core's tick), each can take its own copy of it (rtl/replica.py EnableCopies)."""
        lane = ReadLane.enable_groups_for(self.max_out)
        return ([*(f"programming.{g}" for g in self.programming.enable_groups()), "result.smfeed",
                 "result.softmax", "gather", "post.pipe"]
                + [f"accum{k}" for k in range(self._n_accum())]
                + [f"lane{li}{sub}" for li in range(self.n_lanes) for sub in ["", *("." + g for g in lane)]])

    def elaborate(self, platform):
        m = Module()
        steps, NL, MO, NBL = self.steps, self.n_lanes, self.max_out, self.n_bl
        lanes = []
        for li in range(NL):
            lane = ReadLane(NBL, self.n_rows, self.n_adc, self.input_bits, self.code_bits, MO, self.pulse_cycles)
            m.submodules[f"lane{li}"] = lane
            lanes.append(lane)

        # ------------------------------------------------------------ programming path
        if self.replica:   # the shared path is in rtl/replicated.py: the feeder's stream leaves on upd_out
            upd_i = wiring.flipped(self.upd_out)
            prog_status = dict(engine_valid=Const(0), pp_busy=Const(0), pp_cmd_ready=Const(0), wv_ready=Const(1))
        else:
            m.submodules.programming = pg = self.programming
            connect_programming(m, self, pg)
            upd_i = pg.upd_i
            prog_status = {k: getattr(pg, k) for k in ("engine_valid", "pp_busy", "pp_cmd_ready", "wv_ready")}
        ps = SimpleNamespace(**prog_status)

        # ------------------------------------------------------------ feature maps
        m.submodules.img = img = Memory(shape=unsigned(32), depth=self.image_words, init=[])
        # one copy of each feature map per reader (the lanes of the step that reads it, the pooling
        # read-modify-write, the training feeder), all written together: each copy is then 1 write +
        # 1 read port, which maps to block RAM (3-4 read ports on one memory do not)
        fm_copies, fm_wr = [], []      # per map: {reader: Memory}, (en, addr, data) of the shared write
        for si, st in enumerate(steps[:-1]):
            oh, ow, oc = st.out_shape
            readers = [f"l{li}" for li in range(len(steps[si + 1].lanes))] + ["rmw"]
            if si == len(steps) - 2:
                readers.append("v")
            wr = (Signal(name=f"fm{si + 1}_we"), Signal(16, name=f"fm{si + 1}_wa"), Signal(8, name=f"fm{si + 1}_wd"))
            copies = {}
            for r in readers:
                mem = Memory(shape=unsigned(8), depth=oh * ow * oc, init=[])
                m.submodules[f"fm{si + 1}_{r}"] = mem
                wp = mem.write_port()
                m.d.comb += [wp.en.eq(wr[0]), wp.addr.eq(wr[1]), wp.data.eq(wr[2])]
                copies[r] = mem
            fm_copies.append(copies)
            fm_wr.append(wr)

        # image loading: words in raster order; the controller starts once the image is complete
        img_w = img.write_port()
        load_addr = Signal(range(self.image_words + 1))
        img_full = Signal()
        m.d.comb += [self.image.ready.eq(~img_full), img_w.addr.eq(load_addr), img_w.data.eq(self.image.payload)]
        label_in = Signal(8)
        label = Signal(8)
        load_last = Signal(init=self.image_words == 1)   # load_addr == image_words - 1, a register
        with m.If(self.image.valid & self.image.ready):
            m.d.comb += img_w.en.eq(1)
            with m.If(load_last):
                m.d.sync += label_in.eq(self.image.payload[:8])
            with m.If(load_last):
                m.d.sync += [load_addr.eq(0), img_full.eq(1), load_last.eq(self.image_words == 1)]
            with m.Else():
                m.d.sync += [load_addr.eq(load_addr + 1), load_last.eq(load_addr == self.image_words - 2)]

        # ------------------------------------------------------------ step state
        step = Signal(range(len(steps) + 1))
        # for timing: the step also one-hot (set with `step`; a case of a step is one flip-flop),
        # and the step's constants in registers (they follow `step` one cycle later; every use is
        # at least two cycles after a step change: the first gather or the first position)
        NS = len(steps)
        step_oh = Signal(NS, init=1)

        def on(si):        # Case pattern of step si on step_oh
            return "".join("1" if b == si else "-" for b in reversed(range(NS)))
        sc_h = Signal(8)
        sc_w = Signal(8)
        sc_c = Signal(8)
        sc_wc = Signal(16)
        sc_ng1 = Signal(8)     # groups per position - 1
        sc_oh1 = Signal(8)     # Ho - 1, Wo - 1
        sc_ow1 = Signal(8)
        sc_no1 = Signal(8)     # output channels - 1, - 2
        sc_no2 = Signal(8)
        sc_m = Signal(16)      # requant multiplier
        m.d.sync += [sc_h.eq(Array(Const(st.in_shape[0], 8) for st in steps)[step]),
                     sc_w.eq(Array(Const(st.in_shape[1], 8) for st in steps)[step]),
                     sc_c.eq(Array(Const(st.in_shape[2], 8) for st in steps)[step]),
                     sc_wc.eq(Array(Const(st.in_shape[1] * st.in_shape[2], 16) for st in steps)[step]),
                     sc_ng1.eq(Array(Const(len(st.lanes[0][1]) - 1, 8) for st in steps)[step]),
                     sc_oh1.eq(Array(Const(st.out_hw[0] - 1, 8) for st in steps)[step]),
                     sc_ow1.eq(Array(Const(st.out_hw[1] - 1, 8) for st in steps)[step]),
                     sc_no1.eq(Array(Const(st.n_out - 1, 8) for st in steps)[step]),
                     sc_no2.eq(Array(Const(max(st.n_out - 2, 0), 8) for st in steps)[step]),
                     sc_m.eq(Array(Const(st.requant[0] if st.requant else 0, 16) for st in steps)[step])]
        running = Signal()
        ncycles = Signal(32)
        m.d.sync += self.timestamp.eq(self.timestamp + 1)
        with m.If(running):
            m.d.sync += ncycles.eq(ncycles + 1)

        # ------------------------------------------------------------ issuer (per lane gather)
        # position counters and group slot, shared by the lanes (lockstep)
        iss_active = Signal()
        ho = Signal(8)
        wo = Signal(8)
        gi = Signal(range(max(len(st.lanes[0][1]) for st in steps)))
        cmd_valid = Signal()
        patches = [Signal(data.ArrayLayout(unsigned(8), NBL), name=f"patch{li}") for li in range(NL)]
        fetch_done = Signal()

        # read ports: one per lane of the step that reads the map, each on its own copy
        img_r = [img.read_port() for _ in range(len(steps[0].lanes))]
        fm_r = [[fm_copies[f][f"l{li}"].read_port() for li in range(len(steps[f + 1].lanes))]
                for f in range(len(fm_copies))]

        jj = Signal(range(NBL + 2))   # tap being issued this cycle
        # address generation, pipelined for timing (ho, wo, gi are stable during a gather): tap jj is
        # issued (stage 0); its table entry is registered (1), then y/x (2), y*(w*c), x*c and the
        # in-bounds flag (3: multiplier outputs registered), the address y*w*c + x*c + c (4); the RAM
        # answers at stage 5 (its output is registered right away: block RAM clock-to-out is long)
        # and stage 6 writes the patch. The step's constants are registers (sc_*).
        # 16 taps + 6 stages = 23 cycles per gather (24 from a hand-over: it starts on adv_gi, below),
        # still hidden under a group's 32 pulse cycles.
        GL = 6
        g_v = [Signal(name=f"gv{k}") for k in range(GL + 1)]          # tap valid per stage
        g_j = [Signal(range(NBL), name=f"gj{k}") for k in range(GL + 1)]  # tap index per stage
        adv_gi = Signal()       # the group counters advance (a cycle after a hand-over, below)
        m.d.comb += [g_v[0].eq(iss_active & ~fetch_done & (jj < NBL) & ~adv_gi), g_j[0].eq(jj)]
        for k in range(GL):
            m.d.sync += [g_v[k + 1].eq(g_v[k]), g_j[k + 1].eq(g_j[k])]
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
        # before stage 2 of the next gather; so the pad comes from `step` itself, not sc_pad)
        hop = Signal(signed(10))
        wop = Signal(signed(10))
        pad_now = Array(Const(st.pad, 8) for st in steps)[step]
        # (the address pipeline's registers are a submodule, `gather`: its own copy of the board's tick)
        m.submodules.gather = mad = Module()
        mad.d.sync += [hop.eq(ho - pad_now), wop.eq(wo - pad_now)]
        # tap table index gi * NBL + jj (jj < NBL while a tap is valid: wiring when NBL is a power of 2)
        tidx = Cat(jj[:_bits(NBL)], gi) if NBL & (NBL - 1) == 0 else gi * NBL + jj
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
            mad.d.sync += [r_inb[li].eq(y_v[li] & (ys[li] >= 0) & (ys[li] < sc_h) & (xs[li] >= 0) & (xs[li] < sc_w)),
                         r_y[li].eq(ys[li] * sc_wc), r_x[li].eq(xs[li] * sc_c), r_c[li].eq(y_c[li])]
            mad.d.sync += [lane_inb[li].eq(r_inb[li]), lane_addr[li].eq(r_y[li] + r_x[li] + r_c[li])]
        for li, rp in enumerate(img_r):
            m.d.comb += rp.addr.eq(lane_addr[li] >> 2)
        for f in range(len(fm_r)):
            for li, rp in enumerate(fm_r[f]):
                m.d.comb += rp.addr.eq(lane_addr[li])
        prev_inb = [Signal(name=f"pinb{li}") for li in range(NL)]
        prev_byte = [Signal(2, name=f"pbyte{li}") for li in range(NL)]
        q_inb = [Signal(name=f"qinb{li}") for li in range(NL)]
        q_byte = [Signal(2, name=f"qbyte{li}") for li in range(NL)]
        for li in range(NL):
            mad.d.sync += [prev_inb[li].eq(lane_inb[li]), prev_byte[li].eq(lane_addr[li][:2]),
                         q_inb[li].eq(prev_inb[li]), q_byte[li].eq(prev_byte[li])]
        img_q = [Signal(32, name=f"imgq{li}") for li in range(len(img_r))]
        mad.d.sync += [q.eq(rp.data) for q, rp in zip(img_q, img_r)]
        fm_q = [[Signal(8, name=f"fmq{f}_{li}") for li in range(len(fm_r[f]))] for f in range(len(fm_r))]
        for f in range(len(fm_r)):
            mad.d.sync += [q.eq(rp.data) for q, rp in zip(fm_q[f], fm_r[f])]
        rd_data = [Signal(8, name=f"rd{li}") for li in range(NL)]
        # the step's source as an AND-OR on the one-hot step (no priority chain)
        for li in range(NL):
            srcs = []
            for si in range(len(steps)):
                if si == 0:
                    if li < len(img_r):
                        srcs.append(Mux(step_oh[si], img_q[li].word_select(q_byte[li], 8), 0))
                elif li < len(fm_r[si - 1]):
                    srcs.append(Mux(step_oh[si], fm_q[si - 1][li], 0))
            if srcs:
                acc_src = srcs[0]
                for x in srcs[1:]:
                    acc_src = acc_src | x
                m.d.comb += rd_data[li].eq(acc_src)

        # gather FSM: jj issues the taps; the data of the tap at the last stage goes into the patches
        with m.If(g_v[0]):
            m.d.sync += jj.eq(jj + 1)
        with m.If(g_v[GL]):
            for li in range(NL):
                m.d.sync += patches[li][g_j[GL]].eq(Mux(q_inb[li], rd_data[li], 0))
            with m.If(g_j[GL] == NBL - 1):
                m.d.sync += fetch_done.eq(1)
        # hand the patches to the lanes. For timing the group's lane parameters, its tag and the
        # "last group / column / row" flags are registers, computed from gi, wo, ho in the cycle
        # after they change (a hand-over is >= 23 cycles after the previous one)
        lane_ready = lanes[0].cmd.ready
        last_gi = Signal()
        last_wo = Signal()
        last_ho = Signal()
        first_gi = Signal()
        m.d.sync += [last_gi.eq(gi == sc_ng1), last_wo.eq(wo == sc_ow1), last_ho.eq(ho == sc_oh1), first_gi.eq(gi == 0)]
        m.d.comb += cmd_valid.eq(iss_active & fetch_done)
        for li, lane in enumerate(lanes):
            c_rb = Signal.like(lane.cmd.payload.row_base, name=f"crb{li}")
            c_no = Signal.like(lane.cmd.payload.n_out, name=f"cno{li}")
            m.d.comb += [lane.cmd.valid.eq(cmd_valid), lane.cmd.payload.patch.eq(patches[li]),
                         lane.cmd.payload.tag.eq(first_gi | (last_gi << 1)),
                         lane.cmd.payload.row_base.eq(c_rb), lane.cmd.payload.n_out.eq(c_no)]
            with m.Switch(step_oh):
                for si, st in enumerate(steps):
                    with m.Case(on(si)):
                        if li < len(st.lanes):
                            gs = st.lanes[li][1]
                            rbt = Array(Const(g.row_base if g else 0, 8) for g in gs)
                            nto = Array(Const(g.n_out if g else 0, 8) for g in gs)
                            m.d.sync += [c_rb.eq(rbt[gi]), c_no.eq(nto[gi])]
                        else:
                            m.d.sync += c_no.eq(0)
        # the flags combined (registered too): each counter's enable is then fire & one flag
        end_row = Signal()
        end_all = Signal()
        m.d.sync += [end_row.eq((gi == sc_ng1) & (wo == sc_ow1)),
                     end_all.eq((gi == sc_ng1) & (wo == sc_ow1) & (ho == sc_oh1))]
        fire = Signal()
        m.d.comb += fire.eq(cmd_valid & lane_ready)
        # the counters advance a cycle after the hand-over, on registered decisions (timing: each
        # counter's clock enable is then one LUT of flip-flops, not the lanes' ready through the
        # flags); the next gather starts then too (g_v[0] waits for adv_gi), still hidden under
        # the group's 32 pulse cycles, and the flags hold in between (they follow gi, wo, ho)
        adv_wo, adv_ho, adv_end = Signal(), Signal(), Signal()
        m.d.sync += [adv_gi.eq(fire), adv_wo.eq(fire & last_gi), adv_ho.eq(fire & end_row),
                     adv_end.eq(fire & end_all)]
        with m.If(fire):
            m.d.sync += [fetch_done.eq(0), jj.eq(0)]
        with m.If(adv_gi):
            m.d.sync += gi.eq(Mux(last_gi, 0, gi + 1))
        with m.If(adv_wo):
            m.d.sync += wo.eq(Mux(last_wo, 0, wo + 1))
        with m.If(adv_ho):
            m.d.sync += ho.eq(Mux(last_ho, 0, ho + 1))
        with m.If(adv_end):
            m.d.sync += iss_active.eq(0)

        # lanes -> PE ports, routed by the step's lane -> PE table. The outputs as an AND-OR of
        # the step bits (no priority between the cases: one LUT after the lanes' registers, for
        # timing: the PHY captures them in the cycle after the tick)
        outs = ("bl", "pulse", "sh_sample", "sh_bank", "adc_start", "adc_bank", "adc_sel")
        lane_pe = {}            # (lane, PE) -> the steps in which that lane drives that PE
        for si, st in enumerate(steps):
            for li, (pe, _) in enumerate(st.lanes):
                lane_pe.setdefault((li, pe), []).append(si)
        for p in range(self.n_pe):
            srcs = {li: sis for (li, q), sis in lane_pe.items() if q == p}
            for n in outs:
                if srcs:
                    m.d.comb += getattr(self.pe[p], n).eq(any_of(
                        Mux(Cat(*[step_oh[si] for si in sis]).any(), getattr(lanes[li].pe, n), 0)
                        for li, sis in srcs.items()))

        # PE ports -> lanes: each lane's codes as an AND-OR over its source PEs, selected by registers
        # (one per lane and PE, set from step_oh: a cycle late, and a step's first codes come >=
        # pulse_cycles after its first issue) in `NSEL` copies, each enabling a slice of the code
        # bits (timing: one decoded select drove every code bit of both lanes across the die)
        NSEL = 4
        for li in range(NL):
            srcs = {p: sis for (lj, p), sis in lane_pe.items() if lj == li}
            if not srcs:
                continue
            lp = lanes[li].pe
            sel = {p: replicas(Signal(), NSEL, f"lsel{li}_{p}") for p in srcs}
            for p, sis in srcs.items():
                m.d.sync += [c.eq(Cat(*[step_oh[si] for si in sis]).any()) for c in sel[p]]
            m.d.comb += lp.adc_valid.eq(any_of(sel[p][0] & self.pe[p].adc_valid for p in srcs))
            for k, (lo, hi) in enumerate(slices(len(lp.adc_codes), NSEL)):
                m.d.comb += lp.adc_codes[lo:hi].eq(any_of(Mux(sel[p][k], self.pe[p].adc_codes[lo:hi], 0)
                                                          for p in srcs))

        # ------------------------------------------------------------ accumulation
        acc_bits = self.logit_bits
        A = [Signal(signed(acc_bits), name=f"A{o}") for o in range(MO)]
        H = [Signal(signed(acc_bits), name=f"H{o}") for o in range(MO)]   # finished position
        hold_valid = Signal()
        # the lanes' differences are registered (dl), then their sum (dsum), then accumulated (for
        # timing: the lanes' D subtraction, this sum and the accumulation are three carry chains)
        res_valid = Signal()
        tag = Signal(2)
        rv0, tag0 = Signal(), Signal(2)
        dl = [[Signal(signed(lanes[0].d_bits), name=f"dl{li}_{o}") for o in range(MO)] for li in range(NL)]
        dsum = [Signal(signed(lanes[0].d_bits + NL.bit_length()), name=f"dsum{o}") for o in range(MO)]
        m.d.sync += [rv0.eq(lanes[0].res.valid), tag0.eq(lanes[0].res.payload.tag),
                     res_valid.eq(rv0), tag.eq(tag0)]
        # the post reads H[0] and shifts H down by one channel per cycle (no MO:1 multiplexer)
        post_go = Signal()                # a channel of a conv step enters the pipeline
        # res_valid and tag in copies (rtl/replica.py), one per slice of the MO channels;
        # each slice's registers are a submodule `accum{k}`, so the board core can give it its own
        # copy of the tick enable (timing: one flip-flop enabled MO * acc_bits registers spread
        # over the die; the tick reached ~1,900 loads in the controller)
        NRV = self._n_accum()
        rv_dup = replicas(res_valid, NRV, "res_valid")
        tag_dup = replicas(tag, NRV, "tag")
        m.d.sync += [r.eq(rv0) for r in rv_dup] + [t.eq(tag0) for t in tag_dup]
        for k, (lo, hi) in enumerate(slices(MO, NRV)):
            m.submodules[f"accum{k}"] = ma = Module()
            for o in range(lo, hi):
                ma.d.sync += [dl[li][o].eq(lane.res.payload.d[o]) for li, lane in enumerate(lanes)]
                ma.d.sync += dsum[o].eq(sum((dl[li][o] for li in range(NL)), Const(0, signed(acc_bits))))
                s = dsum[o]
                new = Mux(tag_dup[k][0], s, A[o] + s)
                with ma.If(rv_dup[k]):
                    ma.d.sync += A[o].eq(new)
                with ma.If(rv_dup[k] & tag_dup[k][1]):      # a finished position, over the shift
                    ma.d.sync += H[o].eq(new)
                if o < MO - 1:
                    with ma.Elif(post_go):
                        ma.d.sync += H[o].eq(H[o + 1])
        m.d.sync += self.overrun.eq(self.overrun | (res_valid & tag[1] & hold_valid))

        # ------------------------------------------------------------ post: requant + pool / logits
        # rtl/post.py: conv steps, per finished position one channel per cycle (H shifts down),
        # bounded ReLU + requant + max-pool into the next feature map; `post.done` ends the step
        m.submodules.post = post = Post(steps, acc_bits)
        m.d.comb += [post.go.eq(post_go), post.h0.eq(H[0]), post.step.eq(step), post.step_oh.eq(step_oh),
                     post.oh1.eq(sc_oh1), post.ow1.eq(sc_ow1), post.no1.eq(sc_no1), post.no2.eq(sc_no2),
                     post.m.eq(sc_m)]
        m.d.comb += post_go.eq(hold_valid & ~step_oh[NS - 1])
        post_done_step = post.done
        for si, (fw, fr) in enumerate(zip(fm_wr, post.rd)):
            rp = fm_copies[si]["rmw"].read_port()
            m.d.comb += [fw[0].eq(post.wr[si].en), fw[1].eq(post.wr[si].addr), fw[2].eq(post.wr[si].data),
                         rp.addr.eq(fr.addr), fr.data.eq(rp.data)]
        with m.If(post_go & post.last):     # the position's last channel
            m.d.sync += hold_valid.eq(0)
        # the FC step's logits to the result stage (rtl/result.py: softmax, argmax, delta, result)
        K = self.n_classes
        m.submodules.result = rs = ResultStage(K, self.logit_bits, (self.softmax_m, self.softmax_sh))
        final_ready, am_busy = rs.held, rs.busy
        m.d.comb += [rs.i.valid.eq(step_oh[NS - 1] & hold_valid), *[rs.i.payload[o].eq(H[o]) for o in range(K)]]
        with m.If(rs.i.valid & rs.i.ready):
            m.d.sync += hold_valid.eq(0)
        with m.If(res_valid & tag[1]):  # a new finished position: set wins over the clears above
            m.d.sync += hold_valid.eq(1)

        # ------------------------------------------------------------ result
        m.d.comb += rs.label.eq(label)
        wiring.connect(m, rs.result, wiring.flipped(self.result))

        # ------------------------------------------------------------ training feeder
        # rtl/feeder.py: after an image's softmax (with `train`), its deltas and FC inputs V into the
        # update engine; FINISH items for `upd_finish`
        m.submodules.feeder = fdr = Feeder(K, steps[-1].in_shape, self.upd.in_layout,
                                           delta_bits=len(self.result.payload.delta[0]))
        feed_busy, fin_pending = fdr.busy, fdr.fin_pending
        m.d.comb += rs.feed_busy.eq(feed_busy)
        fmv = fm_copies[-1]["v"].read_port()
        m.d.comb += [fmv.addr.eq(fdr.fm_addr), fmv.en.eq(fdr.fm_en), fdr.fm_data.eq(fmv.data),
                     fdr.delta.eq(rs.delta), fdr.d_load.eq(rs.delta_load), fdr.start.eq(rs.done & self.train)]
        wiring.connect(m, wiring.flipped(self.upd_finish), fdr.finish)
        wiring.connect(m, fdr.o, upd_i)
        # status: 0 feeding, 1 feeding V, 2 finish pending, 3 update engine ready, 4 engine output valid,
        # 5 pair programmer busy, 6 pair programmer command ready, 7 softmax busy
        m.d.comb += self.status.eq(Cat(feed_busy, fdr.v_phase, fin_pending, fdr.o.ready, ps.engine_valid,
                                       ps.pp_busy, ps.pp_cmd_ready, am_busy))

        # ------------------------------------------------------------ step sequencing
        lanes_busy = Signal()
        m.d.comb += lanes_busy.eq(sum(l.busy for l in lanes) != 0)
        # the start is a registered pulse (for timing: it resets the issuer's counters)
        start_go = Signal()
        m.d.sync += start_go.eq(~running & img_full & ~start_go)
        with m.If(start_go):  # the softmax of the previous image may still be running
            m.d.sync += [running.eq(1), label.eq(label_in), step.eq(0), step_oh.eq(1), iss_active.eq(1), ho.eq(0),
                         wo.eq(0), gi.eq(0), jj.eq(0), fetch_done.eq(0), ncycles.eq(0)]
        with m.If(post_done_step):
            m.d.sync += [step.eq(step + 1), step_oh.eq(step_oh << 1), iss_active.eq(1), ho.eq(0),
                         wo.eq(0), gi.eq(0), jj.eq(0), fetch_done.eq(0)]
        # the last step ends when the logits are taken; the image buffer is free once C1 is done
        # (step check: final_ready stays up until the softmax has read the logits, while the next
        # image may already have started)
        with m.If(running & final_ready & step_oh[NS - 1]):
            m.d.sync += [running.eq(0), self.cycles.eq(ncycles), step.eq(0), step_oh.eq(1)]
        with m.If(post_done_step & step_oh[0]):
            m.d.sync += img_full.eq(0)
        if self.replica:
            # shared FC PEs (rtl/replicated.py): the last step's issuer starts once `fc_gnt` is given;
            # `fc_req` is held from the end of the step before it until the logits are taken
            fc_wait = Signal()
            m.d.comb += self.fc_req.eq(running & (step == len(steps) - 1))
            with m.If(post_done_step & (step == len(steps) - 2)):
                m.d.sync += [iss_active.eq(0), fc_wait.eq(1)]
            with m.If(fc_wait & self.fc_gnt):
                m.d.sync += [iss_active.eq(1), fc_wait.eq(0)]

        # counters (the programming path's are in rtl/programming.py)
        m.d.comb += self.busy.eq(running | img_full | final_ready | am_busy | self.result.valid | feed_busy |
                                 fin_pending | ps.pp_busy | ~ps.wv_ready)
        m.d.comb += [self.slot_reads.eq(sum(l.slot_reads for l in lanes)),
                     self.conv_rounds.eq(sum(l.conv_rounds for l in lanes))]
        with m.If(running & iss_active & ~lanes_busy):
            m.d.sync += self.lane_idle.eq(self.lane_idle + 1)
        return m


def default_instances():
    from golden import weights
    w = weights.load()
    return {"mcnn_controller": Controller(w.q.requant, softmax_params(w.q.logit_scale))}
