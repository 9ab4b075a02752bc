"""Co-simulation of the replicated-convolver controller (rtl/replicated.py) with the 8 PE array
models: tb/cosim/sim_top.py's SimTop around it, plus the `route` port (round robin or one group).

pytest / CLI side: `run(w, params)` builds and runs the cocotb session tb/cosim/replicated_main.py.
"""
from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tb.cosim.sim_top import SimTop


class RepSimTop(SimTop):
    """SimTop (8 pe_model instances, backdoor cell port, image loader) around a
    ReplicatedController, with its `route`, `clip_code` inputs and `fc_wait` counter brought out."""

    def __init__(self, controller, adc_shift: int):
        probe = SimTop(controller, adc_shift)         # SimTop's ports, whatever they are
        probe._MustUse__silence = True
        members = {name: mem for name, mem in probe.signature.members.items()}
        members["route"] = In(2)
        members["fc_wait"] = Out(32)
        members["clip_code"] = In(controller.upd.clip_bits)
        for k, v in vars(probe).items():              # SimTop's own (non-port) attributes
            if not k.startswith("_") and k not in members:
                setattr(self, k, v)
        self.ctrl, self.adc_shift = controller, adc_shift
        wiring.Component.__init__(self, members)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += [self.ctrl.route.eq(self.route), self.fc_wait.eq(self.ctrl.fc_wait),
                     self.ctrl.clip_code.eq(self.clip_code)]
        return m


def build_controller(w):
    from golden.datapath import softmax_params
    from rtl.replicated import ReplicatedController
    return ReplicatedController(w.q.requant, softmax_params(w.q.logit_scale))


def sim_top(w):
    from golden.adc import ADC
    from tb.cosim.sim_top import adc_shift_for
    return RepSimTop(build_controller(w), adc_shift_for(ADC()))


def run(w, params, log_to_terminal=False, waves=False):
    from tb import harness
    from tb.cosim.sim_top import SIM_SOURCES
    return harness.run_block(sim_top(w), "mcnn_rep_sim", "tb.cosim.replicated_main", params, extra_sources=SIM_SOURCES,
                             ports_only=True, hdl_clock_ns=10, log_to_terminal=log_to_terminal, waves=waves)
