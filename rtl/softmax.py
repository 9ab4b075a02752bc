"""Fixed-point softmax and training error; golden.datapath.softmax_fixed, .delta and .argmax.

Per vector of K logits z (FC accumulators) and a label:

    zmax = max z (argmax: first maximum)      d = zmax - z >= 0
    t = min((d*M + 2**(sh-1)) >> sh, 1023)    e = EXP_TABLE[t]   (1024 x u16 ROM, golden's table)
    E = sum e                                 p = (e * 2**15 + E//2) // E      (Q1.15)
    delta = p - 2**15 * (index == label)      (Q1.15, s17)

Input stream: one transfer per class, {"z": s(logit_bits), "label": class}, classes 0..K-1 in
order (the block counts K, no framing); the label is taken from class 0's transfer (ignored in the
others; a label >= K gives delta = p). The configuration ports M (u16) and sh are sampled with
class 0's transfer too (sh = 0, undefined in golden, gives t = min(d*M, 1023)).
Output stream: one transfer per class, in class order, {"index", "p", "delta", "argmax", "last"};
`argmax` (the same in all K transfers) is golden.datapath.argmax of the vector, `last` marks
class K-1.

Sequential schedule (the block takes a new vector only after the last output has been produced;
one vector per image, so the rate is irrelevant next to the FC layer's reads):
  LOAD  K cycles: logits into a K-entry distributed RAM, running max (strict >, lowest index wins);
  EXP   K+8 cycles: pipelined d -> d*M (two DSP partial products, then their sum) -> shift (two
        stages) -> zero tests (registered) -> round/saturate -> ROM (BRAM, sync read, output registered) ->
        e into a K-entry RAM and E += e;
  DIV   17 cycles per class: restoring divider, 16 quotient bits (p <= 2**15 needs 16), one
        cycle to load N = e*2**15 + E//2 (< E * 2**16, so the quotient fits 16 bits), 16 steps;
        the 16th step writes the output register (or waits while it is full and back-pressured).
Latency from the last logit to the first output 26 + K cycles (K=10: 36); a vector takes 19K + 8
cycles end to end at full rate (K=10: 198).
"""
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.datapath import EXP_TABLE, EXP_TABLE_SIZE, SOFTMAX_FRAC

from .replica import replicas

Q_BITS = SOFTMAX_FRAC + 1                       # p in 0..2**15 needs 16 bits
E_MAX = int(EXP_TABLE.max())                    # 32768 (t = 0)
T_BITS = (EXP_TABLE_SIZE - 1).bit_length()      # 10


def _idx(k: int) -> unsigned:
    return unsigned(max(1, (k - 1).bit_length()))


class Softmax(wiring.Component):
    def __init__(self, k: int = 10, logit_bits: int = 21, m_bits: int = 16, sh_bits: int = 6):
        if k < 1:
            raise ValueError("softmax needs at least one logit")
        self.k, self.logit_bits, self.m_bits, self.sh_bits = k, logit_bits, m_bits, sh_bits
        self.e_sum_bits = (k * E_MAX).bit_length()              # E (u19 for K = 10)
        self.in_layout = data.StructLayout({"z": signed(logit_bits), "label": _idx(k)})
        self.out_layout = data.StructLayout({"index": _idx(k), "p": unsigned(Q_BITS),
                                             "delta": signed(Q_BITS + 1), "argmax": _idx(k), "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "m": In(unsigned(m_bits)),
            "sh": In(unsigned(sh_bits)),
            "ops": Out(32),     # activity counter: classes evaluated (e into the sum; golden/activity.py)
        })

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()       # the signals the sections below share
        K, LB = self.k, self.logit_bits
        m.submodules.zmem = zmem = Memory(shape=signed(LB), depth=K, init=[])
        m.submodules.emem = emem = Memory(shape=unsigned(Q_BITS), depth=K, init=[])
        m.submodules.exp_rom = rom = Memory(shape=unsigned(Q_BITS), depth=EXP_TABLE_SIZE,
                                            init=[int(v) for v in EXP_TABLE])
        z_wr, z_rd = zmem.write_port(), zmem.read_port(domain="comb")
        e_wr, e_rd = emem.write_port(), emem.read_port(domain="comb")
        rom_rd = rom.read_port()                                # synchronous: block RAM
        s.z_wr, s.z_rd, s.e_wr, s.e_rd, s.rom_rd = z_wr, z_rd, e_wr, e_rd, rom_rd
        self._state(m, s)
        self._load(m, s)
        self._exp(m, s)
        self._div(m, s)
        return m

    def _state(self, m, s):
        """The registers the phases share; the state and the counters' tests, one-hot."""
        K = self.k
        s.cnt = cnt = Signal(_idx(K))          # class being loaded / divided
        s.zmax = Signal(signed(self.logit_bits))
        s.amax = Signal(_idx(K))
        s.label = Signal(_idx(K))
        s.m_l = Signal(unsigned(self.m_bits))
        # (and a copy for the second multiplier, so each input register can sit next to its DSP)
        [s.m_lh] = replicas(s.m_l, 1, "m_l")
        s.sh_l = Signal(unsigned(self.sh_bits))
        s.e_sum = Signal(unsigned(self.e_sum_bits))
        s.sh_m1 = Signal(unsigned(self.sh_bits))     # sh - 1 and sh == 0, registered with sh
        s.sh_0 = Signal()
        # EXP pipeline: issue, and the last stage (written into emem)
        s.issuing = Signal()
        s.j = Signal(_idx(K))
        s.v4, s.j4, s.e4 = Signal(name="v4"), Signal(_idx(K), name="j4"), Signal(unsigned(Q_BITS), name="e4")
        # divider
        s.step = step = Signal(range(Q_BITS + 1))
        s.rem = Signal(unsigned(self.e_sum_bits))
        s.qb = Signal(unsigned(Q_BITS))
        # read addresses outside the FSM: no state decode before the (LUT-RAM) reads
        m.d.comb += [s.z_rd.addr.eq(s.j), s.e_rd.addr.eq(cnt), s.e_wr.addr.eq(s.j4), s.e_wr.data.eq(s.e4),
                     s.e_wr.en.eq(s.v4)]
        with m.If(s.v4):
            m.d.sync += self.ops.eq(self.ops + 1)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # the state one-hot (one flip-flop per state) and the counters' tests as registers kept
        # with the counters (timing: the transitions are then one or two LUTs from flip-flops)
        s.s_load, s.s_exp, s.s_div = Signal(init=1, name="s_load"), Signal(name="s_exp"), Signal(name="s_div")
        # cnt == 0, cnt == K - 1
        s.cnt_0, s.cnt_last = cnt_0, cnt_last = Signal(init=1, name="cnt_0"), Signal(init=(K == 1), name="cnt_last")

        def cnt_to_0():
            m.d.sync += [cnt.eq(0), cnt_0.eq(1), cnt_last.eq(K == 1)]

        def cnt_inc():
            m.d.sync += [cnt.eq(cnt + 1), cnt_0.eq(0), cnt_last.eq(cnt == K - 2)]

        # step == 0, 0 < step < Q_BITS, == Q_BITS
        s.st_0, s.st_run, s.st_out = st_0, st_run, st_out = (
            Signal(init=1, name="st_0"), Signal(name="st_run"), Signal(name="st_out"))

        def step_to_0():
            m.d.sync += [step.eq(0), st_0.eq(1), st_run.eq(0), st_out.eq(0)]
        s.cnt_to_0, s.cnt_inc, s.step_to_0 = cnt_to_0, cnt_inc, step_to_0

    def _load(self, m, s):
        """LOAD: the logits into zmem, the running maximum; the label and M, sh from class 0."""
        z = self.i.payload.z
        with m.If(s.s_load):
            m.d.comb += [self.i.ready.eq(1), s.z_wr.addr.eq(s.cnt), s.z_wr.data.eq(z)]
            with m.If(self.i.valid):
                m.d.comb += s.z_wr.en.eq(1)
                # z > zmax as the sign of one subtraction (a carry chain, for timing)
                zd = Signal(signed(self.logit_bits + 1))
                m.d.comb += zd.eq(s.zmax - z)
                with m.If(s.cnt_0 | zd[-1]):              # strict: ties keep the lower index
                    m.d.sync += [s.zmax.eq(z), s.amax.eq(s.cnt)]
                with m.If(s.cnt_0):
                    m.d.sync += [s.label.eq(self.i.payload.label), s.m_l.eq(self.m), s.m_lh.eq(self.m),
                                 s.sh_l.eq(self.sh), s.sh_m1.eq(self.sh - 1), s.sh_0.eq(self.sh == 0)]
                with m.If(s.cnt_last):
                    s.cnt_to_0()
                    m.d.sync += [s.e_sum.eq(0), s.j.eq(0), s.issuing.eq(1), s.s_load.eq(0), s.s_exp.eq(1)]
                with m.Else():
                    s.cnt_inc()

    def _exp(self, m, s):
        """EXP: the pipeline d -> d*M -> shift -> round / saturate -> EXP_TABLE -> e, E += e."""
        K, LB, j, sh_0, sh_m1 = self.k, self.logit_bits, s.j, s.sh_0, s.sh_m1
        v1, v2, v3 = Signal(), Signal(), Signal()
        j1, j2, j3 = Signal(_idx(K)), Signal(_idx(K)), Signal(_idx(K))
        d1 = Signal(unsigned(LB))
        p2 = Signal(unsigned(LB + self.m_bits))
        v2a, j2a, p2a = Signal(), Signal(_idx(K)), Signal(unsigned(LB + self.m_bits))
        v2s, j2s, p2s = Signal(), Signal(_idx(K)), Signal(unsigned(LB + self.m_bits))
        with m.If(s.s_exp):
            # stage 0: issue class j, d = zmax - z[j] (>= 0, fits LB unsigned bits)
            m.d.sync += [v1.eq(s.issuing), j1.eq(j), d1.eq((s.zmax - s.z_rd.data)[:LB])]
            with m.If(s.issuing):
                with m.If(j == K - 1):
                    m.d.sync += s.issuing.eq(0)
                with m.Else():
                    m.d.sync += j.eq(j + 1)
            # stages 1a, 1b: multiply as two partial products (each one DSP, registered), then
            # their sum (for timing: a wide product is DSPs plus an adder in one path)
            SPL = 18
            v1b, j1b = Signal(), Signal(_idx(K))
            p1l = Signal(unsigned(min(LB, SPL) + self.m_bits))
            p1h = Signal(unsigned(max(LB - SPL, 1) + self.m_bits))
            m.d.sync += [v1b.eq(v1), j1b.eq(j1), p1l.eq(d1[:SPL] * s.m_l),
                         p1h.eq(d1[SPL:] * s.m_lh if LB > SPL else 0)]
            m.d.sync += [v2.eq(v1b), j2.eq(j1b), p2.eq(p1l + (p1h << SPL))]
            # stages 2a, 2b: shift by sh - 1 in two registered steps (low 3 bits, then the rest)
            m.d.sync += [v2a.eq(v2), j2a.eq(j2), p2a.eq(Mux(sh_0, p2, p2 >> sh_m1[:3]))]
            m.d.sync += [v2s.eq(v2a), j2s.eq(j2a), p2s.eq(Mux(sh_0, p2a, p2a >> Cat(Const(0, 3), sh_m1[3:])))]
            # stage 2c: the wide zero tests of p2s, registered (timing: an OR of 26 bits before the
            # rounding adder and a block RAM's address was too long)
            TMAX = EXP_TABLE_SIZE - 1
            TB = (2 * TMAX + 1).bit_length()
            low = Signal(TB)
            hz, hz_t = Signal(), Signal()
            v2t, j2t = Signal(), Signal(_idx(K))
            m.d.sync += [v2t.eq(v2s), j2t.eq(j2s), low.eq(p2s[:TB]), hz.eq(p2s[TB:] != 0),
                         hz_t.eq(p2s[T_BITS:] != 0)]
            # stage 2': round half up, saturate -> table index (ROM address). With sh > 0,
            # (p2s + 1) >> 1 > TMAX iff p2s >= 2 * TMAX + 1: only the low bits need the adder
            half = Signal(unsigned(TB + 1))
            m.d.comb += half.eq(low + 1)
            big = hz | (low >= 2 * TMAX + 1)
            t0 = Mux(hz_t, TMAX, low[:T_BITS])                          # sh == 0: t = p2s
            t1 = Mux(big, TMAX, half[1:])
            rom_addr = Mux(sh_0, t0, t1)
            m.d.sync += [v3.eq(v2t), j3.eq(j2t)]
            # stage 3: e = EXP_TABLE[t], registered (block RAM clock-to-out is long)
            m.d.sync += [s.v4.eq(v3), s.j4.eq(j3), s.e4.eq(s.rom_rd.data)]
            # stage 4: store e, E += e (v4 is 0 outside EXP: the write is outside the FSM)
            with m.If(s.v4):
                m.d.sync += s.e_sum.eq(s.e_sum + s.e4)
                with m.If(s.j4 == K - 1):
                    s.cnt_to_0()
                    s.step_to_0()
                    m.d.sync += [s.s_exp.eq(0), s.s_div.eq(1)]

        m.d.comb += s.rom_rd.addr.eq(rom_addr)       # outside the state: no decode before the ROM

    def _div(self, m, s):
        """DIV: p = (e * 2**15 + E//2) // E by a restoring divider, delta, the output register."""
        EB, rem, qb, e_sum, step, cnt = self.e_sum_bits, s.rem, s.qb, s.e_sum, s.step, s.cnt
        with m.If(s.s_div):
            rem2 = Cat(qb[-1], rem)                             # (rem << 1) | next numerator bit
            # rem2 >= E as the sign of rem2 - E: one carry chain for both (timing)
            rdiff = Signal(signed(EB + 2))
            m.d.comb += rdiff.eq(rem2 - e_sum)
            ge = ~rdiff[-1]
            rem_next = Mux(ge, rdiff[:EB], rem2)
            q = Cat(ge, qb[:-1])
            with m.If(s.st_0):
                num = Signal(unsigned(EB + Q_BITS))
                m.d.comb += num.eq((s.e_rd.data << SOFTMAX_FRAC) + (e_sum >> 1))
                m.d.sync += [rem.eq(num[Q_BITS:]), qb.eq(num[:Q_BITS]), step.eq(1), s.st_0.eq(0),
                             s.st_run.eq(Q_BITS > 1), s.st_out.eq(Q_BITS == 1)]
            with m.If(s.st_run):
                m.d.sync += [rem.eq(rem_next), qb.eq(q), step.eq(step + 1), s.st_run.eq(step != Q_BITS - 1),
                             s.st_out.eq(step == Q_BITS - 1)]
            with m.If(s.st_out & (~self.o.valid | self.o.ready)):
                # delta = q - 2**15 * hit, q <= 2**15: bit 15 and the sign, no adder (timing)
                hit = s.label == cnt
                dl = Cat(q[:SOFTMAX_FRAC], q[SOFTMAX_FRAC] ^ hit, hit & ~q[SOFTMAX_FRAC])
                m.d.sync += [self.o.valid.eq(1),
                             self.o.payload.index.eq(cnt),
                             self.o.payload.p.eq(q),
                             self.o.payload.delta.eq(dl.as_signed()),
                             self.o.payload.argmax.eq(s.amax),
                             self.o.payload.last.eq(s.cnt_last)]
                s.step_to_0()
                with m.If(s.cnt_last):
                    s.cnt_to_0()
                    m.d.sync += [s.s_div.eq(0), s.s_load.eq(1)]
                with m.Else():
                    s.cnt_inc()

def default_instances():
    return {"softmax": Softmax()}
