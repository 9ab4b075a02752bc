"""Training feeder: an image's deltas and FC inputs V into the update engine (rtl/update_engine.py).

An image is claimed when its logits reach the result stage with training on (`claim`); after its
softmax (a `start` pulse) a claimed image's feed runs: its K deltas (op DELTA, index o, value delta[o]), then
its n_in FC inputs V (op V, index mm, the last feature map's value at the HWC address of the
channel-major index mm, golden.cnn.flatten_chw), on the `o` stream. A `finish` transfer (end of a
batch) is answered with one FINISH item once no feed is in flight; `finish.ready` stays low until
that item has left.

Signature:
  o          Out stream {op, index, value} (rtl/update_engine.py in_layout): registered payload/valid.
  finish     In stream (1 bit, payload unused).
  claim      In(1): pulse, training is on and an image's logits went to the result stage: its feed
             follows its softmax, and its V are read from the last feature map, which must hold
             until then (`map_busy`).
  start      In(1): pulse, the image's softmax is done (deltas loaded): a claimed image's feed begins
             (an unclaimed image has none).
  d_load     In(K): bit o loads `delta` into class o's delta register (the softmax's outputs as
             they come, one class per cycle); the feed shifts them out one per DELTA item.
  delta      In(signed(17)).
  fm_addr, fm_en (Out) / fm_data (In): a synchronous read port (data one cycle after an enabled
             address) on the feeder's own copy of the last feature map (HWC, u8).
  busy       Out(1): a feed is in flight (until its last item has left `o`).
  v_phase    Out(1): the feed is at its V items.
  fin_pending Out(1): a finish was taken, its FINISH item has not left yet.
  map_busy   Out(1): a register, from a claim until the feed's last V value has been read from the
             map (it is then in stage D): the step writing that map for the next image waits
             (rtl/sequencer.py `map_hold`). A claim finds it low (the writer step of the claimed
             image issued only once it was low).

One item per cycle through a pipeline with one stall (`fadv`): B item (V address from the ROM into a
register), C feature-map read, D RAM output register, then the registered `o` with a one-entry skid
buffer. `fadv` is a register (the skid buffer is empty next cycle): `o.ready` only reaches the
output registers (timing).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .update_engine import Op as UpdOp


class Feeder(wiring.Component):
    def __init__(self, n_classes: int, in_shape: tuple, in_layout, delta_bits: int = 17, fm_bits: int = 8):
        self.n_classes, self.in_shape, self.in_layout = n_classes, tuple(in_shape), in_layout
        h, w, c = self.in_shape
        self.n_in = h * w * c
        super().__init__({
            "o": Out(stream.Signature(in_layout)),
            "finish": In(stream.Signature(1)),
            "claim": In(1),
            "start": In(1),
            "d_load": In(n_classes),
            "delta": In(signed(delta_bits)),
            "fm_addr": Out(16),
            "fm_en": Out(1),
            "fm_data": In(unsigned(fm_bits)),
            "busy": Out(1),
            "v_phase": Out(1),
            "fin_pending": Out(1),
            "map_busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        K, n_in = self.n_classes, self.n_in
        H2, W2, C2 = self.in_shape
        # channel-major index mm -> HWC address of the feature map
        vaddr = Memory(shape=unsigned(16), depth=n_in,
                       init=[((mm % (H2 * W2)) // W2 * W2 + mm % W2) * C2 + mm // (H2 * W2) for mm in range(n_in)])
        m.submodules.vaddr = vaddr
        va_r = vaddr.read_port(domain="comb")
        o = self.o
        # fidx and f_last return to 0 at the end of a feed: a feed start only sets fgen and vph
        fidx = Signal(range(max(n_in, K) + 2))
        feed_busy, vph, fin_pending = self.busy, self.v_phase, self.fin_pending
        fgen = Signal()             # items of the image still to issue
        f_last = Signal(init=K == 1)   # fidx is the last index of its phase
        # the deltas as the softmax hands them out, shifted out one per DELTA item: no K:1
        # multiplexer on fidx
        dsh = [Signal(self.delta.shape(), name=f"feed_d{o_}", reset_less=True) for o_ in range(K)]
        for k in range(K):
            with m.If(self.d_load[k]):
                m.d.sync += dsh[k].eq(self.delta)
        fin_sent = Signal()         # the FINISH item is in the pipeline
        with m.If(self.finish.valid & ~fin_pending):
            m.d.sync += fin_pending.eq(1)
        m.d.comb += self.finish.ready.eq(~fin_pending)
        fadv = Signal(init=1)
        fb, fc, fd = (Signal(self.in_layout, name=f"feed_{s}", reset_less=True) for s in "bcd")  # (data)
        fb_v, fc_v, fd_v = Signal(), Signal(), Signal()
        fb_last, fc_last, fd_last, fo_last = Signal(), Signal(), Signal(), Signal()   # the image's last V
        fb_va = Signal(16, reset_less=True)
        fd_dat = Signal.like(self.fm_data, reset_less=True)
        fo = Signal(self.in_layout)           # stage D's item as it leaves
        m.d.comb += [fo.op.eq(fd.op), fo.index.eq(fd.index), fo.value.eq(Mux(fd.op == UpdOp.V, fd_dat, fd.value))]
        fsk = Signal(self.in_layout, name="feed_sk", reset_less=True)
        fsk_v, fsk_last, fsk_v_nx = Signal(), Signal(), Signal()
        fo_free = ~o.valid | o.ready
        fpush = fadv & fd_v
        m.d.comb += fsk_v_nx.eq(~fo_free & (fsk_v | fpush))
        m.d.sync += [o.valid.eq(~fo_free | fsk_v | fpush), fsk_v.eq(fsk_v_nx), fadv.eq(~fsk_v_nx)]
        with m.If(fo_free):
            m.d.sync += [o.payload.eq(Mux(fsk_v, fsk.as_value(), fo.as_value())),
                         fo_last.eq(Mux(fsk_v, fsk_last, fd_last))]
        with m.If(~fsk_v):
            m.d.sync += [fsk.eq(fo), fsk_last.eq(fd_last)]
        m.d.comb += [va_r.addr.eq(fidx), self.fm_addr.eq(fb_va), self.fm_en.eq(fadv)]
        with m.If(fadv):
            m.d.sync += [fb_v.eq(0), fc_v.eq(fb_v), fc.eq(fb), fc_last.eq(fb_last),
                         fd_v.eq(fc_v), fd.eq(fc), fd_last.eq(fc_last), fd_dat.eq(self.fm_data)]
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
        with m.If(o.valid & o.ready):
            with m.If(fo_last):
                m.d.sync += feed_busy.eq(0)
            with m.If(o.payload.op == UpdOp.FINISH):
                m.d.sync += [fin_pending.eq(0), fin_sent.eq(0)]
        # the claimed image's map is read once its last V item enters stage D (fd_dat holds it)
        with m.If(fadv & fc_v & fc_last):
            m.d.sync += self.map_busy.eq(0)
        with m.If(self.claim):
            m.d.sync += self.map_busy.eq(1)
        with m.If(self.start & self.map_busy):
            m.d.sync += [feed_busy.eq(1), fgen.eq(1), vph.eq(0)]
        return m


def default_instances():
    from golden import cnn
    from .update_engine import UpdateEngine
    shape = cnn.shapes()[-2]
    return {"mcnn_feeder": Feeder(cnn.YAO2020[-1].n_out, shape, UpdateEngine().in_layout)}
