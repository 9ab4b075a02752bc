"""The controller top: the whole inference datapath of the CNN on 8 PEs, driven by mapping data.

The layer sequence and every table come from the golden model (golden/cnn.py layers,
golden/mapping.py read groups), so another CNN of the same layer kinds generates another
controller. Per weight layer ("step"):

  image buffer (rtl/image_buffer.py) --+
  feature maps (rtl/feature_maps.py) --+--> patch gather (rtl/gather.py) --> read lanes (rtl/read_lane.py:
     ^                                                                      one per PE the step uses, lockstep)
     |                            PE ports (rtl/pe_board.py) <-> PE router (rtl/pe_router.py) <-> lanes
     |                                                                             | D
  post (rtl/post.py: bounded ReLU + requant + max-pool)  <--  accumulator (rtl/accumulator.py), A per position
  step sequencer (rtl/sequencer.py): start of an image, step advance, its end
  (last step: the logits go to the result stage, rtl/result.py: softmax, argmax, delta -> `result` stream;
   training: the feeder, rtl/feeder.py, hands deltas and FC inputs V to the programming path,
   rtl/programming.py: update engine -> pair programmer -> write-verify -> PE programming ports;
   the step writing the FC input map waits until the feeder has read the previous image's V)

A dense layer is run as a convolution whose kernel covers its whole input map (k = H = W, one
output position): its unrolled fan-in c*H*W + h*W + w is then exactly the channel-major flatten
of golden/cnn.py. Patches are gathered from the feature-map RAM by an address generator, one
input per cycle (zero outside the map = padding); a group's gather (23 cycles, pipelined) hides under the
previous group's pulses (8 slots x 4 cycles), so the lanes pulse back to back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import cnn
from golden.datapath import softmax_params
from golden.mapping import Mapping, build_mapping

from .pe_board import PEBoardSignature
from .accumulator import Accumulator
from .gather import Gather
from .feature_maps import FeatureMaps
from .pe_router import PERouter
from .image_buffer import ImageBuffer
from .read_lane import ReadLane
from .sequencer import Sequencer
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
    last = cnn.weight_layers(layers)[-1].name
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
        rq = None if L.name == last else tuple(requant[L.name])     # hidden dense layers too
        steps.append(Step(L.name, shape, k, pad, (oh, ow), n_out, lanes, rq, 1, (oh, ow, n_out), taps))
        shape = shapes[i]
    if not isinstance(cnn.weight_layers(layers)[-1], cnn.Dense):
        raise ValueError("the last weight layer must be dense (it produces the logits)")
    return steps


class Controller(wiring.Component):
    """Inference controller. Ports: `image` stream (4 pixels per word, raster order), `result`
    stream (class and logits per image), 8 PE-board ports, counters."""

    def __init__(self, requant: dict, softmax: tuple, layers=cnn.YAO2020, mapping: Mapping | None = None,
                 n_pe=8, n_bl=16, n_rows=128, n_adc=32, input_bits=8, code_bits=8, pulse_cycles=4, logit_bits=24,
                 window_codes=(25, 200), replica: bool = False, input_shape=cnn.INPUT_SHAPE, error: str = "softmax"):
        # replica=True: one of the convolver groups of rtl/replicated.py, which owns the shared
        # programming path and the FC arbitration (see the ports added at the end of __init__)
        self.replica = replica
        # the output layer's training error (rtl/result.py ERRORS): "softmax" (p - onehot), or "sign"
        # for a sign-WH output layer (the network's rule: tb/cosim/insitu_main.py insitu_controller)
        self.error = error
        self.steps = plan(layers, mapping, requant, input_shape, n_bl=n_bl)
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
            # activity counters (golden/activity.py), totals since reset, each counted by the unit
            # doing the work: lanes (bitserial_encoder, differential), gather, post, softmax
            "bl_pulses": Out(32), "sl_selections": Out(32), "diff_subs": Out(32), "fm_reads": Out(32),
            "fm_writes": Out(32), "requant_ops": Out(32), "pool_ops": Out(32), "softmax_ops": Out(32),
            "img_start": Out(1),        # pulse: an image starts (the co-simulation splits the counts per image)
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

    def elaborate(self, platform):
        m = Module()
        steps, NL, MO, NBL, K = self.steps, self.n_lanes, self.max_out, self.n_bl, self.n_classes
        lanes = []
        for li in range(NL):
            lane = ReadLane(NBL, self.n_rows, self.n_adc, self.input_bits, self.code_bits, MO, self.pulse_cycles)
            m.submodules[f"lane{li}"] = lane
            lanes.append(lane)
        upd_i, ps = self._programming(m)

        # ------------------------------------------------------------ image and feature maps
        # rtl/image_buffer.py: the image stream into the image memory (read by the first step's lanes)
        m.submodules.image_buffer = ib = ImageBuffer(self.image_words, len(steps[0].lanes))
        wiring.connect(m, wiring.flipped(self.image), ib.image)
        # rtl/feature_maps.py: one copy of each map per reader (lanes, post, feeder), written together
        m.submodules.feature_maps = fms = FeatureMaps(steps)

        # ------------------------------------------------------------ step state
        # rtl/sequencer.py: the step (also one-hot), its constants in registers, start / advance / end
        m.submodules.sequencer = seq = Sequencer(steps, self.replica)
        step, step_oh, sc = seq.step, seq.step_oh, seq.sc
        m.d.comb += [self.timestamp.eq(seq.timestamp), self.cycles.eq(seq.cycles), seq.img_full.eq(ib.full)]
        if self.replica:
            m.d.comb += [self.fc_req.eq(seq.fc_req), seq.fc_gnt.eq(self.fc_gnt)]

        # ------------------------------------------------------------ issuer (per lane gather)
        # rtl/gather.py: per position and group slot, each lane's patch from the step's input map
        m.submodules.gather = gat = Gather(steps, NBL, self.n_rows, MO)
        m.d.comb += [gat.step.eq(step), gat.step_oh.eq(step_oh), gat.sc.eq(sc), gat.active.eq(seq.issue),
                     gat.restart.eq(seq.restart), seq.issue_end.eq(gat.end)]
        self._gather_ports(m, gat, ib, fms, lanes)

        # rtl/pe_router.py: lanes -> PE ports and PE codes -> lanes, by the step's lane -> PE table
        m.submodules.pe_router = rt = PERouter(steps, self.n_pe, NBL, self.n_adc, self.code_bits, self.n_rows)
        m.d.comb += rt.step_oh.eq(step_oh)
        for li, lane in enumerate(lanes):
            wiring.connect(m, lane.pe, rt.lane[li])
        for p in range(self.n_pe):
            wiring.connect(m, rt.pe[p], wiring.flipped(self.pe[p]))

        # ------------------------------------------------------------ accumulation
        # rtl/accumulator.py: per position, the sum over its group slots of the lanes' D
        m.submodules.accumulator = acc = Accumulator(NL, MO, lanes[0].d_bits, self.logit_bits)
        m.d.comb += [acc.i.valid.eq(lanes[0].res.valid), acc.i.payload.tag.eq(lanes[0].res.payload.tag)]
        m.d.comb += [acc.i.payload.d[li].eq(lane.res.payload.d) for li, lane in enumerate(lanes)]

        # ------------------------------------------------------------ post: requant + pool / logits
        # rtl/post.py: conv steps, per finished position one channel per cycle (H shifts down),
        # bounded ReLU + requant + max-pool into the next feature map; `post.done` ends the step
        m.submodules.post = post = Post(steps, self.logit_bits)
        m.d.comb += [post.h0.eq(acc.h[0]), post.step.eq(step), post.step_oh.eq(step_oh), post.oh1.eq(sc.oh1),
                     post.ow1.eq(sc.ow1), post.no1.eq(sc.no1), post.no2.eq(sc.no2), post.m.eq(sc.m)]
        for f in range(fms.n_maps):
            wiring.connect(m, post.wr[f], fms.wr[f])
            wiring.connect(m, post.rd[f], fms.rmw[f])
        # the FC step's logits to the result stage (rtl/result.py: softmax, argmax, delta, result)
        m.submodules.result = rs = ResultStage(K, self.logit_bits, (self.softmax_m, self.softmax_sh), self.error)
        m.d.comb += [rs.i.payload[o].eq(acc.h[o]) for o in range(K)]
        self._hand_over(m, acc, post, rs, step_oh)
        m.d.comb += rs.label.eq(ib.label)
        wiring.connect(m, rs.result, wiring.flipped(self.result))

        # ------------------------------------------------------------ training feeder
        # rtl/feeder.py: after an image's softmax (with `train`), its deltas and FC inputs V into the
        # update engine; FINISH items for `upd_finish`
        m.submodules.feeder = fdr = Feeder(K, steps[-1].in_shape, self.upd.in_layout,
                                           delta_bits=len(self.result.payload.delta[0]))
        # an image is fed if `train` is on when its logits go to the result stage (the claim); the
        # feeder then holds its map (map_busy) until its V are read: the sequencer's map_hold
        m.d.comb += [fms.v_addr.eq(fdr.fm_addr), fms.v_en.eq(fdr.fm_en), fdr.fm_data.eq(fms.v_data),
                     fdr.delta.eq(rs.delta), fdr.d_load.eq(rs.delta_load), fdr.start.eq(rs.done),
                     fdr.claim.eq(rs.i.valid & rs.i.ready & self.train), rs.feed_busy.eq(fdr.busy)]
        wiring.connect(m, wiring.flipped(self.upd_finish), fdr.finish)
        wiring.connect(m, fdr.o, upd_i)

        # ------------------------------------------------------------ step sequencing
        # a step ends when the post is done (the FC step: when the result stage holds its logits);
        # the image buffer is free once C1 is done
        # the image's own logits handed to the result stage (a register, set with `held`): `held`
        # alone may still be up for the previous image's logits when a short last step begins (li2018)
        logits_in = Signal()
        with m.If(rs.i.valid & rs.i.ready):
            m.d.sync += logits_in.eq(1)
        with m.If(seq.start):
            m.d.sync += logits_in.eq(0)
        m.d.comb += [seq.step_done.eq(post.done), seq.logits_ready.eq(logits_in), seq.map_hold.eq(fdr.map_busy),
                     ib.start.eq(seq.start), ib.free.eq(post.done & step_oh[0])]
        self._status(m, seq, ib, rs, fdr, ps, lanes)
        self._activity(m, seq, lanes, gat, post, rs)
        return m

    def _activity(self, m, seq, lanes, gat, post, rs):
        """The units' activity counters, collected (golden/activity.py from_counters: the keys)."""
        for k in ("bl_pulses", "sl_selections", "diff_subs"):
            m.d.comb += getattr(self, k).eq(sum(getattr(ln, k) for ln in lanes))
        m.d.comb += [self.fm_reads.eq(gat.fm_reads + post.pool_ops),   # patch reads + pooling reads
                     self.fm_writes.eq(post.fm_writes), self.requant_ops.eq(post.requant_ops),
                     self.pool_ops.eq(post.pool_ops), self.softmax_ops.eq(rs.softmax_ops),
                     self.img_start.eq(seq.start)]

    def _programming(self, m):
        """The programming path (rtl/programming.py) or, as a replica, the `upd_out` port; -> the
        training feeder's sink and the path's status bits."""
        if self.replica:   # the shared path is in rtl/replicated.py: the feeder's stream leaves on upd_out
            ps = dict(engine_valid=Const(0), pp_busy=Const(0), pp_cmd_ready=Const(0), wv_ready=Const(1))
            return wiring.flipped(self.upd_out), SimpleNamespace(**ps)
        m.submodules.programming = pg = self.programming
        connect_programming(m, self, pg)
        ps = {k: getattr(pg, k) for k in ("engine_valid", "pp_busy", "pp_cmd_ready", "wv_ready")}
        return pg.upd_i, SimpleNamespace(**ps)

    def _gather_ports(self, m, gat, ib, fms, lanes):
        """The gather's read ports (one per lane of the step that reads a map, each on its own copy)
        and its commands to the lanes, which take a slot in lockstep (lane 0's ready stands for all)."""
        m.d.comb += [ib.rd_addr[li].eq(gat.addr[li] >> 2) for li in range(ib.n_read)] + [gat.img_data.eq(ib.rd_data)]
        for f, n in enumerate(fms.n_lanes):
            m.d.comb += [getattr(fms, f"lane{f}_addr")[li].eq(gat.addr[li]) for li in range(n)]
            m.d.comb += getattr(gat, f"fm{f}_data").eq(getattr(fms, f"lane{f}_data"))
        m.d.comb += gat.cmd.ready.eq(lanes[0].cmd.ready)
        for li, lane in enumerate(lanes):
            c = gat.cmd.payload.lane[li]
            m.d.comb += [lane.cmd.valid.eq(gat.cmd.valid), lane.cmd.payload.patch.eq(c.patch),
                         lane.cmd.payload.tag.eq(gat.cmd.payload.tag),
                         lane.cmd.payload.row_base.eq(c.row_base), lane.cmd.payload.n_out.eq(c.n_out)]

    def _hand_over(self, m, acc, post, rs, step_oh):
        """The accumulator's finished position (`hold_valid`) to the post (conv steps: one channel per
        cycle, H shifting down) or to the result stage (the FC step); `overrun` is sticky."""
        NS = len(self.steps)
        hold_valid = Signal()
        post_go = Signal()                # a channel of a conv step enters the pipeline
        m.d.comb += [acc.shift.eq(post_go), post.go.eq(post_go), post_go.eq(hold_valid & ~step_oh[NS - 1]),
                     rs.i.valid.eq(step_oh[NS - 1] & hold_valid)]
        m.d.sync += self.overrun.eq(self.overrun | (acc.done & hold_valid))
        with m.If(post_go & post.last):     # the position's last channel
            m.d.sync += hold_valid.eq(0)
        with m.If(rs.i.valid & rs.i.ready):
            m.d.sync += hold_valid.eq(0)
        with m.If(acc.done):  # a new finished position: set wins over the clears above
            m.d.sync += hold_valid.eq(1)

    def _status(self, m, seq, ib, rs, fdr, ps, lanes):
        """Status word, busy and counters (the programming path's counters are in rtl/programming.py)."""
        # status: 0 feeding, 1 feeding V, 2 finish pending, 3 update engine ready, 4 engine output valid,
        # 5 pair programmer busy, 6 pair programmer command ready, 7 softmax busy
        m.d.comb += self.status.eq(Cat(fdr.busy, fdr.v_phase, fdr.fin_pending, fdr.o.ready, ps.engine_valid,
                                       ps.pp_busy, ps.pp_cmd_ready, rs.busy))
        m.d.comb += self.busy.eq(seq.running | ib.full | rs.held | rs.busy | self.result.valid | fdr.busy |
                                 fdr.fin_pending | ps.pp_busy | ~ps.wv_ready)
        m.d.comb += [self.slot_reads.eq(sum(l.slot_reads for l in lanes)),
                     self.conv_rounds.eq(sum(l.conv_rounds for l in lanes))]
        lanes_busy = Signal()
        m.d.comb += lanes_busy.eq(sum(l.busy for l in lanes) != 0)
        with m.If(seq.running & seq.issue & ~lanes_busy):
            m.d.sync += self.lane_idle.eq(self.lane_idle + 1)


def default_instances():
    from golden import weights
    w = weights.load()
    return {"mcnn_controller": Controller(w.q.requant, softmax_params(w.q.logit_scale))}
