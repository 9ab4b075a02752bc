"""The ZC706 board's tick, measured on the RTL: system cycles per controller cycle (PHY tick).

On the board (rtl/zc706_top.py) the controller runs one cycle per tick of the FMC PHY
(rtl/pe_fmc.py), which moves that cycle's PE traffic over the narrow bus: a tick's length depends
on how many PEs start a conversion (their codes are read back). This runs the PHY as BoardCore
configures it (its PE signature, aux programming port, ready_guard), behind FMC pins registered
both ways as BoardCore registers them, with a PE board that answers at once (ready again the
cycle after it drops at `apply`, each read answered on the next cycle): the lower bound of the
board's tick. Measured with Amaranth's simulator, steady state (the last of a few ticks).
"""
from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator


class _PinnedPhy(Elaboratable):
    """The PHY behind BoardCore's pin registers (rtl/zc706_top.py register_fmc_pins)."""

    def __init__(self, phy):
        self.phy = phy
        f = phy.fmc
        self.pins = {n: Signal.like(getattr(f, n), name=f"pin_{n}") for n in
                     ("addr", "wdata", "we", "apply", "re", "rdata", "rvalid", "ready")}

    def elaborate(self, platform):
        from rtl.zc706_top import register_fmc_pins
        m = Module()
        m.submodules.phy = self.phy
        register_fmc_pins(m, self.phy.fmc, SimpleNamespace(**{f"fmc_{n}": v for n, v in self.pins.items()}))
        return m


def board_phy(ctrl):
    """The PHY as rtl/zc706_top.py BoardCore builds it for the controller `ctrl` (no tick copies)."""
    from rtl.pe_fmc import PeFmcPhy
    from rtl.zc706_top import READY_GUARD, ProgChannel
    chan = ProgChannel(ctrl.wv.req_layout, ctrl.pp.rd_layout, ctrl.code_bits)
    chan._MustUse__silence = True      # built for its port signature only
    pe_sig = ctrl.signature.members["pe"].signature
    return PeFmcPhy(pe_sig, n_pe=ctrl.n_pe, ready_guard=READY_GUARD, aux_sig=chan.port_sig,
                    aux_request=("req_valid", "vrd_valid"))


def measure_tick_cycles(ctrl, n_requested: int, ticks: int = 4) -> int:
    """System cycles between two ticks when `n_requested` PEs start a conversion in each."""
    phy = board_phy(ctrl)
    top = _PinnedPhy(phy)
    p = top.pins
    sim = Simulator(top)
    sim.add_clock(1e-8)
    seen: list[int] = []

    async def bench(ctx):
        for k in range(n_requested):
            ctx.set(phy.pe[k].adc_start, 1)
        ctx.set(p["ready"], 1)
        cyc, answer = 0, False
        while len(seen) < ticks and cyc < 10_000:
            # the board: ready drops the cycle after it sees apply; a read seen is answered next cycle
            ctx.set(p["ready"], 0 if ctx.get(p["apply"]) else 1)
            ctx.set(p["rvalid"], answer)
            answer = bool(ctx.get(p["re"]))
            if ctx.get(phy.tick):
                seen.append(cyc)
            await ctx.tick()
            cyc += 1

    sim.add_testbench(bench)
    sim.run()
    if len(seen) < ticks:
        raise RuntimeError(f"the PHY made {len(seen)} ticks in 10,000 cycles")
    return seen[-1] - seen[-2]


def tick_table(ctrl, max_requested: int) -> list[int]:
    """[system cycles per tick with k PEs converting, k = 0..max_requested]."""
    return [measure_tick_cycles(ctrl, k) for k in range(max_requested + 1)]


def board_clock_hz() -> int:
    from rtl.zc706_top import SYS_CLK_HZ
    return SYS_CLK_HZ
