"""MUX/ADC sequencer: the conversion side of a read lane (rtl/read_lane.py).

Golden counterpart: the codes themselves are golden.adc.ADC.convert of the SL currents (made by
the PE's ADCs); this unit decides which held SLs are converted when, and tags the codes that come
back with their slot and MUX select. Yao 2020, ED Fig. 5: two S&H banks per SL used ping-pong,
SLs sharing an ADC through a MUX, the ADCs convert slot k's held values while slot k+1 pulses.

Wiring: SL s -> ADC s % n_adc, MUX select s // n_adc. One conversion round per cycle: a round
converts the SLs {n_adc * sel + a} on all ADCs at once; a slot of a group on SLs row_base ..
row_base + 2 * n_out - 1 takes the rounds sel = row_base // n_adc .. (row_base + 2 n_out - 1) // n_adc,
at most pulse_cycles of them, so they end before the next slot's sample.

  sample, slot, row_base, n_out   In   from rtl/bitserial_encoder.py: the S&H sample strobe of
                                       slot `slot` of the group (row_base, n_out)
  adc_start, adc_bank, adc_sel    Out  PE port: convert S&H bank adc_bank through MUX input adc_sel
  rv_slot, rv_sel, rv_rot         Out  context of the codes that arrive in this cycle (one cycle
                                       after their adc_start): slot, MUX select, rotation
                                       row_base % n_adc of the group
  cv_row_base                     Out  row base of the slot being converted
  conv_rounds                     Out 32  counter: conversion rounds (x n_adc: golden.activity
                                       adc_conversions, mux_switches)
"""
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class AdcSequencer(wiring.Component):
    def __init__(self, n_rows=128, n_adc=32, input_bits=8, max_out=12):
        if n_adc & (n_adc - 1):
            raise ValueError("n_adc must be a power of 2")
        self.n_rows, self.n_adc, self.input_bits = n_rows, n_adc, input_bits
        self.sel_bits = _bits(n_rows // n_adc)
        super().__init__({
            "sample": In(1), "slot": In(range(input_bits)),
            "row_base": In(_bits(n_rows)), "n_out": In(_bits(max_out + 1)),
            "adc_start": Out(1), "adc_bank": Out(1), "adc_sel": Out(self.sel_bits),
            "rv_slot": Out(range(input_bits)), "rv_sel": Out(self.sel_bits), "rv_rot": Out(_bits(n_adc)),
            "cv_row_base": Out(_bits(n_rows)),
            "conv_rounds": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        A, sel_bits = self.n_adc, self.sel_bits
        # conversion rounds of the pulsed group: registers computed from the group (valid from the
        # 2nd cycle of a group; the first S&H sample is at its cycle P - 1 >= 1)
        cv_sel_first_n = Signal(sel_bits)
        cv_sel_last_n = Signal(sel_bits)
        # (A is a power of 2: // A as a shift; an Amaranth // is a divider cell)
        AB = _bits(A)
        m.d.sync += [cv_sel_first_n.eq(self.row_base >> AB),
                     cv_sel_last_n.eq((self.row_base + 2 * self.n_out - 1) >> AB)]

        # Context of the slot being converted, latched when its S&H sample is taken.
        cv_active = Signal()
        cv_slot = Signal(range(self.input_bits))
        cv_bank = Signal()
        cv_sel = Signal(sel_bits)
        cv_sel_last = Signal(sel_bits)
        cv_row_base = self.cv_row_base
        with m.If(self.sample):
            m.d.sync += [cv_active.eq(1), cv_slot.eq(self.slot), cv_bank.eq(self.slot[0]),
                         cv_sel.eq(cv_sel_first_n), cv_sel_last.eq(cv_sel_last_n),
                         cv_row_base.eq(self.row_base)]
        with m.Elif(cv_active):
            with m.If(cv_sel == cv_sel_last):
                m.d.sync += cv_active.eq(0)
            with m.Else():
                m.d.sync += cv_sel.eq(cv_sel + 1)
        m.d.comb += [self.adc_start.eq(cv_active), self.adc_bank.eq(cv_bank), self.adc_sel.eq(cv_sel)]
        with m.If(cv_active):
            m.d.sync += self.conv_rounds.eq(self.conv_rounds + 1)

        # codes return one cycle later: their context, registered
        m.d.sync += [self.rv_slot.eq(cv_slot), self.rv_sel.eq(cv_sel),
                     self.rv_rot.eq(cv_row_base[:AB] if self.n_rows > 1 else 0)]
        return m


def default_instances():
    return {"adc_sequencer": AdcSequencer()}
