"""The digital read path after the ADC: shift-and-add -> differential -> group accumulator.

Golden counterpart: golden.datapath.layer_accumulate from the ADC codes on (shift_add,
differential, the sum over read groups). Composite of rtl/shift_add.py, rtl/differential.py and
rtl/group_accumulator.py joined with wiring.connect; rtl/adc_sequencer.py's output stream plugs
into `i`.

  i    In  stream {code, slot, row}           = ShiftAdd.in_layout (codes of one read group,
                                              slot by slot, rows ascending within a slot)
  cmd  In  stream {base, count, first, last}  = GroupAccumulator.cmd_layout, one per read group
  o    Out stream {acc, out}                  A per output after a layer's last group

Throughput: one code per cycle. Latency: the A of an output leaves 3 cycles after the code of its
G- row in the last slot of the last group is accepted (one register per stage).
"""
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .differential import Differential
from .group_accumulator import GroupAccumulator
from .shift_add import ShiftAdd


class ReadPipeline(wiring.Component):
    def __init__(self, code_bits: int = 8, slots: int = 8, rows: int = 128, groups: int = 12):
        self.code_bits, self.slots, self.rows, self.groups = code_bits, slots, rows, groups
        self._sa = sa = ShiftAdd(code_bits, slots, rows)
        self._diff = diff = Differential(sa.sum_bits, rows)
        self._ga = ga = GroupAccumulator(diff.d_bits, groups, rows // 2)
        self.in_layout, self.cmd_layout, self.out_layout = sa.in_layout, ga.cmd_layout, ga.out_layout
        self.acc_bits = ga.acc_bits
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "cmd": In(stream.Signature(self.cmd_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        sa, diff, ga = self._sa, self._diff, self._ga
        m.submodules.shift_add, m.submodules.differential, m.submodules.group_acc = sa, diff, ga
        wiring.connect(m, wiring.flipped(self.i), sa.i)
        wiring.connect(m, sa.o, diff.i)
        wiring.connect(m, diff.o, ga.i)
        wiring.connect(m, wiring.flipped(self.cmd), ga.cmd)
        wiring.connect(m, ga.o, wiring.flipped(self.o))
        return m


def default_instances():
    return {"read_pipeline": ReadPipeline()}
