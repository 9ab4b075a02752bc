"""Replicated convolvers (Yao 2020, Fig. 4): three images in flight, one per PE group.

Three controllers (rtl/controller.py, `replica=True`), each generated from one group's mapping
(golden/replicate.py: G1 = PE0+PE2, G2 = PE1+PE3, G3 = PE5+PE7 hold independent copies of C1/C3),
share the FC PEs (PE4+PE6) and one programming path:

  image stream ──> deal (image k -> group k mod 3, or every image to one group: `route`)
                    │            │            │
                 ctrl G1      ctrl G2      ctrl G3       conv steps on their own PEs, in parallel
                    │ fc_req/fc_gnt (round-robin arbiter: one group at a time on PE4/PE6)
                    │            │            │
  result stream <── in image order, with the group tag (0 = G1)
  training: the groups' feeders (delta, V per image) ──> arbiter (one image at a time)
            ──> shared update engine ──> pair programmer ──> write-verify ──> prog_req/prog_rsp
            host `prog` commands (transfer) share the write-verify sequencer as in the controller.

The FC step is 192 of ~30,000 cycles per image, so the arbiter rarely makes a group wait; with
three groups the result spacing approaches a third of the single-network controller's.

Training: every image's delta and V go to the one update engine, so the accumulation of equation
1 covers whatever the host sends before `upd_finish`: one group's batch (golden.hybrid's
`--rep-update batch`, with `route` = that group) or a whole round of three batches, one per group
(`--rep-update round`, the default, the batches interleaved image by image). `clip_code` is the
update clipping (golden.hybrid.clip_update; golden's default REP_CLIP_CODE = 30, 0 = off), done by
the engine in a second scan. The engine's accumulators are sized for `max_batch` images per update
(384: a round of 3 x 100).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import cnn
from golden.datapath import softmax_params
from golden.replicate import group_mappings

from .controller import Controller
from .pe_board import PEBoardSignature
from .programming import ProgrammingPath, connect_programming
from .update_engine import Op as UpdOp
from .update_engine import fc_groups


class ReplicatedController(wiring.Component):
    """Replicated-convolver controller. Ports as rtl/controller.py's Controller, plus `route`
    (0: images dealt round robin over the groups; g = 1..3: every image to group g) and the
    result's `group` field."""

    def __init__(self, requant: dict, softmax: tuple, layers=cnn.YAO2020, mappings: dict | None = None,
                 n_pe=8, n_bl=16, n_rows=128, n_adc=32, code_bits=8, window_codes=(25, 200), max_batch=384,
                 **kw):
        mappings = mappings or group_mappings(layers)
        self.group_names = list(mappings)
        self.ctrls = [Controller(requant, softmax, layers, mappings[g], n_pe=n_pe, n_bl=n_bl, n_rows=n_rows,
                                 n_adc=n_adc, code_bits=code_bits, window_codes=window_codes, replica=True, **kw)
                      for g in self.group_names]
        c0 = self.ctrls[0]
        self.n_groups = len(self.ctrls)
        self.n_pe, self.n_bl, self.n_rows, self.n_adc, self.code_bits = n_pe, n_bl, n_rows, n_adc, code_bits
        self.image_words, self.n_classes, self.steps = c0.image_words, c0.n_classes, c0.steps
        # PE ownership: conv PEs per group (disjoint), FC PEs shared (the same for every group)
        self.fc_pes = sorted({pe for pe, _ in c0.steps[-1].lanes})
        self.conv_pes = [sorted({pe for st in c.steps[:-1] for pe, _ in st.lanes}) for c in self.ctrls]
        owners = {}
        for gi, c in enumerate(self.ctrls):
            if sorted({pe for pe, _ in c.steps[-1].lanes}) != self.fc_pes:
                raise ValueError(f"group {self.group_names[gi]}: the FC PEs differ from {self.fc_pes}")
            for pe in self.conv_pes[gi]:
                if pe in owners or pe in self.fc_pes:
                    raise ValueError(f"PE{pe} is used by two groups' conv layers or by a conv layer and the FC")
                owners[pe] = gi
        self.pe_owner = owners
        fc_name = c0.steps[-1].name
        fcg, fco = fc_groups(mappings[self.group_names[0]], fc_name)
        for g in self.group_names[1:]:
            if fc_groups(mappings[g], fc_name) != (fcg, fco):
                raise ValueError(f"group {g}: the FC read groups differ (the FC layer must be shared)")
        # the shared programming path (rtl/programming.py); its blocks' layouts shape the ports below
        self.programming = ProgrammingPath(fcg, fco, n_pe=n_pe, n_rows=n_rows, n_bl=n_bl, code_bits=code_bits,
                                           window_codes=window_codes, max_batch=max_batch)
        self.wv, self.upd, self.pp = self.programming.wv, self.programming.upd, self.programming.pp
        self.ctrl_result_layout = c0.result_layout
        self.result_layout = data.StructLayout({**c0.result_layout.members,
                                                "group": max(1, (self.n_groups - 1).bit_length())})
        super().__init__({
            "image": In(stream.Signature(unsigned(32))),
            "result": Out(stream.Signature(self.result_layout)),
            "route": In(2),
            "pe": Out(PEBoardSignature(n_bl, n_adc, code_bits, n_rows)).array(n_pe),
            "prog": In(stream.Signature(self.wv.cmd_layout)),
            "prog_res": Out(stream.Signature(self.wv.res_layout)),
            "prog_req": Out(stream.Signature(self.wv.req_layout)),
            "prog_rsp": In(stream.Signature(self.wv.rsp_layout)),
            "train": In(1),
            "eta_m": In(16), "eta_sh": In(6), "th_code": In(16, init=15),
            "clip_code": In(self.upd.clip_bits),   # update clipping, codes (0: off; golden's default 30)
            "upd_finish": In(stream.Signature(1)),
            "upd_done": Out(stream.Signature(1)),
            "vread_req": Out(stream.Signature(self.pp.rd_layout)),
            "vread_rsp": In(stream.Signature(data.StructLayout({"code": code_bits}))),
            "cycles": Out(32),          # start -> logits of the image of the last result (its group)
            "timestamp": Out(32),
            "slot_reads": Out(32), "conv_rounds": Out(32), "lane_idle": Out(32),   # sums over the groups
            "overrun": Out(1),
            "set_pulses": Out(32), "reset_pulses": Out(32), "verify_reads": Out(32),
            "busy": Out(1),
            "status": Out(8),           # as the controller's; bit 0 = a group's feeder is busy
            "fc_wait": Out(32),         # cycles a group waited for the FC PEs (arbitration loss)
        })

    def elaborate(self, platform):
        m = Module()
        for gi, c in enumerate(self.ctrls):
            m.submodules[f"g{gi + 1}"] = c
            m.d.comb += c.train.eq(self.train)
        self._deal(m)
        self._results(m)
        held, owner = self._fc_arbiter(m)
        self._pe_ports(m, held, owner)
        # the shared programming path (rtl/programming.py)
        m.submodules.programming = pg = self.programming
        connect_programming(m, self, pg)
        m.d.comb += pg.clip_code.eq(self.clip_code)
        flock, fvalid, fin_pending = self._feed(m, pg.upd_i)
        self._counters(m, pg, pg.upd_i, flock, fvalid, fin_pending)
        return m

    def _deal(self, m):
        """Image dealing: image k to group k mod G (route = 0) or every image to group `route`."""
        G, cs = self.n_groups, self.ctrls
        deal = Signal(range(G))          # round-robin pointer (route = 0)
        tgt = Signal(range(G))
        m.d.comb += tgt.eq(deal)
        for g in range(G):
            with m.If(self.route == g + 1):
                m.d.comb += tgt.eq(g)
        words = Signal(range(self.image_words))
        for gi, c in enumerate(cs):
            m.d.comb += [c.image.payload.eq(self.image.payload), c.image.valid.eq(self.image.valid & (tgt == gi))]
        m.d.comb += self.image.ready.eq(Array(c.image.ready for c in cs)[tgt])
        with m.If(self.image.valid & self.image.ready):
            m.d.sync += words.eq(words + 1)
            with m.If(words == self.image_words - 1):
                m.d.sync += [words.eq(0), deal.eq(_zero_if(self.route != 0, _inc(deal, G)))]

    def _results(self, m):
        """The results, in image order, with the group tag."""
        G, cs = self.n_groups, self.ctrls
        # an output register: a result is taken from its group, then offered (valid drops for at
        # least a cycle between results)
        rsel = Signal(range(G))
        take = Signal(range(G))
        m.d.comb += rsel.eq(take)
        for g in range(G):
            with m.If(self.route == g + 1):
                m.d.comb += rsel.eq(g)
        cw = self.ctrl_result_layout.size
        src_valid = Array(c.result.valid for c in cs)[rsel]
        for gi, c in enumerate(cs):
            m.d.comb += c.result.ready.eq(~self.result.valid & (rsel == gi))
        with m.If(self.result.valid & self.result.ready):
            m.d.sync += self.result.valid.eq(0)
        with m.If(~self.result.valid & src_valid):
            m.d.sync += [self.result.valid.eq(1),
                         self.result.payload.as_value()[:cw].eq(Array(c.result.payload.as_value() for c in cs)[rsel]),
                         self.result.payload.group.eq(rsel),
                         self.cycles.eq(Array(c.cycles for c in cs)[rsel]),
                         take.eq(_zero_if(self.route != 0, _inc(take, G)))]

    def _fc_arbiter(self, m):
        """Round-robin arbitration of the FC PEs: (held, owner), the grant and its group."""
        G, cs = self.n_groups, self.ctrls
        held = Signal()
        owner = Signal(range(G))
        first = Signal(range(G))         # first group to consider at the next grant
        reqs = Cat(c.fc_req for c in cs)
        with m.If(held):
            with m.If(~reqs.bit_select(owner, 1)):
                m.d.sync += held.eq(0)
        with m.Else():
            _round_robin(m, G, reqs, first, held, owner)
        for gi, c in enumerate(cs):
            m.d.comb += c.fc_gnt.eq(held & (owner == gi))
            with m.If(c.fc_req & ~(held & (owner == gi))):
                m.d.sync += self.fc_wait.eq(self.fc_wait + 1)
        return held, owner

    def _pe_ports(self, m, held, owner):
        """The PE ports: the FC PEs from the group that holds them, each conv PE from its group."""
        cs = self.ctrls
        members = PEBoardSignature(self.n_bl, self.n_adc, self.code_bits, self.n_rows).members
        for p in range(self.n_pe):
            top = self.pe[p]
            if p in self.fc_pes:
                for name, mem in members.items():
                    if mem.flow == Out:
                        src = Array(getattr(c.pe[p], name) for c in cs)[owner]
                        m.d.comb += getattr(top, name).eq(_zero_if(~held, src))
                    else:
                        for gi, c in enumerate(cs):
                            v = getattr(top, name)
                            m.d.comb += getattr(c.pe[p], name).eq(v if name != "adc_valid"
                                                                   else v & held & (owner == gi))
            elif p in self.pe_owner:
                c = cs[self.pe_owner[p]]
                for name, mem in members.items():
                    if mem.flow == Out:
                        m.d.comb += getattr(top, name).eq(getattr(c.pe[p], name))
                    else:
                        m.d.comb += getattr(c.pe[p], name).eq(getattr(top, name))

    def _feed(self, m, upd_i):
        """The groups' feeders into the shared update engine, one image (its deltas, then its V up
        to the last index) at a time, and the end of batch once no group is feeding:
        (flock, fvalid, fin_pending)."""
        G, cs = self.n_groups, self.ctrls
        flock = Signal()
        fown = Signal(range(G))
        ffirst = Signal(range(G))
        fvalid = Cat(c.upd_out.valid for c in cs)
        last_item = (upd_i.payload.op == UpdOp.V) & (upd_i.payload.index == self.upd.n_in - 1)
        with m.If(flock):
            m.d.comb += [upd_i.valid.eq(fvalid.bit_select(fown, 1)),
                         upd_i.payload.eq(Array(c.upd_out.payload for c in cs)[fown])]
            for gi, c in enumerate(cs):
                m.d.comb += c.upd_out.ready.eq(upd_i.ready & (fown == gi))
            with m.If(upd_i.valid & upd_i.ready & last_item):
                m.d.sync += flock.eq(0)
        with m.Else():
            _round_robin(m, G, fvalid, ffirst, flock, fown)
        # end of batch: once no group is feeding
        fin_pending = Signal()
        with m.If(self.upd_finish.valid & ~fin_pending):
            m.d.sync += fin_pending.eq(1)
        m.d.comb += self.upd_finish.ready.eq(~fin_pending)
        with m.If(fin_pending & ~flock & ~fvalid.any()):
            m.d.comb += [upd_i.valid.eq(1), upd_i.payload.op.eq(UpdOp.FINISH)]
            with m.If(upd_i.ready):
                m.d.sync += fin_pending.eq(0)
        return flock, fvalid, fin_pending

    def _counters(self, m, pg, upd_i, flock, fvalid, fin_pending):
        """The counters (sums over the groups), status and busy."""
        cs = self.ctrls
        m.d.sync += self.timestamp.eq(self.timestamp + 1)
        m.d.comb += [self.slot_reads.eq(sum(c.slot_reads for c in cs)),
                     self.conv_rounds.eq(sum(c.conv_rounds for c in cs)),
                     self.lane_idle.eq(sum(c.lane_idle for c in cs)),
                     self.overrun.eq(Cat(c.overrun for c in cs).any())]
        feeding = flock | fvalid.any() | Cat(c.status[0] for c in cs).any()
        m.d.comb += self.status.eq(Cat(feeding, Cat(c.status[1] for c in cs).any(), fin_pending, upd_i.ready,
                                       pg.engine_valid, pg.pp_busy, pg.pp_cmd_ready,
                                       Cat(c.status[7] for c in cs).any()))
        m.d.comb += self.busy.eq(Cat(c.busy for c in cs).any() | self.result.valid | fin_pending | flock | pg.pp_busy |
                                 ~pg.wv_ready)


def _round_robin(m, G: int, reqs, first, lock, owner):
    """Grant the first requesting group in the order first, first + 1, ... (mod G): lock, owner
    and the next `first` are registers."""
    with m.Switch(first):
        for s in range(G):
            with m.Case(s):
                for k in range(G):
                    g = (s + k) % G
                    with m.If(reqs[g] & ~(reqs & _mask(G, s, k)).any()):
                        m.d.sync += [lock.eq(1), owner.eq(g), first.eq((g + 1) % G)]

def _zero_if(cond, value):
    return Mux(cond, 0, value)


def _inc(v, G: int):
    return Mux(v == G - 1, 0, v + 1)


def _mask(G: int, s: int, k: int) -> int:
    """Bits of the groups ahead of position k in the round-robin order starting at s."""
    return sum(1 << ((s + j) % G) for j in range(k))


def default_instances():
    from golden import weights
    w = weights.load()
    return {"mcnn_replicated": ReplicatedController(w.q.requant, softmax_params(w.q.logit_scale))}
