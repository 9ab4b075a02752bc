"""Result stage: an image's logits through the softmax (rtl/softmax.py: p, delta, argmax) into the
`result` stream; golden.datapath.softmax_fixed, .delta and .argmax per image.

The logit vector is held (`held`) from its transfer on `i` until the softmax has read it. The
softmax run starts once the previous result has left and the training feeder is idle; the logits
go to the softmax through a shift register (a K:1 multiplexer there was too slow), its outputs come
in class order into the result registers; the run's last output (its argmax: the class) sets
`result.valid`. The deltas leave on `delta` / `delta_load` as they come (the training feeder's
registers, rtl/feeder.py).

Training error `error` (elaboration parameter, from the output layer's learning rule): "softmax"
(the default) - delta = p - onehot(label), golden.datapath.delta; "sign" (sign-WH, Bennett 2019) -
delta = golden.update.sign_error's e in {-1, 0, 1} of the held logits and label (rtl/sign_error.py,
loaded with the softmax run's start, shifted on by each softmax output): the same `delta` /
`delta_load` / `done` timing and the result's `delta` field, p and cls still the softmax's.

Signature:
  i           In stream: the logit vector (K x s(logit_bits)); ready = ~held.
  label       In(8): the image's label, sampled with the logits (at the `i` transfer: the next
              image may start, and its label replace this one at the source, before the softmax
              runs).
  feed_busy   In(1): the training feeder is busy (a new run waits: it reloads the deltas).
  result      Out stream (result_layout): cls, logits, p (Q1.15), delta (Q1.15, s17; or the sign error).
  held        Out(1): the logits are held (not yet read by the softmax).
  busy        Out(1): a softmax run is in flight (logits being fed / outputs being collected).
  delta, delta_load  Out: the softmax's delta, and per class its load enable (one-hot, in order).
  done        Out(1): the run's last output is taken (the image's deltas are all out).

Submodules `softmax` and `smfeed` (the logit shift register) hold large groups of registers: a
clock enable can be given to each by its own copy (rtl/replica.py EnableCopies).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .replica import replicas, slices
from .sign_error import SignError
from .softmax import Softmax

ERRORS = ("softmax", "sign")      # training error of the output layer (module docstring)


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def result_layout(n_classes: int, logit_bits: int) -> data.StructLayout:
    return data.StructLayout({
        "cls": _bits(n_classes),
        "logits": data.ArrayLayout(signed(logit_bits), n_classes),
        "p": data.ArrayLayout(unsigned(16), n_classes),       # Q1.15
        "delta": data.ArrayLayout(signed(17), n_classes),     # Q1.15, p - onehot(label)
    })


class ResultStage(wiring.Component):
    def __init__(self, n_classes: int, logit_bits: int, softmax: tuple, error: str = "softmax"):
        if error not in ERRORS:
            raise ValueError(f"result stage: error must be one of {ERRORS}, got {error!r}")
        self.n_classes, self.logit_bits, self.error = n_classes, logit_bits, error
        self.softmax_m, self.softmax_sh = softmax
        self.result_layout = result_layout(n_classes, logit_bits)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(logit_bits), n_classes))),
            "label": In(8),
            "feed_busy": In(1),
            "result": Out(stream.Signature(self.result_layout)),
            "held": Out(1), "busy": Out(1),
            "delta": Out(signed(17)), "delta_load": Out(n_classes), "done": Out(1),
            "softmax_ops": Out(32),     # the softmax's activity counter (rtl/softmax.py `ops`)
        })

    def elaborate(self, platform):
        m = Module()
        K = self.n_classes
        res = self.result
        # the logits, registered on their own step bit outside any priority chain (the registers'
        # clock enable is then one LUT of flip-flops: timing)
        logits = [Signal(signed(self.logit_bits), name=f"logit{o}") for o in range(K)]
        label = Signal.like(self.label, name="label_held")
        final_ready = self.held
        m.d.comb += self.i.ready.eq(~final_ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [lg.eq(self.i.payload[o]) for o, lg in enumerate(logits)]
            m.d.sync += [final_ready.eq(1), label.eq(self.label)]

        m.submodules.softmax = sm = Softmax(K, self.logit_bits)
        m.d.comb += [sm.m.eq(self.softmax_m), sm.sh.eq(self.softmax_sh), self.softmax_ops.eq(sm.ops)]
        am_busy = self.busy      # logits being fed / outputs being collected
        sm_i = Signal(range(K + 1))
        sm_z = [Signal(signed(self.logit_bits), name=f"smz{o}") for o in range(K)]
        sm_more = Signal()      # sm_i < K, a register
        # (sm_more is set with am_busy and clears after the K-th logit, before the softmax's last
        # output clears am_busy: it is the valid by itself, a flip-flop)
        m.d.comb += [sm.i.valid.eq(sm_more), sm.i.payload.z.eq(sm_z[0]), sm.i.payload.label.eq(label)]
        # the load decided a cycle ahead (sm_go), so the logit shift register's clock enable is one
        # LUT of flip-flops (timing). Nothing that sm_go reads can change in between: with am_busy
        # low the softmax is idle, so final_ready, result.valid and feed_busy hold, and so do the
        # logits (final_ready is up)
        sm_go = Signal()
        # the logit shift register's own copies of sm_more and sm_go (rtl/replica.py), one per
        # slice of it: each slice's clock enable is one LUT of its own flip-flops (timing: one
        # enable net to all K * logit_bits flip-flops was the critical path). The shift register
        # is a submodule `smfeed`, so it can take its own copy of a clock enable.
        NSZ = min(2, K)
        sz_more, sz_go = replicas(sm_more, NSZ, "sz_more"), replicas(sm_go, NSZ, "sz_go")
        go_next = final_ready & ~am_busy & ~res.valid & ~self.feed_busy & ~sm_go
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
                mz.d.sync += [res.payload.logits[o].eq(logits[o]) for o in range(lo, hi)]
            with mz.If(sz_more[k] & sm.i.ready):
                mz.d.sync += [sm_z[o].eq(sm_z[o + 1]) for o in range(lo, min(hi, K - 1))]
        m.d.comb += sm.o.ready.eq(~res.valid)
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
        err = sm.o.payload.delta
        if self.error == "sign":
            # the sign errors, computed from the held logits and label at the run's start (registered),
            # shifted on with the softmax's outputs: the class order and timing of its deltas
            m.submodules.sign_error = se = SignError(K, self.logit_bits)
            m.d.comb += [se.label.eq(label), se.load.eq(sm_go), se.next.eq(sm.o.valid & sm.o.ready)]
            m.d.comb += [se.logits[o].eq(logits[o]) for o in range(K)]
            err = se.e
        for o in range(K):
            with m.If(sm.o.valid & sm_oh[o]):
                m.d.sync += [res.payload.p[o].eq(sm.o.payload.p), res.payload.delta[o].eq(err)]
        m.d.comb += [self.delta.eq(err),
                     self.delta_load.eq(Cat(sm.o.valid & sm_oh[o] for o in range(K))),   # (as p, delta above)
                     self.done.eq(sm.o.valid & sm.o.ready & sm.o.payload.last)]
        with m.If(sm.o.valid & sm.o.ready):
            m.d.sync += sm_oh.eq(sm_oh.rotate_left(1))
            with m.If(sm.o.payload.last):
                m.d.sync += [am_busy.eq(0), final_ready.eq(0), res.payload.cls.eq(sm.o.payload.argmax)]
        # result.valid as one expression: the consumer's ready (late, from the host bridge) enters
        # only its last LUT (set and clear are exclusive: sm.o.ready = ~result.valid)
        res_set = Signal()
        m.d.comb += res_set.eq(sm.o.valid & sm.o.payload.last & ~res.valid)
        m.d.sync += res.valid.eq(res_set | (res.valid & ~res.ready))
        return m


def default_instances():
    from golden import weights
    from golden.datapath import softmax_params
    w = weights.load()
    return {"mcnn_result": ResultStage(10, 24, softmax_params(w.q.logit_scale))}
