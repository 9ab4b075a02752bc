"""Read lane: runs read groups on one PE, back to back, and returns differential sums.

A read group (golden.datapath.read_group_sums) is: up to 16 u8 inputs on the BLs, `input_bits`
slots LSB first, all 2*n_out SLs of the group sampled per slot and digitised, the codes shifted and
added per SL, then D[o] = S[2o] - S[2o+1].

Timing (golden.perf.Timing): a slot's pulse lasts `pulse_cycles`; at its last cycle the PE's
sample-and-hold bank (slot parity) captures the SL currents. The conversions of slot k run while
slot k+1 pulses (ping-pong S&H): one conversion round per cycle, a round converting SLs
{32*sel + a} on the 32 ADCs at once (SL s -> ADC s % 32, MUX select s // 32); codes come back one
cycle later and are shifted and added in parallel. So the ADCs and the BLs never wait for each
other: a group takes exactly input_bits * pulse_cycles cycles, back to back, as long as a group
needs at most pulse_cycles conversion rounds.

The lane drives one PE port (rtl/pe_board.py); the controller routes it to the PE of the current
layer.
"""
from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .pe_board import PEBoardSignature


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class ReadLane(wiring.Component):
    def __init__(self, n_bl=16, n_rows=128, n_adc=32, input_bits=8, code_bits=8, max_out=12,
                 pulse_cycles=4, tag_bits=8):
        if pulse_cycles < (n_rows + n_adc - 1) // n_adc:
            raise ValueError(f"pulse_cycles {pulse_cycles} < conversion rounds {n_rows // n_adc}: "
                             f"the ADCs could not finish a slot during the next pulse")
        self.n_bl, self.n_rows, self.n_adc = n_bl, n_rows, n_adc
        self.input_bits, self.code_bits, self.max_out = input_bits, code_bits, max_out
        self.pulse_cycles, self.tag_bits = pulse_cycles, tag_bits
        self.sum_bits = code_bits + input_bits          # S: u16
        self.d_bits = self.sum_bits + 1                 # D: s17
        self.cmd_layout = data.StructLayout({
            "patch": data.ArrayLayout(unsigned(input_bits), n_bl),
            "row_base": _bits(n_rows),
            "n_out": _bits(max_out + 1),                # 0: a null group (no pulse, D = 0)
            "tag": tag_bits,
        })
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

    def elaborate(self, platform):
        m = Module()
        B, P, A, MO = self.input_bits, self.pulse_cycles, self.n_adc, self.max_out
        MR = 2 * MO
        sel_bits = _bits(self.n_rows // A)

        # ---------------------------------------------------------------- pulse side
        cur = Signal(self.cmd_layout)
        active = Signal()             # a group is being pulsed
        slot = Signal(range(B))
        cyc = Signal(range(P))
        m.d.comb += self.busy.eq(active)

        at_group_end = active & (slot == B - 1) & (cyc == P - 1)
        m.d.comb += self.cmd.ready.eq(~active | at_group_end)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [cur.eq(self.cmd.payload), active.eq(1), slot.eq(0), cyc.eq(0)]
        with m.Elif(active):
            with m.If(cyc == P - 1):
                m.d.sync += cyc.eq(0)
                with m.If(slot == B - 1):
                    m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)
            with m.Else():
                m.d.sync += cyc.eq(cyc + 1)

        real = active & (cur.n_out != 0)
        bits = Signal(self.n_bl)
        for j in range(self.n_bl):
            m.d.comb += bits[j].eq((cur.patch[j] >> slot)[0])
        m.d.comb += [
            self.pe.bl.eq(Mux(real, bits, 0)),
            self.pe.pulse.eq(real),
            self.pe.sh_sample.eq(real & (cyc == P - 1)),
            self.pe.sh_bank.eq(slot[0]),
        ]
        with m.If(real & (cyc == P - 1)):
            m.d.sync += self.slot_reads.eq(self.slot_reads + 1)

        # ---------------------------------------------------------------- conversion side
        # Context of the slot being converted, latched when its S&H sample is taken.
        cv_active = Signal()
        cv_slot = Signal(range(B))
        cv_bank = Signal()
        cv_sel = Signal(sel_bits)
        cv_sel_last = Signal(sel_bits)
        cv_row_base = Signal.like(cur.row_base)
        first_row = cur.row_base
        last_row = cur.row_base + 2 * cur.n_out - 1
        with m.If(real & (cyc == P - 1)):
            m.d.sync += [cv_active.eq(1), cv_slot.eq(slot), cv_bank.eq(slot[0]),
                         cv_sel.eq(first_row // A), cv_sel_last.eq(last_row // A),
                         cv_row_base.eq(cur.row_base)]
        with m.Elif(cv_active):
            with m.If(cv_sel == cv_sel_last):
                m.d.sync += cv_active.eq(0)
            with m.Else():
                m.d.sync += cv_sel.eq(cv_sel + 1)
        m.d.comb += [self.pe.adc_start.eq(cv_active), self.pe.adc_bank.eq(cv_bank),
                     self.pe.adc_sel.eq(cv_sel)]
        with m.If(cv_active):
            m.d.sync += self.conv_rounds.eq(self.conv_rounds + 1)

        # Codes return one cycle later: delay the context.
        rv_slot = Signal.like(cv_slot)
        rv_sel = Signal.like(cv_sel)
        rv_row_base = Signal.like(cv_row_base)
        m.d.sync += [rv_slot.eq(cv_slot), rv_sel.eq(cv_sel), rv_row_base.eq(cv_row_base)]

        codes = Array(self.pe.adc_codes.word_select(a, self.code_bits) for a in range(A))
        acc = [Signal(self.sum_bits, name=f"acc{i}") for i in range(MR)]
        fin = [Signal(self.sum_bits, name=f"fin{i}") for i in range(MR)]
        # for timing, a code is selected and shifted in one cycle (the row of each accumulator is
        # registered along with rv_row_base), then added in the next
        c_q = [Signal(self.sum_bits, name=f"cq{i}") for i in range(MR)]
        c_en = [Signal(name=f"cen{i}") for i in range(MR)]
        c_first, c_last = Signal(), Signal()
        m.d.sync += [c_first.eq(rv_slot == 0), c_last.eq(rv_slot == B - 1)]
        for i in range(MR):
            row = Signal(range(self.n_rows + MR), name=f"rvrow{i}")
            m.d.sync += row.eq(cv_row_base + i)
            mine = (row[_bits(A):] == rv_sel) if self.n_rows > A else Const(1)
            code = codes[row[:_bits(A)]]
            m.d.sync += [c_q[i].eq(code << rv_slot), c_en[i].eq(self.pe.adc_valid & mine)]
            new = Mux(c_first, 0, acc[i]) + c_q[i]
            with m.If(c_en[i]):
                m.d.sync += acc[i].eq(new)
                with m.If(c_last):
                    m.d.sync += fin[i].eq(new)

        # Differential sums leave a fixed P + 3 cycles after a group's last pulse, whatever the
        # number of conversion rounds (<= P) or a null group: lanes in lockstep deliver together.
        rt = Signal(range(P + 4))
        done_n_out = Signal.like(cur.n_out)
        with m.If(at_group_end):
            m.d.sync += [rt.eq(P + 3), self.res.payload.tag.eq(cur.tag), done_n_out.eq(cur.n_out)]
        with m.Elif(rt != 0):
            m.d.sync += rt.eq(rt - 1)
        m.d.comb += self.res.valid.eq(rt == 1)
        for o in range(MO):
            d = Signal(signed(self.d_bits), name=f"d{o}")
            m.d.comb += d.eq(Mux(o < done_n_out, fin[2 * o] - fin[2 * o + 1], 0))
            m.d.comb += self.res.payload.d[o].eq(d)
        return m
