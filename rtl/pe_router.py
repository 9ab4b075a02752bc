"""PE router: the read lanes' PE-board outputs onto the PE ports, and the PEs' ADC codes back to
the lanes, both by the step's lane -> PE table (rtl/controller.py `plan`: step s's lane l drives
PE steps[s].lanes[l][0]).

Golden counterpart: golden/mapping.py's placement of read groups on PEs (Group.pe); the router
only moves signals, it computes nothing.

  lane[l]   In  (PEBoardSignature, flipped): lane l's PE-side port (rtl/read_lane.py `pe`)
  pe[p]     Out (PEBoardSignature): PE p's port (rtl/pe_board.py)
  step_oh   In  n_steps   the running step, one-hot (rtl/sequencer.py)

Lanes -> PEs: each PE output is the AND-OR, over the lanes that ever drive that PE, of the
lane's output gated by "one of its steps is running" (no priority between the cases: one LUT after
the lanes' registers; the PHY captures them in the cycle after the tick). A PE no step uses is
driven 0.

PEs -> lanes: each lane's adc_valid and adc_codes are the AND-OR over its source PEs, selected by
registers `lsel{l}_{p}` (set from step_oh: a cycle late, which is safe since a step's first codes
come >= pulse_cycles after its first issue), kept in NSEL copies, each enabling a slice of the
code bits (timing: one decoded select drove every code bit of the lanes across the die).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .onehot import any_of
from .pe_board import PEBoardSignature
from .replica import replicas, slices

OUTS = ("bl", "pulse", "sh_sample", "sh_bank", "adc_start", "adc_bank", "adc_sel")
NSEL = 4        # copies of each select register (slices of the code bits)


class PERouter(wiring.Component):
    """`steps`: the controller's step table (only each step's lanes' PEs are used)."""

    def __init__(self, steps, n_pe=8, n_bl=16, n_adc=32, code_bits=8, n_rows=128):
        self.n_steps, self.n_pe = len(steps), n_pe
        self.n_lanes = max(len(s.lanes) for s in steps)
        self.lane_pe = {}       # (lane, PE) -> the steps in which that lane drives that PE
        for si, st in enumerate(steps):
            for li, (pe, _) in enumerate(st.lanes):
                self.lane_pe.setdefault((li, pe), []).append(si)
        super().__init__({
            "lane": In(PEBoardSignature(n_bl, n_adc, code_bits)).array(self.n_lanes),
            "pe": Out(PEBoardSignature(n_bl, n_adc, code_bits, n_rows)).array(n_pe),
            "step_oh": In(self.n_steps),
        })

    def elaborate(self, platform):
        m = Module()
        step_oh = self.step_oh
        for p in range(self.n_pe):
            srcs = {li: sis for (li, q), sis in self.lane_pe.items() if q == p}
            for n in OUTS:
                if srcs:
                    m.d.comb += getattr(self.pe[p], n).eq(any_of(
                        Mux(Cat(*[step_oh[si] for si in sis]).any(), getattr(self.lane[li], n), 0)
                        for li, sis in srcs.items()))
        for li in range(self.n_lanes):
            srcs = {p: sis for (lj, p), sis in self.lane_pe.items() if lj == li}
            if not srcs:
                continue
            lp = self.lane[li]
            sel = {p: replicas(Signal(), NSEL, f"lsel{li}_{p}") for p in srcs}
            for p, sis in srcs.items():
                m.d.sync += [c.eq(Cat(*[step_oh[si] for si in sis]).any()) for c in sel[p]]
            m.d.comb += lp.adc_valid.eq(any_of(sel[p][0] & self.pe[p].adc_valid for p in srcs))
            for k, (lo, hi) in enumerate(slices(len(lp.adc_codes), NSEL)):
                m.d.comb += lp.adc_codes[lo:hi].eq(any_of(Mux(sel[p][k], self.pe[p].adc_codes[lo:hi], 0)
                                                          for p in srcs))
        return m
