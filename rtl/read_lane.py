"""Read lane: runs read groups on one PE, back to back, and returns differential sums.

A read group (golden.datapath.read_group_sums) is: up to 16 u8 inputs on the BLs, `input_bits`
slots LSB first, all 2*n_out SLs of the group sampled per slot and digitised, the codes shifted and
added per SL, then D[o] = S[2o] - S[2o+1].

Timing (golden.perf.Timing): a slot's pulse lasts `pulse_cycles`; at its last cycle the PE's
sample-and-hold bank (slot parity) captures the SL currents. The conversions of slot k run while
slot k+1 pulses (ping-pong S&H): one conversion round per cycle, a round converting SLs
{32*sel + a} on the 32 ADCs at once (SL s -> ADC s % 32, MUX select s // 32); codes come back one
cycle later and are shifted and added in parallel (pipelined: registered, rotated to the
accumulators in two steps, shifted, added). So the ADCs and the BLs never wait for each other: a
group takes exactly input_bits * pulse_cycles cycles, back to back, as long as a group needs at
most pulse_cycles conversion rounds. Its differential sums leave pulse_cycles + 5 cycles after its
last pulse cycle.

Units, one file each: rtl/bitserial_encoder.py (the pulse side: BL pulses, S&H sample),
rtl/adc_sequencer.py (conversion rounds: MUX select, ADC start, the codes' context),
rtl/shift_add.py (S per SL, pipelined), rtl/differential.py (D, released at the fixed latency).

The lane drives one PE port (rtl/pe_board.py); the controller routes it to the PE of the current
layer.
"""
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .adc_sequencer import AdcSequencer
from .bitserial_encoder import BitserialEncoder
from .differential import Differential
from .pe_board import PEBoardSignature
from .shift_add import ShiftAdd


class ReadLane(wiring.Component):
    """bitserial_encoder -> (PE: BLs, S&H) ; adc_sequencer -> (PE: MUX, ADCs) -> shift_add -> differential"""

    def __init__(self, n_bl=16, n_rows=128, n_adc=32, input_bits=8, code_bits=8, max_out=12,
                 pulse_cycles=4, tag_bits=8, acc_groups=4):
        if n_adc & (n_adc - 1):
            raise ValueError("n_adc must be a power of 2")
        if pulse_cycles < (n_rows + n_adc - 1) // n_adc:
            raise ValueError(f"pulse_cycles {pulse_cycles} < conversion rounds {n_rows // n_adc}: "
                             f"the ADCs could not finish a slot during the next pulse")
        self.n_bl, self.n_rows, self.n_adc = n_bl, n_rows, n_adc
        self.input_bits, self.code_bits, self.max_out = input_bits, code_bits, max_out
        self.pulse_cycles, self.tag_bits = pulse_cycles, tag_bits
        self.acc_groups = acc_groups    # accumulator submodules of shift_add (a tick copy each)
        self._enc = BitserialEncoder(n_bl, n_rows, input_bits, max_out, pulse_cycles, tag_bits)
        self._seq = AdcSequencer(n_rows, n_adc, input_bits, max_out)
        self._sa = ShiftAdd(n_rows, n_adc, input_bits, code_bits, max_out, acc_groups)
        self._diff = Differential(self._sa.sum_bits, max_out, pulse_cycles, tag_bits)
        self.sum_bits, self.d_bits = self._sa.sum_bits, self._diff.d_bits     # S: u16, D: s17
        self.cmd_layout, self.res_layout = self._enc.cmd_layout, self._diff.res_layout
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "res": Out(stream.Signature(self.res_layout)),  # ready ignored: the consumer always accepts
            "pe": Out(PEBoardSignature(n_bl, n_adc, code_bits)),
            "busy": Out(1),
            "slot_reads": Out(32),       # counters: slots pulsed, conversion rounds
            "conv_rounds": Out(32),
            "bl_pulses": Out(32),        # activity counters of the units (golden/activity.py)
            "sl_selections": Out(32),
            "diff_subs": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bitserial_encoder = enc = self._enc
        m.submodules.adc_sequencer = seq = self._seq
        m.submodules.shift_add = sa = self._sa
        m.submodules.differential = diff = self._diff
        pe = self.pe
        wiring.connect(m, wiring.flipped(self.cmd), enc.cmd)
        m.d.comb += [pe.bl.eq(enc.bl), pe.pulse.eq(enc.pulse), pe.sh_sample.eq(enc.sh_sample),
                     pe.sh_bank.eq(enc.sh_bank), self.busy.eq(enc.busy), self.slot_reads.eq(enc.slot_reads),
                     self.bl_pulses.eq(enc.bl_pulses), self.sl_selections.eq(enc.sl_selections)]
        m.d.comb += [seq.sample.eq(enc.sample), seq.slot.eq(enc.slot), seq.row_base.eq(enc.row_base),
                     seq.n_out.eq(enc.n_out)]
        m.d.comb += [pe.adc_start.eq(seq.adc_start), pe.adc_bank.eq(seq.adc_bank), pe.adc_sel.eq(seq.adc_sel),
                     self.conv_rounds.eq(seq.conv_rounds)]
        m.d.comb += [sa.adc_valid.eq(pe.adc_valid), sa.adc_codes.eq(pe.adc_codes), sa.rv_slot.eq(seq.rv_slot),
                     sa.rv_sel.eq(seq.rv_sel), sa.rv_rot.eq(seq.rv_rot), sa.cv_row_base.eq(seq.cv_row_base)]
        m.d.comb += [diff.group_end.eq(enc.group_end), diff.tag.eq(enc.tag), diff.n_out.eq(enc.n_out),
                     diff.s.eq(sa.fin), self.diff_subs.eq(diff.diff_subs)]
        wiring.connect(m, diff.res, wiring.flipped(self.res))
        return m
