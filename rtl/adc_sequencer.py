"""MUX/ADC sequencer: S source lines shared by A ADCs through S/A:1 MUXes, ping-pong S&H.

Golden counterpart: the ADC codes themselves (golden.adc.ADC.convert) are made by the external
ADCs; this block only decides *which* held SL value each ADC converts and *when*, and tags every
code with (row, slot) for rtl/shift_add.py. Yao 2020, ED Fig. 5: two S&H groups per SL used
ping-pong, every S/A SLs share one ADC, the ADCs convert the held values of slot k during the
pulse of slot k+1.

Wiring (fixed, a design choice the paper leaves open): SL `row` goes to ADC `row % A`, MUX input
`row // A`. Interleaving keeps a small read group (C1: 16 rows, FC: 20, C3: 24) spread over
distinct ADCs, so it needs one conversion per ADC per slot.

Interfaces
  cmd        In  stream {first, count}   one per read (= one input vector, `slots` slots): the
                                         active SL rows first .. first+count-1 (count >= 1,
                                         first+count <= S). Popped with the read's last slot token.
  slot       In  stream {slot, last}     slot tokens of rtl/bitserial_encoder.py. A token is
                                         accepted only when an S&H group is free (and a command is
                                         present); its transfer reserves that group for the pulse.
  sample     In  1                       end-of-pulse strobe of the encoder: the reserved group
                                         samples (`sh_sample[g]` = sample, combinational).
  sh_sample  Out 2                       S&H group g tracks/samples the SLs in this cycle.
  adc_convert Out A, adc_sel Out A x log2(S/A), adc_grp Out A   (registered)
                                         ADC a: start a conversion of MUX input adc_sel[a] of S&H
                                         group adc_grp[a]; one-cycle strobe.
  adc_done   In  A, adc_code In A x code_bits
                                         ADC a: conversion finished, code valid in this cycle.
                                         The latency is the ADC's own: the sequencer waits for done.
  o          Out stream {code, slot, row} = ShiftAdd.in_layout, in the order: read by read, slot by
                                         slot (0 .. slots-1), rows ascending first .. first+count-1.

Scheduling: one conversion *step* at a time, all ADCs in lockstep. Step j of a sample converts
rows first + j*A .. first + (j+1)*A - 1 (clipped to the range): one row per ADC, so a sample
takes ceil(count/A) steps. A step starts when the sample's S&H group holds it and one of the two
result banks (A codes each) is free; its codes are captured into that bank at each ADC's done,
and when every active ADC has answered the bank is handed to the drain and, after the sample's
last step, the S&H group is released (in the edge of the last done: the held values stay put
for the whole conversion; a token may reserve the group from the next cycle). The drain emits
a bank's codes in row order while the next step converts into the other bank. The S&H groups
strictly alternate, so the conversions of slot k overlap the pulse of slot k+1.

Throughput per slot (cycles): max(width + gap, ceil(count/A) * (latency + 2), count). The last
term is the single-code output stream (one code per cycle, the rate rtl/shift_add.py accepts);
the +2 is the registered convert strobe and the done -> next step turnaround. Latency from the
sample strobe to the first code out: latency + 3 cycles.
"""
import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class GroupState(enum.Enum):
    FREE = 0
    RESERVED = 1   # token accepted, pulse in progress
    HELD = 2       # sampled; its values are being converted


class AdcSequencer(wiring.Component):
    def __init__(self, rows: int = 128, adcs: int = 32, code_bits: int = 8, slots: int = 8):
        if adcs < 2 or adcs & (adcs - 1) or rows % adcs:
            raise ValueError(f"need a power-of-two number (>= 2) of ADCs dividing the rows "
                             f"(got {rows} rows, {adcs} ADCs)")
        self.rows, self.adcs, self.code_bits, self.slots = rows, adcs, code_bits, slots
        self.mux = rows // adcs
        self.sel_bits = _bits(self.mux)
        self.cmd_layout = data.StructLayout({"first": _bits(rows), "count": rows.bit_length()})
        self.slot_layout = data.StructLayout({"slot": _bits(slots), "last": 1})
        # identical to rtl.shift_add.ShiftAdd(code_bits, slots, rows).in_layout
        self.out_layout = data.StructLayout({"code": code_bits, "slot": _bits(slots), "row": _bits(rows)})
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "slot": In(stream.Signature(self.slot_layout)),
            "sample": In(1),
            "sh_sample": Out(2),
            "adc_convert": Out(adcs),
            "adc_sel": Out(data.ArrayLayout(unsigned(self.sel_bits), adcs)),
            "adc_grp": Out(adcs),
            "adc_done": In(adcs),
            "adc_code": In(data.ArrayLayout(unsigned(code_bits), adcs)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        A, L, cb = self.adcs, self.adcs.bit_length() - 1, self.code_bits
        rw = self.rows.bit_length() + 1            # row arithmetic: start + A may pass the last row
        HELD, FREE = GroupState.HELD, GroupState.FREE

        def pick(sel, pair):
            return Mux(sel, pair[1], pair[0])

        # ---- S&H groups, strictly alternating: reserve at rgrp, convert at cgrp
        gstate = [Signal(GroupState, name=f"gstate{g}") for g in range(2)]
        gfirst = [Signal(_bits(self.rows), name=f"gfirst{g}") for g in range(2)]
        gend = [Signal(self.rows.bit_length(), name=f"gend{g}") for g in range(2)]
        gslot = [Signal(_bits(self.slots), name=f"gslot{g}") for g in range(2)]
        rgrp = Signal()        # group the next token reserves
        pgrp = ~rgrp           # group of the pulse in progress (the last one reserved)
        cgrp = Signal()        # group being converted

        rfree = pick(rgrp, [gstate[0] == FREE, gstate[1] == FREE])
        m.d.comb += self.slot.ready.eq(self.cmd.valid & rfree)
        go = self.slot.valid & self.slot.ready
        m.d.comb += self.cmd.ready.eq(go & self.slot.payload.last)
        with m.If(go):
            m.d.sync += rgrp.eq(~rgrp)
        for g in range(2):
            with m.If(go & (rgrp == g)):
                m.d.sync += [gstate[g].eq(GroupState.RESERVED), gfirst[g].eq(self.cmd.payload.first),
                             gend[g].eq(self.cmd.payload.first + self.cmd.payload.count),
                             gslot[g].eq(self.slot.payload.slot)]
            smp = self.sample & (pgrp == g) & (gstate[g] == GroupState.RESERVED)
            m.d.comb += self.sh_sample[g].eq(smp)
            with m.If(smp):
                m.d.sync += gstate[g].eq(HELD)

        # ---- result banks, handed from the conversion engine to the drain
        bank = [Signal(data.ArrayLayout(unsigned(cb), A), name=f"bank{b}") for b in range(2)]
        bvalid = [Signal(name=f"bvalid{b}") for b in range(2)]
        brow = [Signal(rw, name=f"brow{b}") for b in range(2)]
        bn = [Signal(range(A + 1), name=f"bn{b}") for b in range(2)]
        bslot = [Signal(_bits(self.slots), name=f"bslot{b}") for b in range(2)]

        # ---- conversion engine: one step (<= A rows, one per ADC) at a time
        cstep = Signal(range(max(2, self.mux)))
        inflight = Signal()
        cmask = Signal(A)      # ADCs converting in the step in flight
        got = Signal(A)        # ... of which have answered
        wb = Signal()          # bank the next / in-flight step writes
        first, end = pick(cgrp, gfirst), pick(cgrp, gend)
        start = Signal(rw)
        n = Signal(range(A + 1))
        m.d.comb += start.eq(first + (cstep << L))
        m.d.comb += n.eq(Mux(end - start >= A, A, end - start))
        f0 = first[:L]
        therm = ((Const(1, A + 1) << n) - 1)[:A]           # n ones
        mask = (Cat(therm, therm) << f0)[A:2 * A]          # ADCs (f0 + i) % A, i < n
        below = ((Const(1, A + 1) << f0) - 1)[:A]          # ADCs a < f0 read the next MUX input
        base = Signal(self.sel_bits + 1)
        m.d.comb += base.eq((first >> L) + cstep)
        issue = pick(cgrp, [gstate[0] == HELD, gstate[1] == HELD]) & ~inflight & ~pick(wb, bvalid)
        m.d.sync += self.adc_convert.eq(Mux(issue, mask, 0))
        with m.If(issue):
            m.d.sync += [inflight.eq(1), cmask.eq(mask), got.eq(0), self.adc_grp.eq(cgrp.replicate(A))]
            for a in range(A):
                m.d.sync += self.adc_sel[a].eq(base + below[a])
            for b in range(2):
                with m.If(wb == b):
                    m.d.sync += [brow[b].eq(start), bn[b].eq(n), bslot[b].eq(pick(cgrp, gslot))]
        dn = self.adc_done & cmask & inflight.replicate(A)
        for b in range(2):
            for a in range(A):
                with m.If(dn[a] & (wb == b)):
                    m.d.sync += bank[b][a].eq(self.adc_code[a])
        with m.If(inflight):
            m.d.sync += got.eq(got | dn)
            with m.If((got | dn) == cmask):                  # step complete
                m.d.sync += [inflight.eq(0), wb.eq(~wb)]
                for b in range(2):
                    with m.If(wb == b):
                        m.d.sync += bvalid[b].eq(1)
                with m.If(end <= start + A):                 # last step of the sample
                    m.d.sync += [cstep.eq(0), cgrp.eq(~cgrp)]
                    for g in range(2):
                        with m.If(cgrp == g):
                            m.d.sync += gstate[g].eq(FREE)
                with m.Else():
                    m.d.sync += cstep.eq(cstep + 1)

        # ---- drain: a bank's codes in row order
        rb = Signal()
        d = Signal(range(A))
        row = Signal(rw)
        m.d.comb += [
            row.eq(pick(rb, brow) + d),
            self.o.valid.eq(pick(rb, bvalid)),
            self.o.payload.row.eq(row),
            self.o.payload.slot.eq(pick(rb, bslot)),
            self.o.payload.code.eq(pick(rb, [bank[0].as_value(), bank[1].as_value()]).word_select(row[:L], cb)),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += d.eq(d + 1)
            with m.If(d == pick(rb, bn) - 1):
                m.d.sync += [d.eq(0), rb.eq(~rb)]
                for b in range(2):
                    with m.If(rb == b):
                        m.d.sync += bvalid[b].eq(0)
        return m


def default_instances():
    return {"adc_sequencer": AdcSequencer()}
