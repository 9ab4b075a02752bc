"""Array-bound cycles per image: the floor any controller schedule is measured against (issue 5).

Every read group is `input_bits` slots; a slot takes max(pulse + gap, conversions per ADC x
conversion time) cycles, where the ADCs of a PE are shared 4:1 by its 128 SLs (Yao 2020 macro
core: 32 ADCs) and the two sample-and-hold groups let slot k's conversions overlap slot k+1's
pulse. SL s goes to ADC s mod n_adc, so a read of r contiguous rows needs ceil(r / n_adc)
conversions per ADC. PEs work in parallel; layers run one after the other for one image, so the
bound is, summed over layers, the busiest PE's slot time over all output positions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import cnn
from .mapping import Mapping, build_mapping


@dataclass(frozen=True)
class Timing:
    pulse_cycles: int = 4      # 50 ns BL read pulse at an 80 MHz controller clock (Yao 2020: 0.2 V, 50 ns)
    gap_cycles: int = 0        # idle between pulses
    conv_cycles: int = 1       # one ADC conversion: 4 per pulse, as in the macro core (ED Fig. 5)
    n_adc: int = 32            # ADCs per PE (128 SLs, 4:1 MUX)
    input_bits: int = 8

    def slot_cycles(self, rows: int) -> int:
        return max(self.pulse_cycles + self.gap_cycles, math.ceil(rows / self.n_adc) * self.conv_cycles)


def positions(layers=cnn.YAO2020, input_shape=cnn.INPUT_SHAPE) -> dict[str, int]:
    """Output positions per weight layer (conv: Ho*Wo; dense: 1)."""
    out, shapes = {}, cnn.shapes(layers, input_shape)
    for L, (h, w, _) in zip(layers, shapes):
        if isinstance(L, cnn.Conv):
            out[L.name] = h * w
        elif isinstance(L, cnn.Dense):
            out[L.name] = 1
    return out


def bound_cycles_per_image(layers=cnn.YAO2020, mapping: Mapping | None = None, timing: Timing = Timing(),
                           input_shape=cnn.INPUT_SHAPE) -> dict:
    mapping = mapping or build_mapping(layers)
    pos = positions(layers, input_shape)
    per_layer, reads = {}, {}
    for name, groups in mapping.groups.items():
        per_pe: dict[int, int] = {}
        for g in groups:
            per_pe[g.pe] = per_pe.get(g.pe, 0) + timing.input_bits * timing.slot_cycles(2 * g.n_out)
        per_layer[name] = pos[name] * max(per_pe.values())
        reads[name] = pos[name] * len(groups) * timing.input_bits
    return {"cycles": sum(per_layer.values()), "per_layer": per_layer, "slot_reads": reads}
