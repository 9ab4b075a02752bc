"""Host bridge: the controller's command set carried in the link's STREAM payloads, and the
controller's CSR block.

The link (rtl/link.py) moves STREAM payload words to `cmd` and collects `rsp` words; this block
gives those words a meaning. One STREAM payload is one host command:

    request   header word  op [7:0] | reserved [15:8] = 0 | count [31:16]
              then the command's items (count x ITEM_WORDS[op] words)
    response  the items' answers, then one trailer word  op [7:0] | status [15:8] | count [31:16]
              (count = answers in this response); the trailer carries `last`

Commands (rtl/protocol.py BRIDGE is the one description; `python -m rtl.hostgen` writes
sw/host_proto.py from it, next to sw/csr_map.py):

  ECHO     n words            -> n words ~w               (link checks, fault sessions)
  INFER    n images           -> n results                (image = 196 pixel words + label word)
  TRAIN    n images           -> n results; with `train`  (the update engine accumulates them)
  FINISH   count 0            -> 4 words: cells, failed, pulses, flags  (after upd_done)
  PROGRAM  n cell words       -> n write-verify results   (ok, pulses, final_code)
  READ     n cell words       -> n verify-read codes      (the conductance readback)

A result is RESULT_WORDS = 1 + 3K words (K classes): cls, logits[K] (s32), p[K] (Q1.15), delta[K]
(s32, Q1.15). A cell word is target [7:0] | bl [15:8] | row [23:16] | pe [31:24]; a cell outside
the array is refused (answer REFUSED, trailer status BAD_ARG) and not executed.

Status: OK; BAD_OP (unknown op: every word is dropped); BAD_LENGTH (payload does not hold `count`
items: missing words of an image are padded with zeros so the controller is left clean, extra
words are dropped); BAD_ARG (reserved header bits set, a refused cell).

Ordering and concurrency. INFER/TRAIN load the next image while the controller still works on the
previous one (its image buffer is free once C1 is done); PROGRAM/READ/ECHO run one item at a time
(the write-verify sequencer and the verify channel are sequential anyway). TRAIN holds the
controller's `train` input for the whole command, so every image's delta and FC inputs V go to the
update engine. FINISH offers `upd_finish`, counts the pair programmer's write-verify results on
`prog_res` and answers when `upd_done` arrives.

Verify-read channel. The PE board's single-cell verify read (vread_req/vread_rsp) is shared by the
controller's pair programmer and the host's READ command: the bridge arbitrates it, one read
outstanding at a time, the answer routed back to whoever asked.

The bridge has no notion of ticks: in the board top it runs under the controller's clock enable
(rtl/zc706_top.py), so every transfer between the two is in the same cycles.

Timing (issue 7). Every stream in and out of the bridge passes a two-entry skid buffer (`Skid`), the
in side is a one-hot state machine deciding from registered flags (the op decoded at the header,
items owed / left with their zero flags kept in registers, a cycle after the event), and the out
side prepares each answer word in a register (PICK the source, LOAD the word, SEND, 2 SETTLE
cycles): 5 cycles per answer word and 2 more per header, against thousands per word on the UART.
"""
from __future__ import annotations

import operator
from functools import reduce
from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl import csr
from rtl.protocol import BRIDGE, HOST_VERSION, REFUSED, BridgeOp, HostStatus, result_offsets
from rtl.onehot import OneHotFSM
from rtl.replica import replicas
from rtl.link import WORD, from_ns

def default_params() -> dict:
    """Design parameters of the default controller (golden/cnn.py), without elaborating it."""
    from golden import cnn
    h, w, c = cnn.INPUT_SHAPE
    classes = cnn.weight_layers()[-1].n_out
    return {"image_words": (h * w * c + 3) // 4 + 1, "classes": classes,
            "result_words": result_offsets(classes)["words"]}


# ------------------------------------------------------------------ the controller's CSR block

def ctrl_block(image_words=None, classes=None, result_words=None, th_code=15) -> csr.Block:
    d = default_params()
    image_words = d["image_words"] if image_words is None else image_words
    classes = d["classes"] if classes is None else classes
    result_words = d["result_words"] if result_words is None else result_words
    R = csr.Register
    regs = [
        R("eta_m", width=16, doc="Learning rate of hybrid training: multiplier M of dI = -(acc * M) >> sh "
                                 "(golden.update.eta_params)."),
        R("eta_sh", width=6, doc="Learning rate: shift sh (>= 1 when training)."),
        R("th_code", width=16, reset=th_code, doc="Threshold of the update rule, verify codes of 20 nA "
                                                  "(Yao 2020: 1.5 uS = 15)."),
        R("cycles", access="ro", doc="Controller cycles of the last image, start to logits."),
        R("timestamp", access="ro", doc="Free-running controller cycle counter."),
        R("slot_reads", access="ro", doc="Bit-serial slot reads since reset (all lanes)."),
        R("conv_rounds", access="ro", doc="ADC conversion rounds since reset (32 conversions each)."),
        R("lane_idle", access="ro", doc="Lane-cycles without a group while a step runs (stalls)."),
        # activity counters since reset (golden/activity.py: from_counters gives the activity keys)
        R("bl_pulses", access="ro", doc="BL read pulses since reset (BLs high in each slot read)."),
        R("sl_selections", access="ro", doc="SLs sensed since reset (2 n_out per slot read; = shift-and-adds)."),
        R("diff_subs", access="ro", doc="Differential sums D made since reset (= accumulations)."),
        R("fm_reads", access="ro", doc="Feature-map / image RAM reads since reset (patch taps + pooling reads)."),
        R("fm_writes", access="ro", doc="Feature-map RAM writes since reset."),
        R("requant_ops", access="ro", doc="Bounded ReLU + requantisations since reset."),
        R("pool_ops", access="ro", doc="Max-pool compares since reset."),
        R("softmax_ops", access="ro", doc="Softmax class evaluations since reset."),
        R("set_pulses", access="ro", doc="SET programming pulses sent to the PE board since reset."),
        R("reset_pulses", access="ro", doc="RESET programming pulses sent to the PE board since reset."),
        R("verify_reads", access="ro", doc="Verify reads of the controller (write-verify and pair programmer)."),
        R("host_reads", access="ro", doc="Verify reads of the host's READ command."),
        R("status", access="ro", width=8, doc="Training path state: 0 feeding, 1 feeding V, 2 finish pending, "
                                              "3 update engine ready, 4 engine output valid, 5 pair programmer "
                                              "busy, 6 pair programmer command ready, 7 softmax busy."),
        R("overrun", access="ro", width=1, doc="Sticky: a position finished before the previous was stored."),
        R("busy", access="ro", width=1, doc="An image, a result or training work is in flight."),
        R("image_words", access="ro", const=True, width=16, reset=image_words,
          doc="Words of one image in INFER/TRAIN (pixel words + the label word)."),
        R("classes", access="ro", const=True, width=8, reset=classes, doc="Classes (logits) of a result."),
        R("result_words", access="ro", const=True, width=16, reset=result_words,
          doc="Words of one INFER/TRAIN result: cls, logits, p, delta."),
        R("host_version", access="ro", const=True, reset=HOST_VERSION,
          doc="Version of the STREAM command set (rtl/host.py), major << 16 | minor."),
    ]
    return csr.Block("ctrl", regs, doc="controller: learning parameters, counters, design parameters",
                     windows={"counters": ("cycles", "busy"), "params": ("image_words", "host_version")})


COUNTER_PORTS = ("cycles", "timestamp", "slot_reads", "conv_rounds", "lane_idle", "bl_pulses", "sl_selections",
                 "diff_subs", "fm_reads", "fm_writes", "requant_ops", "pool_ops", "softmax_ops", "set_pulses",
                 "reset_pulses", "verify_reads", "status", "overrun", "busy")


def controller_blocks(ctrl=None) -> list:
    """The register blocks the controller adds to the link's map (LinkTop(blocks=...), project_map)."""
    if ctrl is None:
        return [ctrl_block()]
    return [ctrl_block(ctrl.image_words, ctrl.n_classes, result_offsets(ctrl.n_classes)["words"])]


def connect_bridge(m, bridge, ctrl):
    """Host bridge <-> controller streams (the board top and the co-simulation top both use this;
    `ctrl` is the Controller or anything with its ports, e.g. tb/cosim/sim_top.py's SimTop)."""
    wiring.connect(m, bridge.image, ctrl.image)
    wiring.connect(m, ctrl.result, bridge.result)
    wiring.connect(m, bridge.prog, ctrl.prog)
    wiring.connect(m, ctrl.prog_res, bridge.prog_res)
    wiring.connect(m, bridge.upd_finish, ctrl.upd_finish)
    wiring.connect(m, ctrl.upd_done, bridge.upd_done)
    wiring.connect(m, ctrl.vread_req, bridge.c_vread_req)
    wiring.connect(m, bridge.c_vread_rsp, ctrl.vread_rsp)
    m.d.comb += ctrl.train.eq(bridge.train)


def connect_ctrl_regs(m, regs, ctrl, bridge):
    """CSR fields <-> controller ports (regs = LinkTop.regs)."""
    m.d.comb += [ctrl.eta_m.eq(regs.ctrl_eta_m), ctrl.eta_sh.eq(regs.ctrl_eta_sh), ctrl.th_code.eq(regs.ctrl_th_code),
                 regs.ctrl_host_reads.eq(bridge.host_reads)]
    # the counters reach the CSR bank through a register: their adders and the controller's status
    # logic end there, not in the bank's read multiplexer (timing, issue 7); a read sees them a
    # cycle late
    for n in COUNTER_PORTS:
        m.d.sync += getattr(regs, f"ctrl_{n}").eq(getattr(ctrl, n))


# ------------------------------------------------------------------ the bridge

def _field(word, name, table):
    off, w = table[name]
    return word[off:off + w]


class Skid(wiring.Component):
    """Two-entry skid buffer: registered `o` (valid, payload) and registered `i.ready`, so no
    combinational path crosses it in either direction (timing, issue 7); full throughput."""

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        sv = Signal()
        sd = Signal(self.shape)
        m.d.comb += self.i.ready.eq(~sv)
        with m.If(~self.o.valid | self.o.ready):
            with m.If(sv):
                m.d.sync += [self.o.payload.eq(sd), self.o.valid.eq(1), sv.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~sv):
            m.d.sync += [sd.eq(self.i.payload), sv.eq(1)]
        return m


class VreadArbiter(wiring.Component):
    """The PE board's single-cell verify read (`req` / `rsp`) shared by two masters: `a` (the
    controller's pair programmer, first) and `b` (the host bridge's READ command). One read is
    outstanding at a time; its answer goes back to the master that asked. `b_reads` counts b's reads."""

    def __init__(self, rd_layout, code_layout):
        super().__init__({
            "a_req": In(stream.Signature(rd_layout)), "a_rsp": Out(stream.Signature(code_layout)),
            "b_req": In(stream.Signature(rd_layout)), "b_rsp": Out(stream.Signature(code_layout)),
            "req": Out(stream.Signature(rd_layout)), "rsp": In(stream.Signature(code_layout)),
            "b_reads": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        a_req, b_req, req, rsp = self.a_req, self.b_req, self.req, self.rsp
        owner_b = Signal()
        outstanding = Signal()
        with m.If(~outstanding):
            with m.If(a_req.valid):
                m.d.comb += [req.valid.eq(1), req.payload.eq(a_req.payload), a_req.ready.eq(req.ready)]
                with m.If(req.ready):
                    m.d.sync += [outstanding.eq(1), owner_b.eq(0)]
            with m.Elif(b_req.valid):
                m.d.comb += [req.valid.eq(1), req.payload.eq(b_req.payload), b_req.ready.eq(req.ready)]
                with m.If(req.ready):
                    m.d.sync += [outstanding.eq(1), owner_b.eq(1), self.b_reads.eq(self.b_reads + 1)]
        with m.Else():
            with m.If(owner_b):
                m.d.comb += [self.b_rsp.valid.eq(rsp.valid), rsp.ready.eq(self.b_rsp.ready)]
            with m.Else():
                m.d.comb += [self.a_rsp.valid.eq(rsp.valid), rsp.ready.eq(self.a_rsp.ready)]
            with m.If(rsp.valid & rsp.ready):
                m.d.sync += outstanding.eq(0)
        m.d.comb += [self.a_rsp.payload.eq(rsp.payload), self.b_rsp.payload.eq(rsp.payload)]
        return m


class HostBridge(wiring.Component):
    """STREAM words <-> controller ports (see the module docstring).

    Ports towards the controller are named as the controller's, seen from the other side;
    c_vread_* face the controller's pair programmer, vread_* the PE board."""

    def __init__(self, ctrl):
        self.image_words = ctrl.image_words
        # the item counts are updated a cycle after an image is issued (see elaborate)
        assert self.image_words >= 2, f"image_words {self.image_words}: the bridge needs >= 2 words per image"
        self.n_classes = ctrl.n_classes
        self.n_pe, self.n_rows, self.n_bl = ctrl.n_pe, ctrl.n_rows, ctrl.n_bl
        self.result_layout = ctrl.result_layout
        self.cmd_layout = ctrl.wv.cmd_layout
        self.res_layout = ctrl.wv.res_layout
        self.rd_layout = ctrl.pp.rd_layout
        code = data.StructLayout({"code": ctrl.code_bits})
        super().__init__({
            "cmd": In(stream.Signature(WORD)),
            "rsp": Out(stream.Signature(WORD)),
            "image": Out(stream.Signature(32)),
            "result": In(stream.Signature(self.result_layout)),
            "prog": Out(stream.Signature(self.cmd_layout)),
            "prog_res": In(stream.Signature(self.res_layout)),
            "train": Out(1),
            "upd_finish": Out(stream.Signature(1)),
            "upd_done": In(stream.Signature(1)),
            "c_vread_req": In(stream.Signature(self.rd_layout)),
            "c_vread_rsp": Out(stream.Signature(code)),
            "vread_req": Out(stream.Signature(self.rd_layout)),
            "vread_rsp": In(stream.Signature(code)),
            "active": Out(1),             # a command is being executed
            "host_reads": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        # the sections below share their signals through `ns`: each takes what it uses from the
        # earlier ones and exports what the later ones use
        ns = SimpleNamespace()
        self._skids(m, ns)
        self._registers(m, ns)
        self._vread_arbiter(m, ns)
        self._cell_decode(m, ns)
        self._in_header(m, ns)
        self._in_items(m, ns)
        self._out_words(m, ns)
        self._out_fsm(m, ns)
        self._counts(m, ns)
        return m

    def _skids(self, m, ns):
        """Skid buffers on every stream in and out of the bridge (timing): the link words, the write-verify
        results, the images and programming commands, the verify-read requests and answers."""
        # skid buffers on the link words and the write-verify results: the link's ready, the
        # bridge's answer logic and the controller's result handshake were one combinational chain
        m.submodules.cmd_skid = cmd_skid = Skid(WORD)
        m.submodules.rsp_skid = rsp_skid = Skid(WORD)
        m.submodules.res_skid = res_skid = Skid(self.res_layout)
        wiring.connect(m, wiring.flipped(self.cmd), cmd_skid.i)
        wiring.connect(m, rsp_skid.o, wiring.flipped(self.rsp))
        wiring.connect(m, wiring.flipped(self.prog_res), res_skid.i)
        # and on the images and programming commands to the controller: their ready is the
        # controller's logic, which then does not reach the bridge's FSM
        m.submodules.img_skid = img_skid = Skid(32)
        m.submodules.prog_skid = prog_skid = Skid(self.cmd_layout)
        wiring.connect(m, img_skid.o, wiring.flipped(self.image))
        wiring.connect(m, prog_skid.o, wiring.flipped(self.prog))
        cmd, rsp, prog_res = cmd_skid.o, rsp_skid.i, res_skid.o
        image, prog = img_skid.i, prog_skid.i
        # the pair programmer's verify-read requests: its FSM does not reach the arbiter's decision
        m.submodules.vrq_skid = vrq_skid = Skid(self.rd_layout)
        wiring.connect(m, wiring.flipped(self.c_vread_req), vrq_skid.i)
        c_vread_req = vrq_skid.o
        m.submodules.vrs_skid = vrs_skid = Skid(self.c_vread_rsp.payload.shape())
        wiring.connect(m, vrs_skid.o, wiring.flipped(self.c_vread_rsp))
        c_vread_rsp = vrs_skid.i
        m.submodules.vrd_skid = vrd_skid = Skid(self.rd_layout)
        wiring.connect(m, vrd_skid.o, wiring.flipped(self.vread_req))
        vread_req = vrd_skid.i
        IW, K = self.image_words, self.n_classes
        RO = result_offsets(K)
        RW = RO["words"]
        vars(ns).update(IW=IW, K=K, RO=RO, RW=RW, c_vread_req=c_vread_req, c_vread_rsp=c_vread_rsp, cmd=cmd,
            image=image, prog=prog, prog_res=prog_res, rsp=rsp, vread_req=vread_req)

    def _registers(self, m, ns):
        """The command's registers: op, status, counts of items issued / answered / left, the op's flags
        decoded at the header, the current item, the FINISH report."""
        IW, vread_req = from_ns(ns, "IW vread_req")
        op = Signal(8)
        status = Signal(8)
        answered = Signal(16)       # items answered (the trailer's count)
        # items issued and not yet answered, with the flag `owed != 0` kept in a register, and the
        # items left to issue with `left == 0` registered: no 16-bit compare in the handshake logic
        owed = Signal(16)
        owed_nz = Signal()
        left = Signal(16)
        at_last = Signal()          # the next item issued is the count-th
        inc = Signal()              # an item is issued this cycle
        dec = Signal()              # an item is answered this cycle
        inc_r = Signal()
        dec_r = Signal()
        fin_word = Signal()         # a FINISH report word is sent this cycle
        fin_word_r = Signal()
        # the op decoded once, at the header, into flags
        f = {o: Signal(name=f"is_{o.name.lower()}") for o in BridgeOp}
        h_resv = Signal()           # header: reserved bits set
        h_cnt0 = Signal()           # header: count == 0
        h_known = Signal()          # header: a known op
        is_img = Signal()           # INFER or TRAIN
        widx = Signal(range(IW + 1))
        widx_end = Signal()         # widx == IW - 1, kept with widx
        item = Signal(32)
        item_last = Signal()
        refused = Signal()          # the current item is refused: the out side answers REFUSED
        in_done = Signal()          # the in side has taken the whole payload
        fin_sent = Signal()
        fin_got = Signal()          # upd_done seen
        fin_idx = Signal(range(5))
        fcells = Signal(32)
        ffailed = Signal(32)
        fpulses = Signal(32)
        fflags = Signal(8)

        trailer_fire = Signal()

        def set_status(s):
            with m.If(status == HostStatus.OK):
                m.d.sync += status.eq(s)

        hv_req = Signal.like(vread_req.payload)
        hv_valid = Signal()
        hv_ready = Signal()
        hv_rsp_valid = Signal()
        hv_rsp_ready = Signal()
        vars(ns).update(answered=answered, at_last=at_last, dec=dec, dec_r=dec_r, f=f, fcells=fcells, ffailed=ffailed,
            fflags=fflags, fin_got=fin_got, fin_idx=fin_idx, fin_sent=fin_sent, fin_word=fin_word,
            fin_word_r=fin_word_r, fpulses=fpulses, h_cnt0=h_cnt0, h_known=h_known, h_resv=h_resv, hv_ready=hv_ready,
            hv_req=hv_req, hv_rsp_ready=hv_rsp_ready, hv_rsp_valid=hv_rsp_valid, hv_valid=hv_valid, in_done=in_done,
            inc=inc, inc_r=inc_r, is_img=is_img, item=item, item_last=item_last, left=left, op=op, owed=owed,
            owed_nz=owed_nz, refused=refused, set_status=set_status, status=status, trailer_fire=trailer_fire,
            widx=widx, widx_end=widx_end)

    def _vread_arbiter(self, m, ns):
        """The verify-read arbiter between the pair programmer (`c_vread_*`, through its skid buffers) and
        the host's READ command (`hv_*`), in front of the PE board's verify read (`vread_*`)."""
        c_vread_req, c_vread_rsp, hv_ready, hv_req, hv_rsp_ready, hv_rsp_valid, hv_valid, vread_req = from_ns(ns, """
            c_vread_req c_vread_rsp hv_ready hv_req hv_rsp_ready hv_rsp_valid hv_valid vread_req""")
        m.submodules.vread_arbiter = arb = VreadArbiter(self.rd_layout, self.vread_rsp.payload.shape())
        wiring.connect(m, c_vread_req, arb.a_req)
        wiring.connect(m, arb.a_rsp, c_vread_rsp)
        wiring.connect(m, arb.req, vread_req)
        wiring.connect(m, wiring.flipped(self.vread_rsp), arb.rsp)
        m.d.comb += [arb.b_req.payload.eq(hv_req), arb.b_req.valid.eq(hv_valid), hv_ready.eq(arb.b_req.ready),
                     hv_rsp_valid.eq(arb.b_rsp.valid), arb.b_rsp.ready.eq(hv_rsp_ready),
                     self.host_reads.eq(arb.b_reads)]

    def _cell_decode(self, m, ns):
        """Fields of the cell word on `cmd` (range check) and of the current item (to the programming and
        verify-read requests)."""
        cmd, f, hv_req, image, item, prog = from_ns(ns, "cmd f hv_req image item prog")
        P = BRIDGE
        # ---------------------------------------------------------------- cell word decode
        cw = cmd.payload.data
        cf = {n: _field(cw, n, P["cell"]) for n in P["cell"]}
        cell_ok = (cf["pe"] < self.n_pe) & (cf["row"] < self.n_rows) & (cf["bl"] < self.n_bl)
        it = {n: _field(item, n, P["cell"]) for n in P["cell"]}
        m.d.comb += [prog.payload.pe.eq(it["pe"]), prog.payload.row.eq(it["row"]),
                     prog.payload.bl.eq(it["bl"]), prog.payload.target.eq(it["target"]),
                     hv_req.pe.eq(it["pe"]), hv_req.row.eq(it["row"]), hv_req.bl.eq(it["bl"])]

        hdr = {n: _field(cw, n, P["header"]) for n in P["header"]}
        m.d.comb += self.train.eq(f[BridgeOp.TRAIN])
        m.d.comb += image.payload.eq(cmd.payload.data)
        vars(ns).update(cell_ok=cell_ok, cw=cw, hdr=hdr)

    def _in_header(self, m, ns):
        """In side FSM ("in"), header states: HDR takes the header into registers, DECODE decides from flags;
        DRAIN drops words up to `last`."""
        (answered, at_last, cmd, f, fcells, ffailed, fflags, fin_got, fin_idx, fin_sent, fpulses, h_cnt0,
         h_known, h_resv, hdr, in_done, is_img, item_last, left, op, owed, owed_nz, refused, status, widx,
         widx_end) = from_ns(ns, """
            answered at_last cmd f fcells ffailed fflags fin_got fin_idx fin_sent fpulses h_cnt0 h_known h_resv
            hdr in_done is_img item_last left op owed owed_nz refused status widx widx_end""")
        # ---------------------------------------------------------------- in side
        # one flip-flop per state (OneHotFSM): the state tests are single signals (timing, issue 7)
        fsm_in = OneHotFSM(m, "in", ["HDR", "DECODE", "DRAIN_OR_DONE", "DRAIN", "IMG", "PAD", "CELL", "GO", "FIN",
                                     "DONE"])
        with fsm_in.state("HDR"):
            # the header is taken into registers here and decided on in DECODE, from flags
            m.d.comb += cmd.ready.eq(1)
            with m.If(cmd.valid):
                m.d.sync += [op.eq(hdr["op"]), status.eq(HostStatus.OK), owed.eq(0), owed_nz.eq(0),
                             left.eq(hdr["count"] - 1), at_last.eq(hdr["count"] == 1),
                             answered.eq(0), widx.eq(0), widx_end.eq(0), refused.eq(0), in_done.eq(0), fin_sent.eq(0),
                             fin_got.eq(0), fin_idx.eq(0), fcells.eq(0), ffailed.eq(0), fpulses.eq(0),
                             fflags.eq(0), h_resv.eq(hdr["reserved"] != 0), h_cnt0.eq(hdr["count"] == 0),
                             item_last.eq(cmd.payload.last)]
                m.d.sync += [f[o].eq(hdr["op"] == o) for o in BridgeOp]
                m.d.sync += [h_known.eq(Cat(*[hdr["op"] == o for o in BridgeOp]).any()),
                             is_img.eq((hdr["op"] == BridgeOp.INFER) | (hdr["op"] == BridgeOp.TRAIN))]
                fsm_in.go("DECODE")

        with fsm_in.state("DECODE"):
            # the header's own `last` (item_last) decides DRAIN vs DONE for the error cases
            last = item_last
            with m.If(~h_known):
                m.d.sync += status.eq(HostStatus.BAD_OP)
                fsm_in.go("DRAIN_OR_DONE")
            with m.Elif(h_resv):
                m.d.sync += status.eq(HostStatus.BAD_ARG)
                fsm_in.go("DRAIN_OR_DONE")
            with m.Elif(f[BridgeOp.FINISH]):
                with m.If(~last | ~h_cnt0):
                    m.d.sync += status.eq(HostStatus.BAD_LENGTH)
                    fsm_in.go("DRAIN_OR_DONE")
                with m.Else():
                    fsm_in.go("FIN")
            with m.Elif(last):
                with m.If(~h_cnt0):
                    m.d.sync += status.eq(HostStatus.BAD_LENGTH)
                m.d.sync += in_done.eq(1)
                fsm_in.go("DONE")
            with m.Elif(h_cnt0):
                m.d.sync += status.eq(HostStatus.BAD_LENGTH)
                fsm_in.go("DRAIN")
            with m.Elif(is_img):
                fsm_in.go("IMG")
            with m.Else():
                fsm_in.go("CELL")

        with fsm_in.state("DRAIN_OR_DONE"):
            with m.If(item_last):
                m.d.sync += in_done.eq(1)
                fsm_in.go("DONE")
            with m.Else():
                fsm_in.go("DRAIN")

        with fsm_in.state("DRAIN"):                  # drop words up to `last`
            m.d.comb += cmd.ready.eq(1)
            with m.If(cmd.valid & cmd.payload.last):
                m.d.sync += in_done.eq(1)
                fsm_in.go("DONE")
        vars(ns).update(fsm_in=fsm_in)

    def _in_items(self, m, ns):
        """In side FSM, item states: image words to the controller (IMG, PAD), one cell at a time (CELL, GO),
        FINISH (FIN), then DONE until the trailer is sent."""
        (IW, at_last, cell_ok, cmd, cw, f, fin_sent, fsm_in, hv_ready, hv_valid, image, in_done, inc, inc_r,
         item, item_last, owed_nz, prog, refused, set_status, status, trailer_fire, widx, widx_end) = from_ns(ns, """
            IW at_last cell_ok cmd cw f fin_sent fsm_in hv_ready hv_valid image in_done inc inc_r item item_last
            owed_nz prog refused set_status status trailer_fire widx widx_end""")
        with fsm_in.state("IMG"):                    # image words -> controller
            m.d.comb += [image.valid.eq(cmd.valid), cmd.ready.eq(image.ready)]
            with m.If(cmd.valid & image.ready):
                end_img = widx_end
                m.d.sync += [widx.eq(Mux(end_img, 0, widx + 1)), widx_end.eq(~end_img & (widx == IW - 2))]
                with m.If(end_img):
                    m.d.comb += inc.eq(1)
                with m.If(cmd.payload.last):
                    with m.If(~end_img):
                        m.d.sync += status.eq(HostStatus.BAD_LENGTH)
                        fsm_in.go("PAD")
                    with m.Else():
                        with m.If(~at_last):
                            m.d.sync += status.eq(HostStatus.BAD_LENGTH)
                        m.d.sync += in_done.eq(1)
                        fsm_in.go("DONE")
                with m.Elif(end_img & at_last):
                    m.d.sync += status.eq(HostStatus.BAD_LENGTH)
                    fsm_in.go("DRAIN")

        with fsm_in.state("PAD"):                    # complete a short image with zero words
            m.d.comb += [image.valid.eq(1), image.payload.eq(0)]
            with m.If(image.ready):
                with m.If(widx_end):
                    m.d.comb += inc.eq(1)
                    m.d.sync += [widx.eq(0), widx_end.eq(0), in_done.eq(1)]
                    fsm_in.go("DONE")
                with m.Else():
                    m.d.sync += [widx.eq(widx + 1), widx_end.eq(widx == IW - 2)]

        with fsm_in.state("CELL"):                   # one item at a time (PROGRAM, READ, ECHO)
            with m.If(~owed_nz & ~inc_r):
                m.d.comb += cmd.ready.eq(1)
                with m.If(cmd.valid):
                    m.d.sync += [item.eq(cw), item_last.eq(cmd.payload.last)]
                    with m.If(~f[BridgeOp.ECHO] & ~cell_ok):
                        m.d.sync += refused.eq(1)
                        set_status(HostStatus.BAD_ARG)
                    fsm_in.go("GO")

        with fsm_in.state("GO"):
            sent = Signal()
            with m.If(refused | f[BridgeOp.ECHO]):
                m.d.comb += sent.eq(1)
            with m.Elif(f[BridgeOp.PROGRAM]):
                m.d.comb += [prog.valid.eq(1), sent.eq(prog.ready)]
            with m.Else():
                m.d.comb += [hv_valid.eq(1), sent.eq(hv_ready)]
            with m.If(sent):
                m.d.comb += inc.eq(1)
                with m.If(item_last):
                    with m.If(~at_last):
                        set_status(HostStatus.BAD_LENGTH)
                    m.d.sync += in_done.eq(1)
                    fsm_in.go("DONE")
                with m.Elif(at_last):
                    set_status(HostStatus.BAD_LENGTH)
                    fsm_in.go("DRAIN")
                with m.Else():
                    fsm_in.go("CELL")

        with fsm_in.state("FIN"):
            m.d.comb += self.upd_finish.valid.eq(1)
            with m.If(self.upd_finish.ready):
                m.d.sync += [fin_sent.eq(1), in_done.eq(1)]
                fsm_in.go("DONE")

        with fsm_in.state("DONE"):                   # wait for the out side's trailer
            with m.If(trailer_fire):
                fsm_in.go("HDR")

        fsm_in.finish()
        m.d.comb += self.active.eq(~fsm_in.bit["HDR"])

    def _out_words(self, m, ns):
        """Out side, the answer words: the trailer, a result's words in two registered stages, the FINISH
        report, the write-verify results (answered or counted)."""
        (K, RO, RW, answered, dec_r, f, fcells, ffailed, fflags, fin_got, fin_idx, fin_sent, fpulses, fsm_in,
         in_done, inc_r, op, owed_nz, prog_res, rsp, status) = from_ns(ns, """
            K RO RW answered dec_r f fcells ffailed fflags fin_got fin_idx fin_sent fpulses fsm_in in_done inc_r
            op owed_nz prog_res rsp status""")
        # ---------------------------------------------------------------- out side
        trailer = Signal(32)
        m.d.comb += trailer.eq(Cat(op, status, answered))
        rd = self.result.payload
        ridx = Signal(range(RW + 1))

        def word_at(i):
            if i == 0:
                return rd.cls
            for name in ("logits", "p", "delta"):
                if RO[name] <= i < RO[name] + K:
                    return getattr(rd, name)[i - RO[name]]
            raise AssertionError(i)
        pres = prog_res.payload
        pword = Cat(pres.final_code, pres.pulses, pres.ok)
        fin_words = Signal(32)
        with m.Switch(fin_idx):
            with m.Case(0):
                m.d.comb += fin_words.eq(fcells)
            with m.Case(1):
                m.d.comb += fin_words.eq(ffailed)
            with m.Case(2):
                m.d.comb += fin_words.eq(fpulses)
            with m.Case(3):
                m.d.comb += fin_words.eq(fflags)

        # The out side prepares each answer word into a register (PREP), offers it (SEND) and waits a
        # cycle (SETTLE) for `rword_r` to follow `ridx`. A word takes 3 cycles instead of 1; the UART
        # needs thousands per word, and no path now runs from the answer logic's decisions through
        # the word multiplexers into the response skid buffer (timing, issue 7).
        busy_in = ~fsm_in.bit["HDR"]
        trailer_due = Signal()
        m.d.comb += trailer_due.eq(in_done & ~owed_nz & ~inc_r & ~dec_r &
                                   (~f[BridgeOp.FINISH] | ~fin_sent | (fin_idx == 4)))
        # rword in two registered stages (8 words by ridx[:3], then by ridx[3:]), so SETTLE is 2 cycles.
        # The first stage selects by `rsel[j]`, ridx[:3] one-hot, a copy per group j (rtl/replica.py,
        # assigned with ridx in _out_fsm): ridx's low bits into all groups' 8:1 multiplexers (a fan-out
        # of ~500 LUTs, 3 LUT levels) were the critical path of the ECP5 proxy (10.4 ns); now each copy
        # drives its group's 32 bits through an AND-OR of 2 LUT levels.
        nq = (RW + 7) // 8
        rword_q = Array(Signal(32, name=f"rword_q{j}") for j in range(nq))
        rsel = replicas(Signal(8, init=1), nq, "rsel")
        for j in range(nq):
            wq = [Signal(32, name=f"rword_w{8 * j + i}") for i in range(min(8, RW - 8 * j))]
            m.d.comb += [w.eq(word_at(8 * j + i)) for i, w in enumerate(wq)]
            m.d.sync += rword_q[j].eq(reduce(operator.or_, (Mux(rsel[j][i], w, 0) for i, w in enumerate(wq))))
        # trailer_due a cycle late: it only turns false when the trailer is sent, and PICK comes 3
        # cycles after that (SEND, 2 x SETTLE)
        trailer_due_r = Signal()
        m.d.sync += trailer_due_r.eq(trailer_due)
        rword_r = Signal(32)
        m.d.sync += rword_r.eq(rword_q[ridx[3:]])
        # cycles the current result has been valid (to 2): at 2, rword_r holds its words
        res_seen = Signal(2)
        with m.If(~self.result.valid):
            m.d.sync += res_seen.eq(0)
        with m.Elif(res_seen != 2):
            m.d.sync += res_seen.eq(res_seen + 1)
        ridx_last = Signal()        # ridx == RW - 1
        oword = Signal(32)
        olast = Signal()
        src = {n: Signal(name=f"src_{n}") for n in ("img", "ref", "prog", "read", "echo", "fin", "trl")}
        sending = Signal()
        settle = Signal(2)
        # write-verify results: answers of PROGRAM (taken when their word is sent); otherwise drained,
        # and counted during FINISH (the flags are registers: no decision chain on these handshakes)
        drain_res = Signal()
        m.d.sync += drain_res.eq(~f[BridgeOp.PROGRAM] | ~busy_in)
        counting = Signal()
        m.d.comb += counting.eq(f[BridgeOp.FINISH] & fin_sent & (fin_idx != 4))
        m.d.comb += prog_res.ready.eq(drain_res | (sending & src["prog"] & rsp.ready))
        with m.If(counting & prog_res.valid & drain_res):
            m.d.sync += [fcells.eq(fcells + 1), ffailed.eq(ffailed + ~pres.ok), fpulses.eq(fpulses + pres.pulses)]
        m.d.comb += self.upd_done.ready.eq(counting & ~fin_got)
        with m.If(self.upd_done.valid & self.upd_done.ready):
            m.d.sync += [fin_got.eq(1), fflags.eq(self.upd_done.payload)]
        vars(ns).update(busy_in=busy_in, counting=counting, fin_words=fin_words, olast=olast, oword=oword,
            pword=pword, res_seen=res_seen, ridx=ridx, ridx_last=ridx_last, rsel=rsel, rword_r=rword_r, sending=sending,
            settle=settle, src=src, trailer=trailer, trailer_due_r=trailer_due_r)

    def _out_fsm(self, m, ns):
        """Out side FSM: PICK the answer's source from registered flags, LOAD its word, SEND it, 2 SETTLE
        cycles."""
        (RW, busy_in, counting, dec, f, fin_got, fin_idx, fin_word, fin_words, hv_rsp_ready, hv_rsp_valid,
         in_done, is_img, item, olast, owed_nz, oword, prog_res, pword, refused, res_seen, ridx, ridx_last,
         rsel, rsp, rword_r, sending, settle, src, trailer, trailer_due_r, trailer_fire) = from_ns(ns, """
            RW busy_in counting dec f fin_got fin_idx fin_word fin_words hv_rsp_ready hv_rsp_valid in_done
            is_img item olast owed_nz oword prog_res pword refused res_seen ridx ridx_last rsel rsp rword_r
            sending settle src trailer trailer_due_r trailer_fire""")
        # PICK chooses the answer's source from registered flags (they cannot change before LOAD:
        # only SEND answers, and the in side issues only while nothing is owed or into `owed`);
        # LOAD takes the word once the source is valid, else goes back to PICK
        picked = Signal()
        ready_src = {"img": self.result.valid & (res_seen == 2), "ref": 1, "prog": prog_res.valid,
                     "read": hv_rsp_valid, "echo": 1, "fin": fin_got, "trl": 1}
        words = {"img": rword_r, "ref": REFUSED, "prog": pword, "read": self.vread_rsp.payload.code,
                 "echo": ~item, "fin": fin_words, "trl": trailer}

        def pick(name):
            m.d.sync += [v.eq(n == name) for n, v in src.items()]
            m.d.sync += picked.eq(1)

        with m.If(sending):
            m.d.comb += [rsp.valid.eq(1), rsp.payload.data.eq(oword), rsp.payload.last.eq(olast)]
            with m.If(rsp.ready):
                m.d.sync += [sending.eq(0), settle.eq(2)]
                with m.If(src["img"]):
                    with m.If(ridx_last):
                        m.d.comb += [self.result.ready.eq(1), dec.eq(1)]
                        m.d.sync += [ridx.eq(0), ridx_last.eq(0), res_seen.eq(0)]
                        m.d.sync += [r.eq(1) for r in rsel]
                    with m.Else():
                        m.d.sync += [ridx.eq(ridx + 1), ridx_last.eq(ridx == RW - 2)]
                        m.d.sync += [r.eq(r.rotate_left(1)) for r in rsel]
                with m.If(src["ref"]):
                    m.d.comb += dec.eq(1)
                    m.d.sync += refused.eq(0)
                with m.If(src["prog"]):
                    m.d.comb += dec.eq(1)
                with m.If(src["read"]):
                    m.d.comb += [hv_rsp_ready.eq(1), dec.eq(1)]
                with m.If(src["echo"]):
                    m.d.comb += dec.eq(1)
                with m.If(src["fin"]):
                    m.d.comb += fin_word.eq(1)
                    m.d.sync += fin_idx.eq(fin_idx + 1)
                with m.If(src["trl"]):
                    m.d.comb += trailer_fire.eq(1)
                    m.d.sync += in_done.eq(0)
        with m.Elif(settle != 0):
            m.d.sync += settle.eq(settle - 1)
        with m.Elif(picked):                        # LOAD
            m.d.sync += picked.eq(0)
            any_ready = Const(0, 1)
            oword_next = Const(0, 32)
            for n in src:
                any_ready = any_ready | (src[n] & ready_src[n])
                oword_next = oword_next | Mux(src[n], words[n], 0)
            with m.If(any_ready):
                m.d.sync += [oword.eq(oword_next), olast.eq(src["trl"]), sending.eq(1)]
        with m.Elif(~busy_in):                      # PICK
            # between commands: drain stray results (after an aborted command)
            m.d.comb += self.result.ready.eq(1)
        with m.Elif(is_img & owed_nz):
            pick("img")
        with m.Elif(owed_nz & refused):
            pick("ref")
        with m.Elif(f[BridgeOp.PROGRAM] & owed_nz):
            pick("prog")
        with m.Elif(f[BridgeOp.READ] & owed_nz):
            pick("read")
        with m.Elif(f[BridgeOp.ECHO] & owed_nz):
            pick("echo")
        with m.Elif(counting):
            # the batch's write-verify results are counted above; upd_done ends the batch
            pick("fin")
        with m.Elif(trailer_due_r):
            pick("trl")

    def _counts(self, m, ns):
        """The item counts, a cycle after the event."""
        answered, at_last, dec, dec_r, fin_word, fin_word_r, inc, inc_r, left, owed, owed_nz = from_ns(ns, """
            answered at_last dec dec_r fin_word fin_word_r inc inc_r left owed owed_nz""")
        # the counts, a cycle after the event (inc_r, dec_r: the handshakes do not reach the counters'
        # adders). The lag is covered: SEND is followed by 2 SETTLE cycles, CELL waits for ~inc_r,
        # the trailer for ~inc_r & ~dec_r, and the next image ends >= IMAGE_WORDS cycles later.
        # (inc and dec never fire in HDR, where the header resets the counts.)
        m.d.sync += [inc_r.eq(inc), dec_r.eq(dec), fin_word_r.eq(fin_word)]
        with m.If(dec_r | fin_word_r):          # FINISH answers its 4 words without items owed
            m.d.sync += answered.eq(answered + 1)
        with m.If(inc_r):
            m.d.sync += [left.eq(left - 1), at_last.eq(left == 1)]
        with m.If(inc_r & ~dec_r):
            m.d.sync += [owed.eq(owed + 1), owed_nz.eq(1)]
        with m.Elif(dec_r & ~inc_r):
            m.d.sync += [owed.eq(owed - 1), owed_nz.eq(owed != 1)]
