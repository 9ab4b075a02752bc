"""Bit-serial encoder: the pulse side of a read lane (rtl/read_lane.py), one read group at a time.

Golden counterpart: golden.datapath.bitserial_encode (slot k carries bit k of every input, LSB
first). A read group's `input_bits` slots each last `pulse_cycles` cycles; groups follow each other
back to back, so a group takes exactly input_bits * pulse_cycles cycles.

  cmd         In  stream {patch: n_bl x u(input_bits), row_base, n_out, tag}
                  ready = idle, or in the group's last cycle (the next group starts at the edge)
  bl          Out n_bl   BL enables: bit `slot` of every input while the slot pulses, else 0
  pulse       Out 1      a slot pulses (the group is not null: n_out != 0)
  sh_sample   Out 1      = `sample`: the PE's sample-and-hold captures the SL currents
  sh_bank     Out 1      S&H bank of the slot (slot parity, ping-pong)
  sample      Out 1      last cycle of a slot's pulse; `slot` is that slot
  slot        Out        the slot being pulsed
  row_base, n_out, tag   Out  the group being pulsed
  group_end   Out 1      registered: the group's last cycle (also for a null group)
  busy        Out 1      a group is being pulsed
  slot_reads  Out 32     counter: slots sampled (golden.activity read_slots)
  bl_pulses   Out 32     counter: BL pulses, the BLs high in each sampled slot (golden.activity)
  sl_selections Out 32   counter: SLs sensed, 2 * n_out per sampled slot (golden.activity)
"""
from amaranth.hdl import Mux, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .replica import replicas, slices


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class BitserialEncoder(wiring.Component):
    def __init__(self, n_bl=16, n_rows=128, input_bits=8, max_out=12, pulse_cycles=4, tag_bits=8):
        if pulse_cycles < 2:
            raise ValueError("pulse_cycles must be >= 2 (the conversion context is registered)")
        self.n_bl, self.input_bits, self.pulse_cycles = n_bl, input_bits, pulse_cycles
        self.cmd_layout = data.StructLayout({
            "patch": data.ArrayLayout(unsigned(input_bits), n_bl),
            "row_base": _bits(n_rows),
            "n_out": _bits(max_out + 1),                # 0: a null group (no pulse, D = 0)
            "tag": tag_bits,
        })
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "bl": Out(n_bl), "pulse": Out(1), "sh_sample": Out(1), "sh_bank": Out(1),
            "sample": Out(1),
            "slot": Out(range(input_bits)),
            "row_base": Out(_bits(n_rows)), "n_out": Out(_bits(max_out + 1)), "tag": Out(tag_bits),
            "group_end": Out(1),
            "busy": Out(1),
            "slot_reads": Out(32), "bl_pulses": Out(32), "sl_selections": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        B, P = self.input_bits, self.pulse_cycles
        cur = Signal(self.cmd_layout)
        active = Signal()             # a group is being pulsed
        slot = Signal(range(B))
        cyc = Signal(range(P))
        m.d.comb += [self.busy.eq(active), self.slot.eq(slot), self.row_base.eq(cur.row_base),
                     self.n_out.eq(cur.n_out), self.tag.eq(cur.tag)]

        # at_group_end is a register (set the cycle before the group's last pulse cycle) so that
        # cmd.ready, which the controller's issuer decodes, is one LUT from flip-flops
        at_group_end = Signal()
        m.d.comb += [self.cmd.ready.eq(~active | at_group_end), self.group_end.eq(at_group_end)]
        nxt_end = Signal()
        # the PE outputs come from registers (one LUT to the port, for timing: the PHY captures
        # them a cycle after the controller's tick): `real` (active & n_out != 0) as a flip-flop,
        # the patch as one shift register per BL (bit 0 is the bit of the slot being pulsed)
        real = Signal()
        psh = [Signal(B, name=f"psh{j}") for j in range(self.n_bl)]
        fire = self.cmd.valid & self.cmd.ready
        # sh_r: the patch shifts in this cycle (active, cyc == P - 1, slot != B - 1), as a register
        # set a cycle ahead, so the clock enable of the n_bl * B patch flip-flops is one LUT of
        # flip-flops and cmd.valid (timing); P >= 2, so a shift never follows a fire or a shift
        # (in copies, one per slice of the BLs: rtl/replica.py)
        NSH = min(4, self.n_bl)
        sh_r = replicas(Signal(), NSH, "sh_r")
        m.d.sync += [r.eq(~fire & active & (cyc == P - 2) & (slot != B - 1)) for r in sh_r]
        for k, (lo, hi) in enumerate(slices(self.n_bl, NSH)):
            with m.If(fire):
                m.d.sync += [psh[j].eq(self.cmd.payload.patch[j]) for j in range(lo, hi)]
            with m.Elif(sh_r[k]):
                m.d.sync += [psh[j].eq(psh[j] >> 1) for j in range(lo, hi)]
        with m.If(fire):
            m.d.sync += [cur.eq(self.cmd.payload), active.eq(1), slot.eq(0), cyc.eq(0),
                         real.eq(self.cmd.payload.n_out != 0)]
            m.d.comb += nxt_end.eq((B == 1) & (P == 1))
        with m.Elif(active):
            with m.If(cyc == P - 1):
                m.d.sync += cyc.eq(0)
                with m.If(slot == B - 1):
                    m.d.sync += [active.eq(0), real.eq(0)]
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)
                    m.d.comb += nxt_end.eq((P == 1) & (slot == B - 2))
            with m.Else():
                m.d.sync += cyc.eq(cyc + 1)
                m.d.comb += nxt_end.eq((cyc == P - 2) & (slot == B - 1))
        m.d.sync += at_group_end.eq(nxt_end)

        bits = Signal(self.n_bl)
        for j in range(self.n_bl):
            m.d.comb += bits[j].eq(psh[j][0])
        sample = real & (cyc == P - 1)
        m.d.comb += [
            self.bl.eq(Mux(real, bits, 0)),
            self.pulse.eq(real),
            self.sample.eq(sample),
            self.sh_sample.eq(sample),
            self.sh_bank.eq(slot[0]),
        ]
        with m.If(sample):
            m.d.sync += self.slot_reads.eq(self.slot_reads + 1)
        self._activity(m, bits, sample, cur.n_out)
        return m

    def _activity(self, m, bits, sample, n_out):
        """Activity counters (golden/activity.py), registered increments: the popcount of the
        slot's BL enables in two registered stages (nibbles, then their sum), then the add."""
        nib = [bits[i:i + 4] for i in range(0, self.n_bl, 4)]
        pc_nib = [Signal(3, name=f"pc_nib{i}") for i in range(len(nib))]
        m.d.sync += [p.eq(Mux(sample, sum(b[j] for j in range(len(b))), 0)) for p, b in zip(pc_nib, nib)]
        pc = Signal(range(self.n_bl + 1))
        sl = Signal(len(n_out) + 1)
        m.d.sync += [pc.eq(sum(pc_nib)), sl.eq(Mux(sample, n_out << 1, 0)),
                     self.bl_pulses.eq(self.bl_pulses + pc), self.sl_selections.eq(self.sl_selections + sl)]


def default_instances():
    return {"bitserial_encoder": BitserialEncoder()}
