"""Step sequencer: which weight layer ("step") of the image the controller runs, its constants, and
the start / step advance / end of an image.

Golden counterpart: the layer order of golden.cnn (golden.cnn.weight_layers; the step table is
rtl/controller.py `plan`, built from golden/cnn.py and golden/mapping.py) and the per-layer
shapes of golden.cnn.shapes.

Plain signals (the controller's control flow, not data streams):

  img_full   In  1      an image is in the input buffer: the sequencer starts it when idle
  step_done  In  1      pulse: the current step's last output has been written (the post)
  logits_ready  In 1   this image's logits are in the result stage (from their hand-over until the
                        next image starts)
  issue_end  In  1      pulse: the issuer has handed over the step's last group
  map_hold   In  1      the last step's input map is still to be read for the previous image (the
                        training feeder's V, rtl/feeder.py `map_busy`, a register): the step that
                        writes it (n_steps - 2) does not issue until it is low
  fc_gnt     In  1      (replica only) the shared FC PEs are granted
  start      Out 1      pulse (a register): an image starts
  restart    Out 1      the issuer restarts its position counters (start, or a step advance)
  issue      Out 1      the issuer runs (set with `restart`, cleared by `issue_end`; the step
                        writing the last map waits for `map_hold` low; in a replica the last
                        step's issuer waits for `fc_gnt`)
  fc_req     Out 1      (replica only) the last step runs or waits for the FC PEs
  step       Out        the step (0 .. n_steps - 1)
  step_oh    Out        the step, one-hot (set with `step`: a case of a step is one flip-flop)
  sc         Out        the step's constants (`const_layout`), registers following `step` a cycle
                        later (every use is >= 2 cycles after a step change: the first gather or
                        the first position)
  running    Out 1      an image is being run (start -> its logits are taken)
  cycles     Out 32     cycles of the last image, start -> logits ready
  timestamp  Out 32     free-running cycle counter

The image ends when its logits are ready in the last step (`logits_ready`); the next image can start
then, while the softmax of the previous one still runs. In training its last map must not change
before the training feeder has read the previous image's V from it: with yao2020 the step writing it
comes long after that; with li2018 (two steps) it is the first step, which then waits (`map_hold`).
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


def step_case(si: int, n_steps: int) -> str:
    """The `Case` pattern of step `si` on `step_oh` (one bit: a case of a step is one flip-flop)."""
    return "".join("1" if b == si else "-" for b in reversed(range(n_steps)))


class Sequencer(wiring.Component):
    """`steps`: the controller's step table (rtl/controller.py `plan`): in_shape, out_hw, n_out,
    lanes (their group lists: groups per position), requant."""

    const_layout = data.StructLayout({
        "h": 8, "w": 8, "c": 8,   # input map H, W, C
        "wc": 16,                 # W * C
        "ng1": 8,                 # groups per position - 1
        "oh1": 8, "ow1": 8,       # Ho - 1, Wo - 1
        "no1": 8, "no2": 8,       # output channels - 1, - 2
        "m": 16,                  # requant multiplier
    })

    def __init__(self, steps, replica: bool = False):
        self.steps, self.replica = steps, replica
        ns = len(steps)
        ports = {
            "img_full": In(1), "step_done": In(1), "logits_ready": In(1), "issue_end": In(1), "map_hold": In(1),
            "start": Out(1), "restart": Out(1), "issue": Out(1),
            "step": Out(range(ns + 1)), "step_oh": Out(ns, init=1), "sc": Out(self.const_layout),
            "running": Out(1), "cycles": Out(32), "timestamp": Out(32),
        }
        if replica:
            ports.update({"fc_gnt": In(1), "fc_req": Out(1)})
        super().__init__(ports)

    def step_consts(self, st) -> dict:
        h, w, c = st.in_shape
        return {"h": h, "w": w, "c": c, "wc": w * c, "ng1": len(st.lanes[0][1]) - 1,
                "oh1": st.out_hw[0] - 1, "ow1": st.out_hw[1] - 1, "no1": st.n_out - 1,
                "no2": max(st.n_out - 2, 0), "m": st.requant[0] if st.requant else 0}

    def elaborate(self, platform):
        m = Module()
        steps, NS = self.steps, len(self.steps)
        step, step_oh, sc = self.step, self.step_oh, self.sc
        consts = [self.step_consts(st) for st in steps]
        for name, f in self.const_layout:
            m.d.sync += getattr(sc, name).eq(Array(Const(k[name], f.shape) for k in consts)[step])
        running = self.running
        ncycles = Signal(32)
        m.d.sync += self.timestamp.eq(self.timestamp + 1)
        with m.If(running):
            m.d.sync += ncycles.eq(ncycles + 1)
        iss_active = self.issue
        with m.If(self.issue_end):
            m.d.sync += iss_active.eq(0)
        # the start is a registered pulse (for timing: it resets the issuer's counters)
        start_go = self.start
        m.d.sync += start_go.eq(~running & self.img_full & ~start_go)
        m.d.comb += self.restart.eq(start_go | self.step_done)
        with m.If(start_go):  # the softmax of the previous image may still be running
            m.d.sync += [running.eq(1), step.eq(0), step_oh.eq(1), iss_active.eq(1), ncycles.eq(0)]
        with m.If(self.step_done):
            m.d.sync += [step.eq(step + 1), step_oh.eq(step_oh << 1), iss_active.eq(1)]
        # the last step ends when its logits are taken (step check: `logits_ready` stays up until the
        # next image starts)
        with m.If(running & self.logits_ready & step_oh[NS - 1]):
            m.d.sync += [running.eq(0), self.cycles.eq(ncycles), step.eq(0), step_oh.eq(1)]
        if NS >= 2:
            # the step writing the last map (NS - 2) is entered (its restart) but waits to issue
            # while `map_hold` (the previous image's V are still read from that map)
            map_wait = Signal()
            enter = start_go if NS == 2 else self.step_done & step_oh[NS - 3]
            with m.If(enter & self.map_hold):
                m.d.sync += [iss_active.eq(0), map_wait.eq(1)]
            with m.If(map_wait & ~self.map_hold):
                m.d.sync += [iss_active.eq(1), map_wait.eq(0)]
        if self.replica:
            # shared FC PEs (rtl/replicated.py): the last step's issuer starts once `fc_gnt` is given;
            # `fc_req` is held from the end of the step before it until the logits are taken
            fc_wait = Signal()
            m.d.comb += self.fc_req.eq(running & (step == NS - 1))
            with m.If(self.step_done & (step == NS - 2)):
                m.d.sync += [iss_active.eq(0), fc_wait.eq(1)]
            with m.If(fc_wait & self.fc_gnt):
                m.d.sync += [iss_active.eq(1), fc_wait.eq(0)]
        return m
