"""Sign-WH output error (Bennett 2019, eq. 7) of one logit vector, handed out one class at a time;
golden.update.sign_error.

    e_k = [A_k > 0] - [k == label]     in {-1, 0, 1}   (= (sign(A_k) - T_k) / 2, A_k <= 0 counts as -1)

`load` samples the logits and the label and computes every class's e into a K-entry shift register;
`e` is its head (class 0 after a load); each `next` shifts it on by one class. So the errors come
in class order, one per `next`, in step with whatever paces them (rtl/result.py: the softmax's
outputs, so the training feeder, rtl/feeder.py, takes them on the same `delta` / `delta_load` as
the softmax deltas). `load` wins over `next`. A label >= K marks no class (e_k = [A_k > 0]).

Signature:
  logits   In: K x s(logit_bits), sampled on `load` (the caller holds them in registers).
  label    In(8), sampled on `load`.
  load     In(1): compute the errors of the vector on the ports.
  next     In(1): the head was taken, shift to the next class.
  e        Out(signed(2)): the head error, a register.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


class SignError(wiring.Component):
    def __init__(self, n_classes: int, logit_bits: int):
        self.n_classes, self.logit_bits = n_classes, logit_bits
        super().__init__({
            "logits": In(data.ArrayLayout(signed(logit_bits), n_classes)),
            "label": In(8),
            "load": In(1),
            "next": In(1),
            "e": Out(signed(2)),
        })

    def elaborate(self, platform):
        m = Module()
        K = self.n_classes
        er = [Signal(signed(2), name=f"e{k}") for k in range(K)]
        with m.If(self.load):
            for k in range(K):
                pos, lab = self.logits[k] > 0, self.label == k
                m.d.sync += er[k].eq(Mux(pos, Mux(lab, 0, 1), Mux(lab, -1, 0)))
        with m.Elif(self.next):
            m.d.sync += [a.eq(b) for a, b in zip(er, er[1:])]
        m.d.comb += self.e.eq(er[0])
        return m


def default_instances():
    return {"mcnn_sign_error": SignError(10, 24)}
