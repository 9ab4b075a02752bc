"""rtl/pe_fmc.py: the ticked PE-board PHY moves every PE port bit over the narrow FMC bus.

A Python PE-board model sits behind the bus (writes, apply, ready after a random delay, reads
answered in order after a fixed latency); a Python "controller" drives random PE outputs and
changes them only on ticks. Checked: the board sees exactly the controller's outputs at each
apply, and after each tick the controller sees exactly the words the board returned for the PEs
it requested (zeros for the others)."""
import random

import pytest
from amaranth.hdl import Cat, Elaboratable, Signal
from amaranth.sim import Simulator

from rtl.pe_fmc import PeFmcPhy


def _word(p, b, k, width):
    return random.Random(hash((p, b, k))).getrandbits(width)


@pytest.mark.parametrize("latency,seed,aux", [(1, 0, False), (3, 1, False), (2, 2, True)])
def test_phy_round_trip(latency, seed, aux):
    """aux=True: the board top's PHY, with the programming / verify-read channel as a ninth port
    (rtl/zc706_top.py ProgPortSignature) of its own beat counts, read back only when it carries a
    request (req_valid or vrd_valid), and two copies of `tick` (equal to it in every cycle)."""
    rng = random.Random(seed)
    if aux:
        from rtl.zc706_top import ProgPortSignature
        aux_sig = ProgPortSignature(21, 14)
        phy = PeFmcPhy(aux_sig=aux_sig, aux_request=("req_valid", "vrd_valid"), tick_copies=2)
    else:
        phy = PeFmcPhy()
    DW, UW = phy.dn_width, phy.up_width
    ports = [(phy.pe[p], phy.pe_sig, ("adc_start",)) for p in range(phy.n_pe)]
    if aux:
        ports.append((phy.aux, aux_sig, ("req_valid", "vrd_valid")))
    N = len(ports)
    DBs = [d for d, _ in phy.port_beats]
    UBs = [u for _, u in phy.port_beats]

    def names(sig, flow):
        return [n for n, m in sig.members.items() if m.flow.name == flow]
    # the controller-side values as one integer per port (Cat of the members, signature order)
    down_cat = [Cat(*[getattr(port, n) for n in names(sig, "Out")]) for port, sig, _ in ports]
    up_cat = [Cat(*[getattr(port, n) for n in names(sig, "In")]) for port, sig, _ in ports]
    probe_dn = [Signal(len(c), name=f"pdn{p}") for p, c in enumerate(down_cat)]
    probe_up = [Signal(len(c), name=f"pup{p}") for p, c in enumerate(up_cat)]
    req_bits = []
    for port, sig, request in ports:
        outs = names(sig, "Out")
        req_bits.append([sum(len(getattr(port, n)) for n in outs[:outs.index(r)]) for r in request])

    def draw(p):
        v = rng.getrandbits(len(probe_dn[p]))
        if rng.random() >= 0.4:
            for b in req_bits[p]:
                v &= ~(1 << b)
        return v

    def requested(p, v):
        return any((v >> b) & 1 for b in req_bits[p])
    n_ticks = 48           # (random request sets: none, one, several PEs, the aux port last)

    sim = Simulator(_Wrap(phy, down_cat, up_cat, probe_dn, probe_up))
    sim.add_clock(1e-8)

    async def bench(ctx):
        k = 0                     # applies seen
        regs = {}
        pending = []              # [due cycle, data]
        ready_at = None
        cyc = 0
        cur = [draw(p) for p in range(N)]
        expect_up = [0] * N
        ticks = 0
        while ticks < n_ticks:
            for p in range(N):
                ctx.set(probe_dn[p], cur[p])
            due = [d for d in pending if d[0] == cyc]
            ctx.set(phy.fmc.rvalid, bool(due))
            ctx.set(phy.fmc.rdata, due[0][1] if due else rng.getrandbits(UW))
            ctx.set(phy.fmc.ready, ready_at is not None and cyc >= ready_at)
            we, addr, wdata = ctx.get(phy.fmc.we), ctx.get(phy.fmc.addr), ctx.get(phy.fmc.wdata)
            apply, re, tick = ctx.get(phy.fmc.apply), ctx.get(phy.fmc.re), ctx.get(phy.tick)
            if phy.tick_copies:
                assert ctx.get(phy.tick_dup) == (tick << phy.tick_copies) - tick, "tick copies differ from tick"
            await ctx.tick()
            cyc += 1
            pending = [d for d in pending if d[0] >= cyc]
            pb = phy.beat_bits
            if we:
                regs[(addr >> pb, addr & ((1 << pb) - 1))] = wdata
            if apply:
                k += 1
                for p in range(N):
                    word = sum(regs[(p, b)] << (b * DW) for b in range(DBs[p])) & ((1 << len(probe_dn[p])) - 1)
                    assert word == cur[p], f"apply {k}: port {p} down word"
                ready_at = cyc + rng.randrange(0, 4)
                reqs = [p for p in range(N) if requested(p, cur[p])]
                expect_up = [0] * N
                for p in reqs:
                    full = sum(_word(p, b, k, UW) << (b * UW) for b in range(UBs[p]))
                    expect_up[p] = full & ((1 << len(probe_up[p])) - 1)
            if re:
                p, b = addr >> pb, addr & ((1 << pb) - 1)
                assert p in reqs and b < UBs[p], f"apply {k}: read of port {p} beat {b} (requested {reqs})"
                pending.append([cyc - 1 + latency, _word(p, b, k, UW)])
            if tick:
                ticks += 1
                ready_at = None
                for p in range(N):
                    assert ctx.get(probe_up[p]) == expect_up[p], f"tick {ticks}: port {p} up word"
                cur = [draw(p) for p in range(N)]
            assert cyc < 300 * n_ticks, "PHY stalled"
        assert ctx.get(phy.ticks) == n_ticks

    sim.add_testbench(bench)
    sim.run()


class _Wrap(Elaboratable):
    """Connects probe signals to the PHY's PE ports (the controller side)."""

    def __init__(self, phy, down_cat, up_cat, probe_dn, probe_up):
        self.phy, self.down_cat, self.up_cat, self.probe_dn, self.probe_up = phy, down_cat, up_cat, probe_dn, probe_up

    def elaborate(self, platform):
        from amaranth.hdl import Module
        m = Module()
        m.submodules.phy = self.phy
        for p in range(len(self.probe_dn)):
            m.d.comb += [self.down_cat[p].eq(self.probe_dn[p]), self.probe_up[p].eq(self.up_cat[p])]
        return m
