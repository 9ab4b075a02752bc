"""Register replicas: copies of a flip-flop, one per group of far-apart loads (timing).

One register driving loads spread over the die is one long, high-fan-out net; a copy per group of
loads lets the placer put each copy next to its loads. Synthesis tools merge flip-flops with the
same input, so the copies carry the `keep` attribute: Vivado honours it on the register, and the
yosys scripts of sw/synth.py turn it into a keep on the flip-flop cell (`KEEP_REPLICAS`; yosys
merges equal flip-flops even when their wires carry `keep`). Every copy must be assigned exactly
as the original would be, so they all hold the same value in every cycle.

`EnableCopies` is `EnableInserter` with a copy of the enable per named submodule: the board core's
controller is enabled by the PHY's `tick`, a net of ~4,600 loads across the die otherwise.
"""
from __future__ import annotations

from amaranth.hdl import EnableInserter, Signal


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
