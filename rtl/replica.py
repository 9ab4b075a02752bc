"""Register replicas: copies of a flip-flop, one per group of far-apart loads (timing).

One register driving loads spread over the die is one long, high-fan-out net; a copy per group of
loads lets the placer put each copy next to its loads. Synthesis tools merge flip-flops with the
same input, so the copies carry the `keep` attribute: Vivado honours it on the register, and the
yosys scripts of sw/synth.py turn it into a keep on the flip-flop cell (`KEEP_REPLICAS`; yosys
merges equal flip-flops even when their wires carry `keep`). Every copy must be assigned exactly
as the original would be, so they all hold the same value in every cycle.

The stall: the board core's controller runs under a clock enable, the PHY's `tick` (a net of
~4,600 loads across the die as one signal). This module owns how that enable is fanned out, for
any design and from its netlist, so no block names another block's submodules for timing:
`enable_groups(design)` walks the elaborated design and lists the submodules that hold a large
group of registers (the rule is in its docstring); the enable's driver makes one `replicas` copy
per group (rtl/pe_fmc.py `tick_copies`); `EnableCopies(enable, dict(zip(groups, copies)))` is
`EnableInserter({"sync": enable})` with each group on its own copy.

Why a fan-out and not a gated clock (a global clock buffer with enable: BUFGCE on the XC7Z045,
DCCA on the ECP5 proxy): a gated clock is a second clock domain. Every PE port word, stream and
CSR between the PHY / link (free-running `sync`) and the controller then crosses clocks: the
Amaranth and Verilator co-simulations evaluate the gated edge as a separate event (a race of the
enable's latch against the `sync` edge, different in the two simulators), the timing tools add
the buffer's insertion delay as skew on each of those paths, and the portable board core would
need a vendor primitive per target. The copies keep one clock domain: the design is cycle-for-cycle
the one EnableInserter makes (every copy equals the enable in every cycle), and simulates as it.
"""
from __future__ import annotations

from amaranth.hdl import EnableInserter, Fragment, Signal
from amaranth.hdl._ast import SignalSet


def replicas(like: Signal, n: int, name: str) -> list[Signal]:
    """`n` copies of a register of `like`'s shape and init, named `{name}_dup{k}`."""
    return [Signal(like.shape(), name=f"{name}_dup{k}", init=like.init, reset_less=like.reset_less,
                   attrs={"keep": 1}) for k in range(n)]


def slices(width: int, n: int) -> list[tuple[int, int]]:
    """`width` bits in `n` near-equal (lo, hi) slices, one per copy of the register that enables them."""
    return [(width * k // n, width * (k + 1) // n) for k in range(n)]


class EnableCopies(EnableInserter):
    """EnableInserter({"sync": enable}) in which the submodules named in `subs` (path -> signal)
    take their own enable signal instead (for them and everything below them); the design's own
    statements and its other submodules take `enable`. A path is a direct submodule's name or a
    dotted path below one ("lane0.grp1"): a deeper path takes precedence over its parent's copy
    there. The copies must equal `enable` in every cycle (e.g. `replicas` of it) for the result to
    behave as EnableInserter(enable).
    (Amaranth 0.5: overrides FragmentTransformer.map_subfragments.)"""

    def __init__(self, enable, subs: dict, _at: str = ""):
        super().__init__({"sync": enable})
        self.subs, self._at = dict(subs), _at

    def map_subfragments(self, fragment, new_fragment):
        seen = set()
        for sub, name, src_loc in fragment.subfragments:
            en = self.subs.get(name, self.controls["sync"])
            seen.add(name)
            below = {p[len(name) + 1:]: s for p, s in self.subs.items() if name and p.startswith(name + ".")}
            tr = EnableCopies(en, below, f"{self._at}{name}.") if below else EnableInserter({"sync": en})
            new_fragment.add_subfragment(tr(sub), name, src_loc=src_loc)
        missing = sorted(self._at + p for p in {p.split(".")[0] for p in self.subs} - seen)
        if missing:
            have = sorted(self._at + n for n in seen if n)
            raise ValueError(f"EnableCopies: no submodule named {missing}; the design has {have}")


# a register group takes its own copy of the enable from this many flip-flops (enable_groups)
ENABLE_GROUP_FLOPS = 64


def own_flops(fragment, domain: str = "sync") -> int:
    """Flip-flops of `fragment`'s own statements in `domain`: the bits of the signals they assign
    (its subfragments' not counted; memories, whose ports take the enable once each, count 0).
    (Amaranth 0.5 internals: Fragment.statements, Statement._lhs_signals.)"""
    sigs = SignalSet()
    for stmt in fragment.statements.get(domain, ()):
        sigs |= stmt._lhs_signals()
    return sum(len(s) for s in sigs)


def enable_groups(design, min_flops: int = ENABLE_GROUP_FLOPS, domain: str = "sync", platform=None) -> list[str]:
    """The dotted submodule paths of `design` (an Elaboratable, elaborated here, or a Fragment) that
    take their own copy of a clock enable of `domain` under `EnableCopies`, parents before children.

    Rule, bottom-up over the subfragment tree: a submodule's load is its own flip-flops
    (`own_flops`) plus the loads of its submodules that take no copy of their own (and every
    flip-flop of an unnamed submodule, which EnableCopies cannot address); a submodule with a load
    of at least `min_flops` takes a copy (then its parent does not count it), the others follow
    their parent's enable. The design's own statements take the original enable. A copy costs one
    flip-flop: 64 keeps groups worth it (on the round-5 controller the smallest group, the
    write-verify sequencer, has 75 and every submodule with registers has at least that, so the
    rule gives the 28 groups the hand-kept list named); there is no cap, the count is bounded by
    the design's flip-flops / min_flops."""
    out: list[str] = []

    def load(frag, at):
        n = own_flops(frag, domain)
        for sub, name, _ in frag.subfragments:
            if name is None:
                n += total(sub)
                continue
            mark = len(out)
            sub_load = load(sub, f"{at}{name}.")
            if sub_load >= min_flops:
                out.insert(mark, f"{at}{name}")
            else:
                n += sub_load
        return n

    def total(frag):
        return own_flops(frag, domain) + sum(total(sub) for sub, _, _ in frag.subfragments)

    load(Fragment.get(design, platform), "")
    return out
