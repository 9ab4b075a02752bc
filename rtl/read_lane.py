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

The lane drives one PE port (rtl/pe_board.py); the controller routes it to the PE of the current
layer.
"""
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .adc_sequencer import AdcSequencer
from .bitserial_encoder import BitserialEncoder
from .pe_board import PEBoardSignature
from .replica import replicas, slices


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class ReadLane(wiring.Component):
    def __init__(self, n_bl=16, n_rows=128, n_adc=32, input_bits=8, code_bits=8, max_out=12,
                 pulse_cycles=4, tag_bits=8, acc_groups=4):
        if n_adc & (n_adc - 1):
            raise ValueError("n_adc must be a power of 2")
        if pulse_cycles < 2:
            raise ValueError("pulse_cycles must be >= 2 (the conversion context is registered)")
        if pulse_cycles < (n_rows + n_adc - 1) // n_adc:
            raise ValueError(f"pulse_cycles {pulse_cycles} < conversion rounds {n_rows // n_adc}: "
                             f"the ADCs could not finish a slot during the next pulse")
        self.n_bl, self.n_rows, self.n_adc = n_bl, n_rows, n_adc
        self.input_bits, self.code_bits, self.max_out = input_bits, code_bits, max_out
        self.pulse_cycles, self.tag_bits = pulse_cycles, tag_bits
        self.acc_groups = acc_groups    # accumulator submodules grp0.. (a tick copy each, see elaborate)
        self.sum_bits = code_bits + input_bits          # S: u16
        self.d_bits = self.sum_bits + 1                 # D: s17
        self._enc = BitserialEncoder(n_bl, n_rows, input_bits, max_out, pulse_cycles, tag_bits)
        self._seq = AdcSequencer(n_rows, n_adc, input_bits, max_out)
        self.cmd_layout = self._enc.cmd_layout
        self.res_layout = data.StructLayout({
            "d": data.ArrayLayout(signed(self.d_bits), max_out),
            "tag": tag_bits,
        })
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "res": Out(stream.Signature(self.res_layout)),  # ready ignored: the consumer always accepts
            "pe": Out(PEBoardSignature(n_bl, n_adc, code_bits)),
            "busy": Out(1),
            "slot_reads": Out(32),       # counters: slots pulsed, conversion rounds
            "conv_rounds": Out(32),
        })

    @staticmethod
    def enable_groups_for(max_out: int, acc_groups: int = 4) -> list[str]:
        """The submodules that hold the conversion side's registers (see elaborate): under a clock
        enable, each can take its own copy of it (rtl/replica.py EnableCopies)."""
        return ["rot"] + [f"grp{g}" for g in range(min(acc_groups, 2 * max_out))]

    def elaborate(self, platform):
        m = Module()
        B, P, A, MO = self.input_bits, self.pulse_cycles, self.n_adc, self.max_out
        MR = 2 * MO

        # ---------------------------------------------------------------- pulse side
        m.submodules.bitserial_encoder = enc = self._enc
        wiring.connect(m, wiring.flipped(self.cmd), enc.cmd)
        m.d.comb += [self.pe.bl.eq(enc.bl), self.pe.pulse.eq(enc.pulse), self.pe.sh_sample.eq(enc.sh_sample),
                     self.pe.sh_bank.eq(enc.sh_bank), self.busy.eq(enc.busy), self.slot_reads.eq(enc.slot_reads)]
        # ---------------------------------------------------------------- conversion side
        m.submodules.adc_sequencer = seq = self._seq
        m.d.comb += [seq.sample.eq(enc.sample), seq.slot.eq(enc.slot), seq.row_base.eq(enc.row_base),
                     seq.n_out.eq(enc.n_out)]
        m.d.comb += [self.pe.adc_start.eq(seq.adc_start), self.pe.adc_bank.eq(seq.adc_bank),
                     self.pe.adc_sel.eq(seq.adc_sel), self.conv_rounds.eq(seq.conv_rounds)]
        rv_slot, rv_sel, rv_rot, cv_row_base = seq.rv_slot, seq.rv_sel, seq.rv_rot, seq.cv_row_base

        # Accumulator i takes SL row_base + i, i.e. ADC (row_base + i) % A: the codes are rotated
        # by row_base % A. For timing the rotation is split over two registered stages (a: the
        # codes as they arrive from the controller's routing, rotated by the low 2 bits; s: by the
        # rest, one code per accumulator), the code is shifted in the next (c) and added in the one after.
        AB = _bits(A)
        def rotate(words, amount, lsb):     # words[k] <- words[(k + amount << lsb) % A], one Mux level per bit
            for b in range(len(amount)):
                n = 1 << (b + lsb)
                words = [Mux(amount[b], words[(k + n) % A], words[k]) for k in range(A)]
            return words
        # The conversion side's registers are in submodules (the rotation `rot`, the accumulator
        # groups `grp{g}`), so the board core can give each its own copy of the tick enable
        # (rtl/replica.py EnableCopies; timing: one copy for the whole lane reached ~900 loads).
        LO = min(2, AB)
        a_codes = [Signal(self.code_bits, name=f"acode{a}") for a in range(A)]
        a_valid = Signal()
        a_slot = Signal.like(rv_slot)
        a_rot = Signal(AB - LO)
        port = [self.pe.adc_codes.word_select(a, self.code_bits) for a in range(A)]
        m.submodules.rot = mrot = Module()
        mrot.d.sync += [c.eq(w) for c, w in zip(a_codes, rotate(port, rv_rot[:LO], 0))]
        m.d.sync += [a_valid.eq(self.pe.adc_valid), a_slot.eq(rv_slot), a_rot.eq(rv_rot[LO:])]
        codes = rotate(a_codes, a_rot, LO)

        acc = [Signal(self.sum_bits, name=f"acc{i}") for i in range(MR)]
        fin = [Signal(self.sum_bits, name=f"fin{i}") for i in range(MR)]
        c_q = [Signal(self.sum_bits, name=f"cq{i}") for i in range(MR)]
        c_en = [Signal(name=f"cen{i}") for i in range(MR)]
        NG = min(self.acc_groups, MR)
        # per group: its own copies of the slot being shifted in and of its first / last tests
        s_slot = replicas(Signal.like(rv_slot), NG, "s_slot")
        c_first, c_last = replicas(Signal(), NG, "c_first"), replicas(Signal(), NG, "c_last")
        for g, (lo, hi) in enumerate(slices(MR, NG)):
            m.submodules[f"grp{g}"] = mg = Module()
            mg.d.sync += [s_slot[g].eq(a_slot), c_first[g].eq(s_slot[g] == 0), c_last[g].eq(s_slot[g] == B - 1)]
            for i in range(lo, hi):
                row = Signal(range(self.n_rows + MR), name=f"rvrow{i}")
                mg.d.sync += row.eq(cv_row_base + i)
                a_mine = Signal(name=f"amine{i}")
                mg.d.sync += a_mine.eq((row[AB:] == rv_sel) if self.n_rows > A else 1)
                s_code = Signal(self.code_bits, name=f"scode{i}")
                s_en = Signal(name=f"sen{i}")
                mg.d.sync += [s_code.eq(codes[i % A]), s_en.eq(a_valid & a_mine)]
                mg.d.sync += [c_q[i].eq(s_code << s_slot[g]), c_en[i].eq(s_en)]
                new = Mux(c_first[g], 0, acc[i]) + c_q[i]
                with mg.If(c_en[i]):
                    mg.d.sync += acc[i].eq(new)
                    with mg.If(c_last[g]):
                        mg.d.sync += fin[i].eq(new)

        # Differential sums leave a fixed P + 5 cycles after a group's last pulse, whatever the
        # number of conversion rounds (<= P) or a null group: lanes in lockstep deliver together.
        rt = Signal(range(P + 6))
        done_n_out = Signal.like(enc.n_out)
        with m.If(enc.group_end):
            m.d.sync += [rt.eq(P + 5), self.res.payload.tag.eq(enc.tag), done_n_out.eq(enc.n_out)]
        with m.Elif(rt != 0):
            m.d.sync += rt.eq(rt - 1)
        m.d.comb += self.res.valid.eq(rt == 1)
        for o in range(MO):
            d = Signal(signed(self.d_bits), name=f"d{o}")
            m.d.comb += d.eq(Mux(o < done_n_out, fin[2 * o] - fin[2 * o + 1], 0))
            m.d.comb += self.res.payload.d[o].eq(d)
        return m
