"""Register replicas: copies of a flip-flop, one per group of far-apart loads (timing).

One register driving loads spread over the die is one long, high-fan-out net; a copy per group of
loads lets the placer put each copy next to its loads. Synthesis tools merge flip-flops with the
same input, so the copies carry the `keep` attribute: Vivado honours it on the register, and the
yosys scripts of sw/synth.py turn it into a keep on the flip-flop cell (`KEEP_REPLICAS`; yosys
merges equal flip-flops even when their wires carry `keep`). Every copy must be assigned exactly
as the original would be, so they all hold the same value in every cycle.
"""
from __future__ import annotations

from amaranth.hdl import Signal


def replicas(like: Signal, n: int, name: str) -> list[Signal]:
    """`n` copies of a register of `like`'s shape and init, named `{name}_dup{k}`."""
    return [Signal(like.shape(), name=f"{name}_dup{k}", init=like.init, reset_less=like.reset_less,
                   attrs={"keep": 1}) for k in range(n)]
