"""The controller top: the whole inference datapath of the CNN on 8 PEs, driven by mapping data.

The layer sequence and every table come from the golden model (golden/cnn.py layers,
golden/mapping.py read groups), so another CNN of the same layer kinds generates another
controller. Per weight layer ("step"):

  issuer  --patches-->  read lanes (one per PE the layer uses, in lockstep)  --D-->  accumulator
     ^ feature-map RAM                     | PE ports (rtl/pe_board.py)             | A per position
     |                                                                              v
  next step's feature-map RAM  <--max-pool (read-modify-write)--  bounded ReLU + requant
  (last step: the logits go to argmax; the result leaves on the `result` stream)

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
from .accumulator import Accumulator
from .gather import Gather
from .read_lane import ReadLane
from .onehot import any_of
from .replica import replicas, slices
from .sequencer import Sequencer, step_case
from .softmax import Softmax
from .pair_programmer import PairProgrammer
from .update_engine import Op as UpdOp
from .update_engine import UpdateEngine, fc_groups
from .write_verify import ReqOp, WriteVerify


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
        self.wv = WriteVerify(n_pe, n_rows, n_bl)
        mapping = mapping or build_mapping(layers)
        fcg, fco = fc_groups(mapping, self.steps[-1].name)
        self.upd = UpdateEngine(fcg, fco, n_pe=n_pe, n_rows=n_rows, n_bl=n_bl)
        self.pp = PairProgrammer(self.upd.out_layout, self.wv.cmd_layout, self.wv.res_layout, n_pe, n_rows, n_bl,
                                 lo=window_codes[0], hi=window_codes[1], margin=5)
        self.result_layout = data.StructLayout({
            "cls": _bits(self.n_classes),
            "logits": data.ArrayLayout(signed(logit_bits), self.n_classes),
            "p": data.ArrayLayout(unsigned(16), self.n_classes),       # Q1.15
            "delta": data.ArrayLayout(signed(17), self.n_classes),     # Q1.15, p - onehot(label)
        })
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
            for blk in (self.wv, self.upd, self.pp):   # layouts only: these blocks are not elaborated here
                blk._MustUse__silence = True
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        steps, NL, MO, NBL = self.steps, self.n_lanes, self.max_out, self.n_bl
        lanes = []
        for li in range(NL):
            lane = ReadLane(NBL, self.n_rows, self.n_adc, self.input_bits, self.code_bits, MO, self.pulse_cycles)
            m.submodules[f"lane{li}"] = lane
            lanes.append(lane)

        # ------------------------------------------------------------ programming path
        if self.replica:   # the shared path is in rtl/replicated.py; stand-ins for the feeder and status
            upd = SimpleNamespace(i=self.upd_out, o=SimpleNamespace(valid=Const(0)))
            pp = SimpleNamespace(busy=Const(0), cmd=SimpleNamespace(ready=Const(0)))
            wv = SimpleNamespace(cmd=SimpleNamespace(ready=Const(1)))
        else:
            m.submodules.write_verify = wv = self.wv
            m.submodules.update_engine = upd = self.upd
            m.submodules.pair_programmer = pp = self.pp
            programming_path(m, self, wv, upd, pp)

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
        # rtl/sequencer.py: the step (also one-hot), its constants in registers, start / advance / end
        m.submodules.sequencer = seq = Sequencer(steps, self.replica)
        step, step_oh, running = seq.step, seq.step_oh, seq.running
        NS = len(steps)

        def on(si):        # Case pattern of step si on step_oh
            return step_case(si, NS)
        sc = seq.sc
        sc_oh1, sc_ow1, sc_no1, sc_no2, sc_m = sc.oh1, sc.ow1, sc.no1, sc.no2, sc.m
        m.d.comb += [self.timestamp.eq(seq.timestamp), self.cycles.eq(seq.cycles), seq.img_full.eq(img_full)]

        # ------------------------------------------------------------ issuer (per lane gather)
        # rtl/gather.py: per position and group slot, each lane's patch from the step's input map
        m.submodules.gather = gat = Gather(steps, NBL, self.n_rows, MO)
        m.d.comb += [gat.step.eq(step), gat.step_oh.eq(step_oh), gat.sc.eq(sc), gat.active.eq(seq.issue),
                     gat.restart.eq(seq.restart), seq.issue_end.eq(gat.end)]
        # read ports: one per lane of the step that reads the map, each on its own copy
        img_r = [img.read_port() for _ in range(len(steps[0].lanes))]
        fm_r = [[fm_copies[f][f"l{li}"].read_port() for li in range(len(steps[f + 1].lanes))]
                for f in range(len(fm_copies))]
        for li, rp in enumerate(img_r):
            m.d.comb += [rp.addr.eq(gat.addr[li] >> 2), gat.img_data[li].eq(rp.data)]
        for f in range(len(fm_r)):
            for li, rp in enumerate(fm_r[f]):
                m.d.comb += [rp.addr.eq(gat.addr[li]), getattr(gat, f"fm{f}_data")[li].eq(rp.data)]
        # the lanes take the slot in lockstep: lane 0's ready stands for all
        m.d.comb += gat.cmd.ready.eq(lanes[0].cmd.ready)
        for li, lane in enumerate(lanes):
            c = gat.cmd.payload.lane[li]
            m.d.comb += [lane.cmd.valid.eq(gat.cmd.valid), lane.cmd.payload.patch.eq(c.patch),
                         lane.cmd.payload.tag.eq(gat.cmd.payload.tag),
                         lane.cmd.payload.row_base.eq(c.row_base), lane.cmd.payload.n_out.eq(c.n_out)]

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
        # rtl/accumulator.py: per position, the sum over its group slots of the lanes' D
        m.submodules.accumulator = acc = Accumulator(NL, MO, lanes[0].d_bits, self.logit_bits)
        m.d.comb += [acc.i.valid.eq(lanes[0].res.valid), acc.i.payload.tag.eq(lanes[0].res.payload.tag)]
        m.d.comb += [acc.i.payload.d[li].eq(lane.res.payload.d) for li, lane in enumerate(lanes)]
        acc_bits = self.logit_bits
        H = [acc.h[o] for o in range(MO)]  # the finished position; the post takes H[0] and shifts
        hold_valid = Signal()
        post_go = Signal()                # a channel of a conv step enters the pipeline
        m.d.comb += acc.shift.eq(post_go)
        m.d.sync += self.overrun.eq(self.overrun | (acc.done & hold_valid))

        # ------------------------------------------------------------ post: requant + pool / logits
        # conv steps: for each finished position, one output channel po per cycle goes through a
        # pipeline (for timing), stage registers q_*[k]: 0 take H[0] (H shifts down a channel per
        # cycle), ReLU, pooled address; 1 multiply by M (two partial products); 2 their sum; 3 round,
        # shift, saturate, read the pooled cell; 4 register both; 5 write max(old, act) (the first
        # visit of a window writes).
        # The pooled position is kept as counters (offset in the window, base addresses) instead of
        # dividing pho, pwo by the pool size. The step ends when its last position leaves stage 5,
        # so the next step never reads a cell that is still being written.
        po = Signal(range(MO + 1))        # output channel being stored
        pho = Signal(8)
        pwo = Signal(8)
        prh = Signal(4)                   # pho % pool
        prw = Signal(4)                   # pwo % pool
        prow = Signal(16)                 # (pho // pool) * ow * oc
        pbase = Signal(16)                # ((pho // pool) * ow + pwo // pool) * oc
        post_done_step = Signal()
        # "last" flags of the position counters as registers, for timing: pwo, pho change when po
        # wraps (>= 2 cycles apart: conv steps have >= 2 channels), po_last follows po's next value
        if any(st.n_out < 2 for st in steps[:-1]):
            raise ValueError("a conv step needs at least 2 output channels (post timing)")
        last_pwo = Signal()
        last_pho = Signal()
        po_last = Signal()
        m.d.sync += [last_pwo.eq(pwo == sc_ow1), last_pho.eq(pho == sc_oh1)]
        last_pos = Signal()               # this position is the step's last
        m.d.comb += last_pos.eq(last_pwo & last_pho)
        pin = Signal()                    # this position falls in a pooling window
        m.d.comb += post_go.eq(hold_valid & ~step_oh[NS - 1])
        QL = 5                            # the last stage (writes)
        q_v = [Signal(name=f"qv{k}") for k in range(QL + 1)]      # per stage: valid, write, end of step
        q_go = [Signal(name=f"qgo{k}") for k in range(QL + 1)]
        q_end = [Signal(name=f"qend{k}") for k in range(QL + 1)]
        q_first = [Signal(name=f"qfirst{k}") for k in range(QL + 1)]
        q_addr = [Signal(16, name=f"qaddr{k}") for k in range(QL + 1)]
        # (the post pipeline's and the position counters' next-value registers are a submodule,
        # `post`: its own copy of the board's tick)
        m.submodules.post = mp = Module()
        for k in range(1, QL):
            mp.d.sync += [q_v[k + 1].eq(q_v[k]), q_go[k + 1].eq(q_go[k]), q_end[k + 1].eq(q_end[k]),
                          q_first[k + 1].eq(q_first[k]), q_addr[k + 1].eq(q_addr[k])]
        mp.d.sync += [q_v[1].eq(post_go), q_go[1].eq(post_go & pin), q_end[1].eq(last_pos & po_last),
                      q_first[1].eq((prh == 0) & (prw == 0)), q_addr[1].eq(pbase + po)]
        hval = H[0]
        q_relu = Signal(acc_bits - 1)
        q_m = Signal(16)
        q_prod = Signal(acc_bits + 15)
        q_act = Signal(8)
        q_act4 = Signal(8)
        [q_mh] = replicas(q_m, 1, "q_m")      # the second multiplier's own copy of M
        mp.d.sync += [q_relu.eq(Mux(hval[-1], 0, hval[:-1])), q_m.eq(sc_m), q_mh.eq(sc_m)]
        # the product as two registered partial products (one DSP each), then their sum (timing)
        SPL = 18
        q_pl = Signal(min(acc_bits - 1, SPL) + 16)
        q_ph = Signal(max(acc_bits - 1 - SPL, 1) + 16)
        mp.d.sync += [q_pl.eq(q_relu[:SPL] * q_m), q_ph.eq(q_relu[SPL:] * q_mh if acc_bits - 1 > SPL else 0)]
        mp.d.sync += q_prod.eq(q_pl + (q_ph << SPL))
        fm_w = [fm_wr[f] for f in range(len(fm_copies))]
        fm_rr = [fm_copies[f]["rmw"].read_port() for f in range(len(fm_copies))]
        m.d.comb += [rp.addr.eq(q_addr[3]) for rp in fm_rr]
        logits = [Signal(signed(self.logit_bits), name=f"logit{o}") for o in range(self.n_classes)]
        final_ready = Signal()
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
                        m.d.sync += [q_old.eq(fm_rr[si].data), q_act4.eq(q_act)]
                        with m.If(q_go[QL]):
                            m.d.comb += [fm_w[si][0].eq(1), fm_w[si][1].eq(q_addr[QL]),
                                         fm_w[si][2].eq(Mux(q_first[QL] | (q_act4 > q_old), q_act4, q_old))]
        # the FC step's logits: on its own step bit, outside the Switch's priority chain (the logit
        # registers' clock enable is then one LUT of flip-flops and tick: timing)
        for si, st in enumerate(steps):
            if st.requant is None:
                with m.If(step_oh[si] & hold_valid & ~final_ready):
                    m.d.sync += [lg.eq(h) for lg, h in zip(logits, H[:self.n_classes])]
                    m.d.sync += [final_ready.eq(1), hold_valid.eq(0)]
        # next position: advance the window offsets and the base addresses (the step's pool size
        # and strides in registers, the "last" flags registered: a position lasts >= 2 cycles)
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
        for n, cur_, nxt_, k in (("pwo", pwo, nx_pwo, sc_ow1), ("pho", pho, nx_pho, sc_oh1),
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
        with m.If(q_v[QL] & q_end[QL]):
            m.d.sync += post_done_step.eq(1)
        with m.If(post_go):
            m.d.sync += po_last.eq(Mux(po_last, sc_no1 == 0, po == sc_no2))
            with m.If(po_last):
                m.d.sync += [po.eq(0), hold_valid.eq(0)]
            with m.Else():
                m.d.sync += po.eq(po + 1)

        with m.If(acc.done):  # a new finished position: set wins over the clears above
            m.d.sync += hold_valid.eq(1)

        # ------------------------------------------------------------ softmax, delta, argmax, result
        # rtl/softmax.py: K logits in (label from the image's last word), (index, p, delta, argmax) out.
        K = self.n_classes
        m.submodules.softmax = sm = Softmax(K, self.logit_bits)
        m.d.comb += [sm.m.eq(self.softmax_m), sm.sh.eq(self.softmax_sh)]
        am_busy = Signal()       # logits being fed / outputs being collected
        sm_i = Signal(range(K + 1))
        # the logits go to the softmax through a shift register (a K:1 multiplexer there was too slow)
        sm_z = [Signal(signed(self.logit_bits), name=f"smz{o}") for o in range(K)]
        sm_more = Signal()      # sm_i < K, a register
        # (sm_more is set with am_busy and clears after the K-th logit, before the softmax's last
        # output clears am_busy: it is the valid by itself, a flip-flop)
        m.d.comb += [sm.i.valid.eq(sm_more), sm.i.payload.z.eq(sm_z[0]),
                     sm.i.payload.label.eq(label)]
        feed_busy = Signal()
        # the load decided a cycle ahead (sm_go), so the logit shift register's clock enable is one
        # LUT of flip-flops (timing). Nothing that sm_go reads can change in between: with am_busy
        # low the softmax is idle, so final_ready, result.valid and feed_busy hold, and so do the
        # logits (final_ready is up)
        sm_go = Signal()
        # the logit shift register's own copies of sm_more and sm_go (rtl/replica.py), one per
        # slice of it: each slice's clock enable is one LUT of its own flip-flops (timing: one
        # enable net to all K * logit_bits flip-flops was the critical path). The shift register
        # is a submodule `smfeed`, so the board core can give it its own copy of the tick enable.
        NSZ = min(2, K)
        sz_more, sz_go = replicas(sm_more, NSZ, "sz_more"), replicas(sm_go, NSZ, "sz_go")
        go_next = final_ready & ~am_busy & ~self.result.valid & ~feed_busy & ~sm_go
        m.d.sync += [sm_go.eq(go_next)] + [g.eq(go_next) for g in sz_go]
        with m.If(sm_go):
            m.d.sync += [am_busy.eq(1), sm_i.eq(0), sm_more.eq(1)] + [z.eq(1) for z in sz_more]
        with m.If(sm.i.valid & sm.i.ready):
            m.d.sync += [sm_i.eq(sm_i + 1), sm_more.eq(sm_i != K - 1)] + [z.eq(sm_i != K - 1) for z in sz_more]
        m.submodules.smfeed = mz = Module()
        for k, (lo, hi) in enumerate(slices(K, NSZ)):
            with mz.If(sz_go[k]):
                # the result's logits load with the shift register: result.valid is low from the
                # load (sm_go waits for it) until this image's last softmax output sets it, and the
                # logits hold (timing: a load at the last output shared the handshake's enable)
                mz.d.sync += [sm_z[o].eq(logits[o]) for o in range(lo, hi)]
                mz.d.sync += [self.result.payload.logits[o].eq(logits[o]) for o in range(lo, hi)]
            with mz.If(sz_more[k] & sm.i.ready):
                mz.d.sync += [sm_z[o].eq(sm_z[o + 1]) for o in range(lo, min(hi, K - 1))]
        m.d.comb += sm.o.ready.eq(~self.result.valid)
        # the class of the next softmax output, one-hot: they come in class order from the load on
        # (a register instead of a decode of sm.o's index: each class's result registers are then
        # enabled by one LUT of flip-flops, for timing)
        sm_oh = Signal(K)
        with m.If(sm_go):
            m.d.sync += sm_oh.eq(1)
        # The class registers load on sm.o.valid alone: within a softmax run sm.o.ready
        # (~result.valid) is 1 (sm_go waits for result.valid low, and only the run's last output
        # sets it), and sm.o.valid is low outside runs (timing: the handshake's LUT was shared by
        # all K enables, a net to K * 33 flip-flops spread over the die)
        for o in range(K):
            with m.If(sm.o.valid & sm_oh[o]):
                m.d.sync += [self.result.payload.p[o].eq(sm.o.payload.p),
                             self.result.payload.delta[o].eq(sm.o.payload.delta)]
        with m.If(sm.o.valid & sm.o.ready):
            m.d.sync += sm_oh.eq(sm_oh.rotate_left(1))
            with m.If(sm.o.payload.last):
                m.d.sync += [am_busy.eq(0), final_ready.eq(0),
                             self.result.payload.cls.eq(sm.o.payload.argmax)]
        # result.valid as one expression: the consumer's ready (late, from the host bridge) enters
        # only its last LUT (set and clear are exclusive: sm.o.ready = ~result.valid)
        res_set = Signal()
        m.d.comb += res_set.eq(sm.o.valid & sm.o.payload.last & ~self.result.valid)
        m.d.sync += self.result.valid.eq(res_set | (self.result.valid & ~self.result.ready))

        # ------------------------------------------------------------ training feeder
        # after an image's softmax: its 10 deltas, then its 192 FC inputs V (read from the last
        # feature map, channel-major index m -> HWC address), into the update engine. One item per
        # cycle through a pipeline with one stall (`fadv`): B item (V address from the ROM into a
        # register), C feature-map read, D RAM output register, then the registered `upd.i` with a
        # one-entry skid buffer. `feed_busy` / `fin_pending` stay up until their last item has left `upd.i`.
        H2, W2, C2 = steps[-1].in_shape
        n_in = H2 * W2 * C2
        vaddr = Memory(shape=unsigned(16), depth=n_in,
                       init=[((mm % (H2 * W2)) // W2 * W2 + mm % W2) * C2 + mm // (H2 * W2) for mm in range(n_in)])
        m.submodules.vaddr = vaddr
        va_r = vaddr.read_port(domain="comb")
        fmv = fm_copies[-1]["v"].read_port()
        # fidx and f_last return to 0 at the end of a feed: a feed start only sets fgen and vph
        fidx = Signal(range(max(n_in, K) + 2))
        vph = Signal()              # 0: deltas, 1: V values
        fgen = Signal()             # items of the image still to issue
        f_last = Signal(init=K == 1)   # fidx is the last index of its phase
        # the deltas as the softmax hands them out (as result.payload.delta), shifted out one per
        # DELTA item: no K:1 multiplexer on fidx
        dsh = [Signal.like(self.result.payload.delta[o], name=f"feed_d{o}", reset_less=True) for o in range(K)]
        for o in range(K):
            with m.If(sm.o.valid & sm_oh[o]):       # (on sm.o.valid alone: see the result's p, delta)
                m.d.sync += dsh[o].eq(sm.o.payload.delta)
        fin_pending = Signal()
        fin_sent = Signal()         # the FINISH item is in the pipeline
        # status: 0 feeding, 1 feeding V, 2 finish pending, 3 update engine ready, 4 engine output valid,
        # 5 pair programmer busy, 6 pair programmer command ready, 7 softmax busy
        m.d.comb += self.status.eq(Cat(feed_busy, vph, fin_pending, upd.i.ready, upd.o.valid, pp.busy, pp.cmd.ready,
                                       am_busy))
        with m.If(self.upd_finish.valid & ~fin_pending):
            m.d.sync += fin_pending.eq(1)
        m.d.comb += self.upd_finish.ready.eq(~fin_pending)
        # the stages advance on `fadv`, a register (the output skid buffer `fsk` is empty next cycle):
        # `upd.i.ready` only reaches the output registers
        fadv = Signal(init=1)
        fb, fc, fd = (Signal(self.upd.in_layout, name=f"feed_{s}", reset_less=True) for s in "bcd")  # (data)
        fb_v, fc_v, fd_v = Signal(), Signal(), Signal()
        fb_last, fc_last, fd_last, fo_last = Signal(), Signal(), Signal(), Signal()   # the image's last V
        fb_va = Signal(16, reset_less=True)
        fd_dat = Signal.like(fmv.data, reset_less=True)
        fo = Signal(self.upd.in_layout)           # stage D's item as it leaves
        m.d.comb += [fo.op.eq(fd.op), fo.index.eq(fd.index), fo.value.eq(Mux(fd.op == UpdOp.V, fd_dat, fd.value))]
        fsk = Signal(self.upd.in_layout, name="feed_sk", reset_less=True)
        fsk_v, fsk_last, fsk_v_nx = Signal(), Signal(), Signal()
        fo_free = ~upd.i.valid | upd.i.ready
        fpush = fadv & fd_v
        m.d.comb += fsk_v_nx.eq(~fo_free & (fsk_v | fpush))
        m.d.sync += [upd.i.valid.eq(~fo_free | fsk_v | fpush), fsk_v.eq(fsk_v_nx), fadv.eq(~fsk_v_nx)]
        with m.If(fo_free):
            m.d.sync += [upd.i.payload.eq(Mux(fsk_v, fsk.as_value(), fo.as_value())),
                         fo_last.eq(Mux(fsk_v, fsk_last, fd_last))]
        with m.If(~fsk_v):
            m.d.sync += [fsk.eq(fo), fsk_last.eq(fd_last)]
        m.d.comb += [va_r.addr.eq(fidx), fmv.addr.eq(fb_va), fmv.en.eq(fadv)]
        with m.If(fadv):
            m.d.sync += [fb_v.eq(0), fc_v.eq(fb_v), fc.eq(fb), fc_last.eq(fb_last),
                         fd_v.eq(fc_v), fd.eq(fc), fd_last.eq(fc_last), fd_dat.eq(fmv.data)]
            m.d.sync += [fb.index.eq(fidx), fb.value.eq(dsh[0]), fb_va.eq(va_r.data),
                         fb_last.eq(fgen & vph & f_last)]
            with m.If(fgen):
                m.d.sync += [fb_v.eq(1), fidx.eq(Mux(f_last, 0, fidx + 1)),
                             f_last.eq(Mux(f_last, Mux(vph, K == 1, n_in == 1),
                                           Mux(vph, fidx == n_in - 2, fidx == K - 2)))]
            with m.If(fgen & ~vph):
                m.d.sync += [fb.op.eq(UpdOp.DELTA), *[a.eq(b) for a, b in zip(dsh, dsh[1:])]]
                with m.If(f_last):
                    m.d.sync += vph.eq(1)
            with m.Elif(fgen):
                m.d.sync += fb.op.eq(UpdOp.V)
                with m.If(f_last):
                    m.d.sync += fgen.eq(0)
            with m.Elif(fin_pending & ~fin_sent & ~feed_busy):
                m.d.sync += [fb_v.eq(1), fb.op.eq(UpdOp.FINISH), fin_sent.eq(1)]
        with m.If(upd.i.valid & upd.i.ready):
            with m.If(fo_last):
                m.d.sync += feed_busy.eq(0)
            with m.If(upd.i.payload.op == UpdOp.FINISH):
                m.d.sync += [fin_pending.eq(0), fin_sent.eq(0)]
        with m.If(sm.o.valid & sm.o.ready & sm.o.payload.last & self.train):
            m.d.sync += [feed_busy.eq(1), fgen.eq(1), vph.eq(0)]

        # ------------------------------------------------------------ step sequencing
        lanes_busy = Signal()
        m.d.comb += lanes_busy.eq(sum(l.busy for l in lanes) != 0)
        m.d.comb += [seq.step_done.eq(post_done_step), seq.logits_ready.eq(final_ready)]
        with m.If(seq.start):
            m.d.sync += label.eq(label_in)
        with m.If(post_done_step):
            m.d.sync += post_done_step.eq(0)
        # the image buffer is free once C1 is done
        with m.If(post_done_step & step_oh[0]):
            m.d.sync += img_full.eq(0)
        if self.replica:
            m.d.comb += [self.fc_req.eq(seq.fc_req), seq.fc_gnt.eq(self.fc_gnt)]

        # counters (the programming path's are in programming_path)
        m.d.comb += self.busy.eq(running | img_full | final_ready | am_busy | self.result.valid | feed_busy |
                                 fin_pending | pp.busy | ~wv.cmd.ready)
        m.d.comb += [self.slot_reads.eq(sum(l.slot_reads for l in lanes)),
                     self.conv_rounds.eq(sum(l.conv_rounds for l in lanes))]
        with m.If(running & seq.issue & ~lanes_busy):
            m.d.sync += self.lane_idle.eq(self.lane_idle + 1)
        return m


def programming_path(m, c, wv, upd, pp):
    """The programming path's wiring between the ports of `c` (a Controller, or the replicated top
    that shares one path among its groups) and the write-verify sequencer, update engine and pair
    programmer; the update engine's input stream `upd.i` is left to the caller."""
    # write-verify commands: the pair programmer (training) has priority over host commands
    with m.If(pp.wv_cmd.valid):
        m.d.comb += [wv.cmd.valid.eq(1), wv.cmd.payload.eq(pp.wv_cmd.payload), pp.wv_cmd.ready.eq(wv.cmd.ready)]
    with m.Else():
        m.d.comb += [wv.cmd.valid.eq(c.prog.valid), wv.cmd.payload.eq(c.prog.payload),
                     c.prog.ready.eq(wv.cmd.ready)]
    wiring.connect(m, wv.res, wiring.flipped(c.prog_res))
    m.d.comb += [pp.wv_res.eq(wv.res.payload), pp.wv_res_fire.eq(wv.res.valid & wv.res.ready)]
    wiring.connect(m, pp.rd_req, wiring.flipped(c.vread_req))
    wiring.connect(m, wiring.flipped(c.vread_rsp), pp.rd_rsp)
    wiring.connect(m, upd.o, pp.cmd)
    m.d.comb += [upd.mult.eq(c.eta_m), upd.shift.eq(c.eta_sh), upd.th_code.eq(c.th_code),
                 c.upd_done.valid.eq(pp.done.valid), pp.done.ready.eq(c.upd_done.ready),
                 c.upd_done.payload.eq(pp.done.payload.overflow)]   # 1: the batch overflowed the engine
    wiring.connect(m, wv.req, wiring.flipped(c.prog_req))
    wiring.connect(m, wiring.flipped(c.prog_rsp), wv.rsp)
    # counters: SET / RESET pulses, verify reads (write-verify reads + the pair programmer's reads)
    with m.If(c.prog_req.valid & c.prog_req.ready):
        with m.Switch(c.prog_req.payload.op):
            with m.Case(ReqOp.SET):
                m.d.sync += c.set_pulses.eq(c.set_pulses + 1)
            with m.Case(ReqOp.RESET):
                m.d.sync += c.reset_pulses.eq(c.reset_pulses + 1)
    n_vr = (c.prog_req.valid & c.prog_req.ready & (c.prog_req.payload.op == ReqOp.READ)) + \
        (c.vread_req.valid & c.vread_req.ready)
    m.d.sync += c.verify_reads.eq(c.verify_reads + n_vr)


def default_instances():
    from golden import weights
    w = weights.load()
    return {"mcnn_controller": Controller(w.q.requant, softmax_params(w.q.logit_scale))}
