"""Transposed read: one read group's error vector driven bit-serially on the SLs (rows), the BL
currents digitised by the BL-side ADCs, shift-added per phase and subtracted: T = W^T e per BL.

Golden counterpart: golden/transposed_read.py `transposed_sums(array, g, err, bits, adc)`. For a
group (rows row_base .. row_base + 2*n_out, output o on G+ row row_base + 2o and G- row
row_base + 2o + 1) and a signed error vector err (|err_o| < 2**err_bits), with positive read
voltages only, two phases of err_bits slots each, LSB first:
  phase P   G+ row of o pulsed with the bits of max(err_o, 0), G- row with those of max(-err_o, 0)
  phase N   the complement (G+ row: max(-err_o, 0), G- row: max(err_o, 0))
In a slot the rows whose bit is set get a read pulse and every BL's current (the sum of the pulsed
rows' cell currents) is converted by its BL-side ADC; S_P, S_N = sum over the phase's slots of
code << slot, and T = S_P - S_N for each of the n_bl BLs.

  cmd    In  stream {err: max_out x s(err_bits+1), row_base, n_out, tag}; err[o] for o >= n_out is
             ignored (those rows are never pulsed). ready = idle (one group at a time).
  res    Out stream {t: n_bl x s(t_bits), tag}: T of every BL (the consumer takes the group's
             BLs 0..len(inputs)-1); payload and valid are registers, held until ready.
  pe     Out PEBoardSignature(transposed=True): sl_drive, t_pulse, bl_sample (registered) and
             bl_valid / bl_codes (rtl/pe_board.py).
  busy   Out a group is in flight (cmd taken, res not yet taken)
  t_slots Out 32 counter: slots sampled (bl_sample pulses)

Timing: each of the 2 * err_bits slots pulses for `pulse_cycles` cycles (the row pattern is held
the whole slot, t_pulse high), bl_sample in its last cycle. The BL ADCs convert while the next
slot pulses (their S&H holds the current); their codes may come at any latency but in order, one
bl_valid per bl_sample (counted here, so each code knows its phase and slot). The row pattern goes
through three registers (bit of the slot per relative row; shifted by row_base's high bits; by its
low bits), the control signals through the same delay; the codes through three (registered;
shifted by their slot; added to or subtracted from the accumulator). A group takes
2 * err_bits * pulse_cycles + ~8 cycles plus the ADC latency, then waits for res.ready.
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.transposed_read import BL_ADC, ERR_BITS

from .pe_board import PEBoardSignature


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class TransposedRead(wiring.Component):
    def __init__(self, n_bl=16, n_rows=128, max_out=64, err_bits=ERR_BITS, bl_code_bits=BL_ADC.bits,
                 pulse_cycles=4, tag_bits=8, n_adc=32, code_bits=8):
        if not 1 <= max_out <= n_rows // 2:
            raise ValueError(f"max_out must be in 1..{n_rows // 2} (a row pair per output), got {max_out}")
        if pulse_cycles < 1:
            raise ValueError("pulse_cycles must be >= 1")
        self.n_bl, self.n_rows, self.max_out = n_bl, n_rows, max_out
        self.err_bits, self.bl_code_bits, self.pulse_cycles = err_bits, bl_code_bits, pulse_cycles
        self.t_bits = bl_code_bits + err_bits + 1         # |S_P - S_N| < 2**(code bits + err bits)
        self.cmd_layout = data.StructLayout({
            "err": data.ArrayLayout(signed(err_bits + 1), max_out),
            "row_base": _bits(n_rows),
            "n_out": _bits(max_out + 1),
            "tag": tag_bits,
        })
        self.res_layout = data.StructLayout({
            "t": data.ArrayLayout(signed(self.t_bits), n_bl),
            "tag": tag_bits,
        })
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "res": Out(stream.Signature(self.res_layout)),
            "pe": Out(PEBoardSignature(n_bl, n_adc, code_bits, n_rows, transposed=True, bl_code_bits=bl_code_bits)),
            "busy": Out(1),
            "t_slots": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        B, MO = self.err_bits, self.max_out
        busy = Signal()
        row_base = Signal(_bits(self.n_rows))
        tag = Signal.like(self.res.payload.tag)
        # magnitude of each relative row in phase P: mag[2o] = max(err_o, 0), mag[2o+1] = max(-err_o, 0)
        mag = [Signal(B, name=f"mag{i}") for i in range(2 * MO)]
        fire = self.cmd.valid & self.cmd.ready
        m.d.comb += [self.cmd.ready.eq(~busy), self.busy.eq(busy)]
        with m.If(fire):
            p = self.cmd.payload
            m.d.sync += [busy.eq(1), row_base.eq(p.row_base), tag.eq(p.tag)]
            for o in range(MO):
                e = p.err[o]
                inside = C(o, _bits(MO + 1)) < p.n_out
                m.d.sync += [mag[2 * o].eq(Mux(inside & (e > 0), e[:B], 0)),
                             mag[2 * o + 1].eq(Mux(inside & (e < 0), (-e)[:B], 0))]
        self._pulse_side(m, fire, mag, row_base)
        self._code_side(m, busy, tag)
        return m

    def _pulse_side(self, m, fire, mag, row_base):
        """Slot sequencer -> relative row pattern -> shifted to the group's rows -> the PE port."""
        B, P, pe = self.err_bits, self.pulse_cycles, self.pe
        act0, ph0, last0 = Signal(), Signal(), Signal()      # stage 0: the slot being issued
        k0, cyc = Signal(range(B)), Signal(range(P))
        with m.If(fire):
            m.d.sync += [act0.eq(1), ph0.eq(0), k0.eq(0), cyc.eq(0), last0.eq(P == 1)]
        with m.Elif(act0):
            m.d.sync += [cyc.eq(Mux(last0, 0, cyc + 1)), last0.eq(Mux(last0, P == 1, cyc == P - 2))]
            with m.If(last0):
                m.d.sync += k0.eq(Mux(k0 == B - 1, 0, k0 + 1))
                with m.If(k0 == B - 1):
                    m.d.sync += ph0.eq(1)
                    with m.If(ph0):
                        m.d.sync += act0.eq(0)
        # stage 1: the slot's bit of each relative row (phase N swaps the rows of a pair)
        rel = Signal(2 * self.max_out)
        act1, last1 = Signal(), Signal()
        m.d.sync += [act1.eq(act0), last1.eq(act0 & last0)]
        m.d.sync += rel.eq(Cat(Mux(ph0, mag[i ^ 1], mag[i]).bit_select(k0, 1) for i in range(len(mag))))
        # stage 2: shifted by row_base's bits above the low 3; stage 3 by the low 3 (the port's registers)
        coarse = Signal(self.n_rows)
        act2, last2 = Signal(), Signal()
        m.d.sync += [act2.eq(act1), last2.eq(last1),
                     coarse.eq(rel << Cat(C(0, 3), row_base[3:]))]
        m.d.sync += [pe.sl_drive.eq(Mux(act2, coarse << row_base[:3], 0)), pe.t_pulse.eq(act2),
                     pe.bl_sample.eq(act2 & last2)]
        with m.If(pe.bl_sample):
            m.d.sync += self.t_slots.eq(self.t_slots + 1)

    def _code_side(self, m, busy, tag):
        """BL codes -> (registered, slot and phase from their count) -> shifted -> +/- accumulated."""
        B, NB, CB, pe = self.err_bits, self.n_bl, self.bl_code_bits, self.pe
        # stage A: the codes, their slot and phase (counted from the bl_valid pulses of this group)
        kc, phc = Signal(range(B)), Signal()
        va, pha, firsta, lasta = Signal(), Signal(), Signal(), Signal()
        ka = Signal(range(B))
        codes = Signal(NB * CB)
        got = pe.bl_valid & busy
        m.d.sync += [va.eq(got), codes.eq(pe.bl_codes), ka.eq(kc), pha.eq(phc),
                     firsta.eq((kc == 0) & ~phc), lasta.eq((kc == B - 1) & phc)]
        with m.If(got):
            m.d.sync += kc.eq(Mux(kc == B - 1, 0, kc + 1))
            with m.If(kc == B - 1):
                m.d.sync += phc.eq(~phc)
        # stage B: code << slot
        vb, phb, firstb, lastb = Signal(), Signal(), Signal(), Signal()
        shb = [Signal(unsigned(CB + B), name=f"sh{j}") for j in range(NB)]
        m.d.sync += [vb.eq(va), phb.eq(pha), firstb.eq(firsta), lastb.eq(lasta)]
        m.d.sync += [shb[j].eq(codes[CB * j:CB * (j + 1)] << ka) for j in range(NB)]
        # stage C: T += (phase P) or -= (phase N); the accumulators are the result's payload
        acc = [Signal(signed(self.t_bits), name=f"acc{j}") for j in range(NB)]
        with m.If(vb):
            for j in range(NB):
                base = Mux(firstb, 0, acc[j])
                m.d.sync += acc[j].eq(Mux(phb, base - shb[j], base + shb[j]))
        with m.If(vb & lastb):
            m.d.sync += self.res.valid.eq(1)
        with m.If(self.res.valid & self.res.ready):
            m.d.sync += [self.res.valid.eq(0), busy.eq(0)]
        m.d.comb += [self.res.payload.t[j].eq(acc[j]) for j in range(NB)]
        m.d.comb += self.res.payload.tag.eq(tag)


def default_instances():
    return {"transposed_read": TransposedRead()}
