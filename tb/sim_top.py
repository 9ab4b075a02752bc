"""Construction shared by the system co-simulation entry points (tests, `mcnn sim`, `mcnn bench`)."""
from __future__ import annotations

from golden.adc import ADC
from golden.datapath import softmax_params


def build_controller(w):
    from rtl.controller import Controller
    return Controller(w.q.requant, softmax_params(w.q.logit_scale))


def sim_top(w):
    from tb.cosim import SimTop, adc_shift_for
    return SimTop(build_controller(w), adc_shift_for(ADC()))


def session_params(weights, data, n, report, **kw) -> dict:
    """Parameters of a tb/sim_main.py session (make sim, make bench, the tests)."""
    from pathlib import Path
    return {"weights": str(Path(weights).resolve()), "data": str(Path(data).resolve()), "n": n,
            "report": str(Path(report).resolve()), **kw}


def run(w, params, log_to_terminal=False, waves=False):
    from tb import harness
    from tb.cosim import PE_MODEL
    return harness.run_block(sim_top(w), "mcnn_sim", "tb.sim_main", params, extra_sources=[PE_MODEL],
                             ports_only=True, hdl_clock_ns=10, log_to_terminal=log_to_terminal, waves=waves)
