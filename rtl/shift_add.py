"""Shift-and-add: per SL of a read group, S = sum over slots k of code_k << k, as wide as the ADCs.

Golden counterpart: golden.datapath.shift_add (S = sum_k code_k * 2^k), per SL of the group.
Accumulator i holds SL row_base + i (i < 2 * max_out). A conversion round's n_adc codes arrive at
once (adc_codes, ADC a at word a, with adc_valid) and are added in parallel: accumulator i takes
the code of ADC (row_base + i) % n_adc if its SL is in the round's MUX select. Pipelined: the codes
are registered and rotated to the accumulators in two steps (a: by the low 2 bits of
row_base % n_adc, as they arrive from the controller's routing; s: by the rest, one code per
accumulator), shifted by the slot (c), then added; the sum of the last slot is kept in `fin`.

  adc_valid, adc_codes                In   the PE's codes (one cycle after their adc_start)
  rv_slot, rv_sel, rv_rot, cv_row_base In  their context, from rtl/adc_sequencer.py
  fin                                 Out  2 * max_out x u(code_bits + input_bits): S of the last
                                           finished group (valid 4 cycles after its last codes)

The registers are in submodules, the rotation `rot` and the accumulator groups `grp{g}`, so the
board core can give each its own copy of the tick enable (rtl/replica.py enable_groups; timing:
one copy for the whole lane reached ~900 loads).
"""
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .replica import replicas, slices


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class ShiftAdd(wiring.Component):
    def __init__(self, n_rows=128, n_adc=32, input_bits=8, code_bits=8, max_out=12, acc_groups=4):
        if n_adc & (n_adc - 1):
            raise ValueError("n_adc must be a power of 2")
        self.n_rows, self.n_adc, self.input_bits, self.code_bits = n_rows, n_adc, input_bits, code_bits
        self.n_acc = 2 * max_out
        self.acc_groups = acc_groups
        self.sum_bits = code_bits + input_bits          # S: u16
        super().__init__({
            "adc_valid": In(1), "adc_codes": In(n_adc * code_bits),
            "rv_slot": In(range(input_bits)), "rv_sel": In(_bits(n_rows // n_adc)), "rv_rot": In(_bits(n_adc)),
            "cv_row_base": In(_bits(n_rows)),
            "fin": Out(data.ArrayLayout(unsigned(self.sum_bits), self.n_acc)),
        })

    def elaborate(self, platform):
        m = Module()
        B, A, MR = self.input_bits, self.n_adc, self.n_acc
        AB = _bits(A)

        def rotate(words, amount, lsb):     # words[k] <- words[(k + amount << lsb) % A], one Mux level per bit
            for b in range(len(amount)):
                n = 1 << (b + lsb)
                words = [Mux(amount[b], words[(k + n) % A], words[k]) for k in range(A)]
            return words
        LO = min(2, AB)
        a_codes = [Signal(self.code_bits, name=f"acode{a}") for a in range(A)]
        a_valid = Signal()
        a_slot = Signal.like(self.rv_slot)
        a_rot = Signal(AB - LO)
        port = [self.adc_codes.word_select(a, self.code_bits) for a in range(A)]
        m.submodules.rot = mrot = Module()
        mrot.d.sync += [c.eq(w) for c, w in zip(a_codes, rotate(port, self.rv_rot[:LO], 0))]
        m.d.sync += [a_valid.eq(self.adc_valid), a_slot.eq(self.rv_slot), a_rot.eq(self.rv_rot[LO:])]
        codes = rotate(a_codes, a_rot, LO)

        acc = [Signal(self.sum_bits, name=f"acc{i}") for i in range(MR)]
        fin = [Signal(self.sum_bits, name=f"fin{i}") for i in range(MR)]
        m.d.comb += [self.fin[i].eq(fin[i]) for i in range(MR)]
        c_q = [Signal(self.sum_bits, name=f"cq{i}") for i in range(MR)]
        c_en = [Signal(name=f"cen{i}") for i in range(MR)]
        NG = min(self.acc_groups, MR)
        # per group: its own copies of the slot being shifted in and of its first / last tests
        s_slot = replicas(Signal.like(self.rv_slot), NG, "s_slot")
        c_first, c_last = replicas(Signal(), NG, "c_first"), replicas(Signal(), NG, "c_last")
        for g, (lo, hi) in enumerate(slices(MR, NG)):
            m.submodules[f"grp{g}"] = mg = Module()
            mg.d.sync += [s_slot[g].eq(a_slot), c_first[g].eq(s_slot[g] == 0), c_last[g].eq(s_slot[g] == B - 1)]
            for i in range(lo, hi):
                row = Signal(range(self.n_rows + MR), name=f"rvrow{i}")
                mg.d.sync += row.eq(self.cv_row_base + i)
                a_mine = Signal(name=f"amine{i}")
                mg.d.sync += a_mine.eq((row[AB:] == self.rv_sel) if self.n_rows > A else 1)
                s_code = Signal(self.code_bits, name=f"scode{i}")
                s_en = Signal(name=f"sen{i}")
                mg.d.sync += [s_code.eq(codes[i % A]), s_en.eq(a_valid & a_mine)]
                mg.d.sync += [c_q[i].eq(s_code << s_slot[g]), c_en[i].eq(s_en)]
                new = Mux(c_first[g], 0, acc[i]) + c_q[i]
                with mg.If(c_en[i]):
                    mg.d.sync += acc[i].eq(new)
                    with mg.If(c_last[g]):
                        mg.d.sync += fin[i].eq(new)
        return m


def default_instances():
    return {"shift_add": ShiftAdd()}
