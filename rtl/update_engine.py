"""Threshold update engine of hybrid training: FC gradient accumulation and programming commands.

Golden counterpart: golden.update (accumulate, weight_update, threshold, commands; sign_rule).

Learning rule (elaboration parameter `rule`, one engine per layer): "threshold" (below, the
default) or "sign" (Bennett 2019's sign Widrow-Hoff, eq. 7; golden.update.sign_rule): the same
accumulation (deltas are golden.update.sign_error's e in {-1, 0, 1}: delta_bits = 2 suffices),
then d_code = -sign(acc) for every cell with acc != 0 - one identical pulse per device of the pair
(rtl/pair_pulser.py) - with no rounding, no threshold and no clipping: `mult`, `shift`, `th_code`
and `clip_code` are ignored. Same pipeline, same timing, same stream formats.

    acc[m, n] += V[m] * delta[n]                   over a batch of images
    dI[m, n]   = -((acc * M + 2**(sh-1)) >> sh)    on FINISH (M = `mult`, sh = `shift`: runtime ports)
    command (pe, row_pos, bl, m, n, d_code = dI)   for every cell with dI != 0 and |dI| >= `th_code`

Input stream `i` (payload `in_layout` = {op, index, value}), per image:
  1. the image's `n_out` deltas: op=DELTA, index=n, value=delta[n] (s17, Q1.15), any order;
  2. the image's FC inputs: op=V, index=m, value=V[m] (u8 in the low bits), any order; items add
     up, so zero inputs may be skipped and an index may repeat (back-to-back is fine).
After the last image of the batch: op=FINISH (index and value ignored). The producer keeps an
image's V until its delta is known (it holds V anyway for the FC read groups).

Output stream `o` (payload `out_layout`): the programming commands, in exactly the order of
golden.update.commands -- read groups sorted by (pe, row_base), then output n, then bit line j --
followed by one end-of-batch marker (end=1, other command fields 0, `overflow`=1 if the batch had
more than `max_batch` images, in which case the accumulators may have wrapped; an image counts
when its first delta follows a V item). A batch without any command still gets its marker.
The read-group table is elaboration data (`groups`), by default
golden.mapping.build_mapping().groups["FC"] (`fc_groups`).

Accumulators: one word of `n_out` lanes per FC input m in block RAM (one Memory of depth n_in per
lane, read and written together: 10 x 32 bits = 320-bit words for the default). Width:
|V * delta| <= 255 * 2**16 for any s17 delta (the Q1.15 deltas p - onehot only span
[-2**15, 2**15]), so `max_batch` images need
bit_length(max_batch * 255 * 2**16) + 1 bits: 32 bits for max_batch = 128 (Yao 2020: batch 100;
-128 * 255 * 2**16 = -2,139,095,040 >= -2**31). Within max_batch the sums are exact, so no
saturation logic is needed; beyond it the `overflow` flag of the end marker says so.
dI is carried at full width: |acc * M| < 2**(acc_bits + 16 - 1), so d_code is s(acc_bits + 16)
for any shift 0..63 (golden needs shift >= 1; shift 0 gives -acc*M here).

Any dense layer of an in-situ network (issue 15) takes the same unit: groups, n_out =
fc_groups(mapping, layer) and delta_bits the layer's delta width; the accumulator width follows
from the formula above (li2018: layer O, s17 Q1.15 deltas, as the FC; layer H, deltas T << shift
of rtl/hidden_error.py, s26 for T s17 and shifts up to 9: 41-bit accumulators for max_batch = 128,
54 lanes). tb/test_update_engine.py runs both against golden.update.

Update clipping (golden.hybrid.clip_update, the replicated groups' training): with `clip_code`
c != 0 at FINISH, a first scan (no output) finds mx = max |dI| over the mapped cells; if mx > c the
second scan replaces every dI by sign(dI) * ((|dI| * c) // mx) (a restoring division of clip_bits
cycles per cell) before the threshold rule; otherwise the commands are as without clipping.
(golden takes mx over the whole (n_in, n_out) update: the same when every FC weight is mapped.)

Timing (measured: tb/test_update_engine.py, update_engine_latency). Every stream item is taken
into an input register first. Accumulate: one stream item per cycle (n_out 8x17 multipliers in
parallel; read, registered RAM output, add + write over 3 cycles; the words written in the two
cycles a read misses are forwarded from registers, so repeated items of one m are exact):
n_out + n_in = 202 cycles per image at full rate. FINISH: the scan starts once the last writes
have landed; the first command is valid 16 cycles after the FINISH transfer, then one cell per
cycle through a 12-stage pipeline (RAM read, RAM output register, lane select, partial products,
product, + rounding constant, shift by 8 * sh[3:], shift by sh[:3], |dI|, |dI| * clip partial
products, their sum and the threshold compare, output) stalled only by back-pressure on `o`
(through a two-entry output skid buffer: the pipeline's enable does not wait for `o.ready`): the
end marker follows 1936 cycles after FINISH (1920 cells); then `n_in` cycles clear the
accumulators (also after reset), `i` is ready again 2129 cycles after FINISH (no back-pressure).
`mult`, `shift` and `th_code` (and constants derived from them) are registered: they take effect a
cycle after they change (written while idle).
"""
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .replica import replicas, slices


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class Op(enum.Enum, shape=2):
    DELTA = 0
    V = 1
    FINISH = 2


def fc_groups(mapping=None, layer: str = "FC"):
    """The read-group table of `layer` as plain data: [(pe, row_base, (inputs...)), ...], n_out."""
    if mapping is None:
        from golden.mapping import build_mapping
        mapping = build_mapping()
    gs = mapping.groups[layer]
    n_out = {g.n_out for g in gs}
    if len(n_out) != 1:
        raise ValueError(f"{layer}: groups with different n_out {sorted(n_out)}")
    return [(g.pe, g.row_base, tuple(g.inputs)) for g in gs], n_out.pop()


class UpdateEngine(wiring.Component):
    def __init__(self, groups=None, n_out: int | None = None, n_pe: int = 8, n_rows: int = 128,
                 n_bl: int = 16, max_batch: int = 128, v_bits: int = 8, delta_bits: int = 17,
                 mult_bits: int = 16, shift_bits: int = 6, th_bits: int = 16, th_init: int = 15,
                 clip_bits: int = 8, lane_groups: int = 5, collision_new: bool = False, rule: str = "threshold"):
        if rule not in ("threshold", "sign"):
            raise ValueError(f"update engine: rule must be 'threshold' or 'sign', got {rule!r}")
        self.rule = rule
        if groups is None:
            groups, n_out = fc_groups()
        groups = [(int(p), int(r), tuple(int(x) for x in ins)) for p, r, ins in groups]
        if n_out is None:
            raise ValueError("n_out is required with an explicit group table")
        self.groups = sorted(groups, key=lambda g: (g[0], g[1]))  # golden.update.commands order
        self.n_out, self.n_pe, self.n_rows, self.n_bl = n_out, n_pe, n_rows, n_bl
        self.lane_groups = lane_groups      # submodules `lanes{g}` of the lanes' registers (elaborate)
        self.collision_new = collision_new  # (tests) reads of an address being written return the new data
        self.n_in = max(x for g in groups for x in g[2]) + 1
        for p, r, ins in groups:
            if not (0 <= p < n_pe and 0 <= r and r + 2 * n_out <= n_rows and 0 < len(ins) <= n_bl):
                raise ValueError(f"group (pe {p}, row_base {r}, {len(ins)} inputs) does not fit "
                                 f"{n_pe} PEs x {n_rows} rows x {n_bl} BLs")
        self.max_batch, self.v_bits, self.delta_bits = max_batch, v_bits, delta_bits
        self.mult_bits, self.shift_bits, self.th_bits = mult_bits, shift_bits, th_bits
        self.clip_bits = clip_bits
        # exact accumulator width for max_batch images of any u(v_bits) x s(delta_bits) product
        self.acc_bits = (max_batch * ((1 << v_bits) - 1) * (1 << (delta_bits - 1))).bit_length() + 1
        self.d_bits = self.acc_bits + mult_bits
        self.in_layout = data.StructLayout({
            "op": Op, "index": _bits(max(self.n_in, n_out)), "value": signed(max(delta_bits, v_bits + 1))})
        self.out_layout = data.StructLayout({
            "pe": _bits(n_pe), "row_pos": _bits(n_rows), "bl": _bits(n_bl), "m": _bits(self.n_in),
            "n": _bits(n_out), "d_code": signed(self.d_bits), "end": 1, "overflow": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "mult": In(unsigned(mult_bits)),
            "shift": In(unsigned(shift_bits)),
            "th_code": In(unsigned(th_bits), init=th_init),
            "clip_code": In(unsigned(clip_bits), init=0),     # update clipping (0: off), see the docstring
        })

    def _lane_groups(self) -> list[tuple[int, int]]:
        return slices(self.n_out, min(self.lane_groups, self.n_out))

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()       # the signals the sections below share
        self._memories(m, s)
        self._input(m, s)
        self._accumulate(m, s)
        self._scan_signals(m, s)
        self._clip(m, s)
        self._output(m, s)
        self._control(m, s)
        self._scan(m, s)
        return m

    def _memories(self, m, s):
        """The accumulator RAMs behind the word-wide ports `s.wr` / `s.rd`, and the scan's ROMs."""
        n_in, n_out = self.n_in, self.n_out
        acc_shape = signed(self.acc_bits)
        word = data.ArrayLayout(acc_shape, n_out)
        # one RAM per lane (n_in x acc_bits each), written together and read together through the
        # word-wide `wr` / `rd` below: each read port's enable, the clock enable of its read data
        # register, is then a LUT of its own next to its RAM (timing: one enable drove the
        # n_out * acc_bits read registers of all the RAMs across the die)
        # A read and a write of one address in the same cycle (a collision) can only happen in
        # ACCUM, and there the read data is not used: the accumulate forwards the write instead
        # (fwd2, _accumulate); the scan and the clear never read and write together. So the RAMs
        # carry yosys' `no_rw_check`: synthesis need not make collisions return the old data (a
        # delayed write, an address compare and a multiplexer on the read data, on a critical
        # path). `collision_new` (tests) makes the simulation return the new data instead: the
        # results are the same either way.
        accs = [Memory(shape=acc_shape, depth=n_in, init=[], attrs={"no_rw_check": 1}) for _ in range(n_out)]
        for n, a in enumerate(accs):
            m.submodules[f"acc{n}"] = a
        wps = [a.write_port() for a in accs]
        # (not transparent: the RAM output goes into a register before any logic, and the writes of
        # the two cycles a read misses are forwarded from registers, _accumulate)
        rps = [a.read_port(transparent_for=(w,) if self.collision_new else ()) for a, w in zip(accs, wps)]
        wr = SimpleNamespace(addr=Signal(range(n_in)), en=Signal(), data=Signal(word))
        rd = SimpleNamespace(addr=Signal(range(n_in)), data=Signal(word))
        rd_en_scan = Signal()     # a scan read (the accumulate's reads: on ir_isv, _input)
        for n in range(n_out):
            m.d.comb += [wps[n].addr.eq(wr.addr), wps[n].en.eq(wr.en), wps[n].data.eq(wr.data[n]),
                         rps[n].addr.eq(rd.addr), rd.data[n].eq(rps[n].data)]

        # ---- elaboration-time scan tables (ROMs): flat input list, per-group pe/row_base/size
        flat = [x for _, _, ins in self.groups for x in ins]
        m.submodules.mrom = mrom = Memory(shape=unsigned(_bits(n_in)), depth=len(flat), init=flat)
        mrd = mrom.read_port(domain="comb")
        ng = len(self.groups)
        m.submodules.grom = grom = Memory(
            shape=data.StructLayout({"pe": _bits(self.n_pe), "row_base": _bits(self.n_rows),
                                     "last_j": _bits(self.n_bl), "pen_j": _bits(self.n_bl)}),
            depth=ng, init=[{"pe": p, "row_base": r, "last_j": len(ins) - 1, "pen_j": max(len(ins) - 2, 0)}
                            for p, r, ins in self.groups])       # pen_j: last_j - 1 (unused for 1 input)
        grd = grom.read_port(domain="comb")
        grn = grom.read_port(domain="comb")     # the next group's (its size)
        s.acc_shape, s.word, s.rps, s.wr, s.rd, s.rd_en_scan = acc_shape, word, rps, wr, rd, rd_en_scan
        s.flat, s.ng, s.mrd, s.grd, s.grn = flat, ng, mrd, grd, grn

    def _input(self, m, s):
        """The runtime parameters' registers and the input register `ir` (with its decoded copies)."""
        n_out = self.n_out
        # ---- runtime parameters into registers (written while idle: they take effect a cycle later)
        prod_w = self.acc_bits + self.mult_bits + 1
        x_w = max(prod_w, (1 << self.shift_bits) - 1) + 1
        mult_r = Signal(unsigned(self.mult_bits))
        [mult_rh] = replicas(mult_r, 1, "mult_r")    # the second multiplier's own copy (as V's)
        sh_r = Signal(unsigned(self.shift_bits))
        rc_r = Signal(unsigned(x_w - 1))        # 2**(sh-1), 1 for sh = 0: see S2 -> S2a
        th1_r = Signal(unsigned(self.th_bits))  # max(th_code, 1): dI != 0 and |dI| >= th
        one_sh = Signal(unsigned(1 << self.shift_bits))
        m.d.comb += one_sh.eq(Const(1, 1) << self.shift)
        m.d.sync += [mult_r.eq(self.mult), mult_rh.eq(self.mult), sh_r.eq(self.shift),
                     rc_r.eq(Mux(self.shift == 0, 1, one_sh[1:])),
                     th1_r.eq(1 if self.rule == "sign" else Mux(self.th_code == 0, 1, self.th_code))]

        # ---- input register: the stream item is taken into `ir` and processed in the next cycle
        p = self.i.payload
        accept = self.i.valid & self.i.ready
        ir = Signal(self.in_layout, reset_less=True)
        ir_v = Signal()                           # ir holds a DELTA or V item
        ir_fin = Signal()                         # ir holds FINISH (i is not ready)
        m.d.sync += [ir_v.eq(accept & (p.op != Op.FINISH)), ir_fin.eq(accept & (p.op == Op.FINISH))]
        with m.If(accept):
            m.d.sync += ir.eq(p)
        ir_dsel = Signal(n_out)                   # ir holds the DELTA item of lane n (decoded on the way in)
        m.d.sync += ir_dsel.eq(Mux(accept & (p.op == Op.DELTA), Const(1, n_out) << p.index, 0))
        ir_isv = Signal()                         # ir holds a V item (decoded on the way in: RAM read enable)
        # and one copy per RAM for its read enable (rtl/replica.py)
        isv_dup = replicas(ir_isv, n_out, "ir_isv")
        m.d.sync += [v.eq(accept & (p.op == Op.V)) for v in [ir_isv, *isv_dup]]
        m.d.comb += [s.rps[n].en.eq(isv_dup[n] | s.rd_en_scan) for n in range(n_out)]
        # V's value, one copy per lane (rtl/replica.py): each multiplier's input register can sit
        # next to it (timing: one `ir` register fanned out to n_out multipliers across the die)
        vdup = replicas(Signal(self.v_bits), n_out, "vval")
        with m.If(accept):
            m.d.sync += [v.eq(p.value.as_unsigned()[:self.v_bits]) for v in vdup]
        s.prod_w, s.x_w, s.mult_r, s.mult_rh, s.sh_r, s.rc_r, s.th1_r = prod_w, x_w, mult_r, mult_rh, sh_r, rc_r, th1_r
        s.ir, s.ir_v, s.ir_fin, s.ir_dsel = ir, ir_v, ir_fin, ir_dsel
        s.ir_isv, s.isv_dup, s.vdup = ir_isv, isv_dup, vdup

    def _accumulate(self, m, s):
        """Deltas in registers, V -> products -> read (A1), RAM output register (A2), add + write (A3)."""
        n_in, n_out = self.n_in, self.n_out
        acc_shape, wr, rd, ir = s.acc_shape, s.wr, s.rd, s.ir
        # (data registers are reset-less: their valid flags are reset; every image sends all its deltas)
        delta = [Signal(signed(self.delta_bits), name=f"delta{n}", reset_less=True) for n in range(n_out)]
        vb = Signal()
        addr_b = Signal(range(n_in))
        prod_b = [Signal(signed(self.v_bits + 1 + self.delta_bits), name=f"prod_b{n}", reset_less=True)
                  for n in range(n_out)]
        m.d.sync += vb.eq(0)
        v3a = Signal()
        addr_3 = Signal(range(n_in))
        prod_3 = [Signal.like(prod_b[n], name=f"prod_3{n}") for n in range(n_out)]
        # the data written in the last cycle
        wl_d = [Signal(acc_shape, name=f"wl_d{n}", reset_less=True) for n in range(n_out)]
        # forward wl_d instead of acc_o: one copy per lane (rtl/replica.py), each selecting its
        # lane's acc_bits next to its RAM (timing: one flip-flop drove the whole word)
        sel1 = replicas(Signal(), n_out, "sel1")
        # acc_o: the accumulator word as read, or the write of the cycle before last to the same
        # address (which the read missed), chosen as it is registered (timing: only the forward of
        # the last write is left between the registers and the adder)
        acc_o = [Signal(acc_shape, name=f"acc_o{n}", reset_less=True) for n in range(n_out)]
        # ... with that choice's address compare a cycle earlier still (fwd2: the write of this
        # cycle goes to the V item in `ir`, which is in addr_b next cycle when vb is set; acc_o
        # only counts then): the RAM's clock-to-out is then followed by one LUT
        opnd = Signal(s.word)
        # (fwd2 in copies, one per lane group below)
        fwd2_dup = replicas(Signal(), len(self._lane_groups()), "fwd2")
        m.d.sync += [v3a.eq(vb), addr_3.eq(addr_b),
                     *[c.eq(v3a & (addr_3 == addr_b)) for c in sel1],
                     *[f.eq(wr.en & (wr.addr == ir.index)) for f in fwd2_dup]]
        # the lanes' registers are in submodules `lanes{g}` (a group of lanes each), so that under
        # a clock enable (the board core's tick) each can take its own copy of it (rtl/replica.py enable_groups)
        for g, (lo, hi) in enumerate(self._lane_groups()):
            m.submodules[f"lanes{g}"] = mg = Module()
            for n in range(lo, hi):
                mg.d.sync += [prod_3[n].eq(prod_b[n]), acc_o[n].eq(Mux(fwd2_dup[g], wl_d[n], rd.data[n])),
                              wl_d[n].eq(wr.data[n])]
                with mg.If(s.isv_dup[n]):
                    mg.d.sync += prod_b[n].eq(s.vdup[n] * delta[n])
                with mg.If(s.ir_dsel[n]):
                    mg.d.sync += delta[n].eq(ir.value)
        m.d.comb += [opnd[n].eq(Mux(sel1[n], wl_d[n], acc_o[n])) for n in range(n_out)]
        m.d.comb += [wr.addr.eq(addr_3), wr.en.eq(v3a)]
        for n in range(n_out):
            m.d.comb += wr.data[n].eq(opnd[n] + prod_3[n])
        s.vb, s.addr_b, s.v3a = vb, addr_b, v3a

    def _scan_signals(self, m, s):
        """The scan's counters (S0), the stages' valid / meta registers and data registers."""
        n_out, ng = self.n_out, s.ng
        s.images = Signal(range(self.max_batch + 2))
        s.fresh = Signal(init=1)

        # ---- scan pipeline (stall on output back-pressure)
        # the stages after S0 advance on `adv`, a register: its next value is computed from the
        # skid buffer's and the division's next state (_output)
        s.adv = adv = Signal(init=1)
        # and its copies (rtl/replica.py): N_ST for groups of the stages' registers, N_RD for
        # slices of the RAM output register (timing: `adv` enabled ~1,000 flip-flops)
        s.N_ST, s.N_RD = N_ST, N_RD = 4, min(2, n_out)
        s.adv_dup = replicas(adv, N_ST + N_RD, "adv")
        s.stall_div = Signal()                    # S6 holds a cell to divide whose quotient is not ready
        s.gi = gi = Signal(range(max(ng, 2)))
        s.k = k = Signal(range(max(len(s.flat), 2)))      # flat index of (gi, j)
        s.kstart = Signal.like(k)                 # flat index of (gi, 0)
        s.n0 = Signal(range(max(n_out, 2)))
        s.j0 = Signal(range(max(self.n_bl, 2)))
        s.s0_act = Signal()                       # S0 holds a pending entry (cell or end marker)
        s.s0_end = Signal()                       # ... which is the end marker
        s.s0_run = Signal()                       # SCAN, s0_act and not s0_end: S0 issues a cell
        # (gi, n0, j0) is at the last j of its group / the last n / in the last group: registered
        # flags, set one step ahead, so that the scan's enables do not wait for the ROM and compares
        j_last, n_last, g_last = Signal(), Signal(), Signal()
        s.j_last, s.n_last, s.g_last = j_last, n_last, g_last
        m.d.comb += [s.mrd.addr.eq(k), s.grd.addr.eq(gi), s.grn.addr.eq(gi + 1)]

        meta = data.StructLayout({"pe": _bits(self.n_pe), "row_pos": _bits(self.n_rows), "bl": _bits(self.n_bl),
                                  "m": _bits(self.n_in), "n": _bits(n_out), "end": 1})
        # stages after S0, each (valid, meta); see _scan
        s.stg = stg = ["1", "1a", "1b", "1c", "2", "2a", "2b", "3", "4", "5", "6"]
        s.V = {st: Signal(name=f"v{st}") for st in stg}
        s.MT = {st: Signal(meta, name=f"meta{st}", reset_less=True) for st in stg}
        s.v6, s.meta6 = s.V["6"], s.MT["6"]
        s.ovf = Signal()

        s.rdat = Signal(s.word, reset_less=True)  # registered RAM output (the scan)
        s.lane_r = Signal(s.acc_shape, reset_less=True)
        s.p_lo = Signal(unsigned(16 + self.mult_bits), reset_less=True)
        s.p_hi = Signal(signed(self.acc_bits - 16 + self.mult_bits + 1), reset_less=True)
        s.prod2 = Signal(signed(s.prod_w), reset_less=True)
        s.x2a = Signal(signed(s.x_w), reset_less=True)
        s.x2b = Signal(signed(s.x_w), reset_less=True)
        s.d3, s.d4, s.d5, s.d6 = (Signal(signed(self.d_bits), name=f"d{i}", reset_less=True) for i in (3, 4, 5, 6))
        s.a4, s.a5, s.a6 = (Signal(unsigned(self.d_bits), name=f"a{i}", reset_less=True) for i in (4, 5, 6))
        s.ge6 = Signal()
        # |dI| >= max(th, 1) in two parts (S5), or-ed in S6
        ge5_lo, nz5_hi = Signal(), Signal()
        s.ge5_lo, s.nz5_hi = ge5_lo, nz5_hi
        s.ge_d = ge_d = Signal(signed(self.th_bits + 1))
        m.d.comb += ge_d.eq(s.a4[:self.th_bits] - s.th1_r)

    def _clip(self, m, s):
        """Update clipping (golden.hybrid.clip_update): pass 1 finds max|dI| (no output), pass 2 scales
        every cell by clip / max (truncated) before the threshold, a restoring division per cell."""
        cb = self.clip_bits
        clip_r = Signal(unsigned(cb))
        pass1 = Signal()
        mx = Signal(unsigned(self.d_bits))
        clip_on = Signal()                        # pass 2, clip_r != 0 and mx > clip_r (mx is fixed then)
        m.d.sync += clip_on.eq(~pass1 & (clip_r != 0) & (mx > clip_r))
        nd6 = Signal()                            # S6 holds a cell to divide (pass 2 with clipping)
        # |dI| * clip in 16 x cb partial products (S5), summed in S6
        pc = [Signal(unsigned(16 + cb), name=f"pc{i}", reset_less=True) for i in range(-(-self.d_bits // 16))]
        rem6 = Signal(unsigned(self.d_bits + cb), reset_less=True)
        need_div = Signal()
        m.d.comb += need_div.eq(nd6)
        div_busy, div_done = Signal(), Signal()
        div_cnt = Signal(range(cb + 1))
        rem = Signal(unsigned(self.d_bits + cb))
        dvs = Signal(unsigned(self.d_bits + cb))
        q = Signal(unsigned(cb))
        with m.If(need_div & ~div_done & ~div_busy):
            m.d.sync += [rem.eq(rem6), dvs.eq(mx << (cb - 1)), q.eq(0), div_cnt.eq(0), div_busy.eq(1)]
        with m.If(div_busy):
            with m.If(rem >= dvs):
                m.d.sync += [rem.eq(rem - dvs), q.eq(Cat(Const(1, 1), q[:-1]))]
            with m.Else():
                m.d.sync += q.eq(Cat(Const(0, 1), q[:-1]))
            m.d.sync += [dvs.eq(dvs >> 1), div_cnt.eq(div_cnt + 1)]
            with m.If(div_cnt == cb - 1):
                m.d.sync += [div_busy.eq(0), div_done.eq(1)]
        dsel = Signal(signed(self.d_bits))
        m.d.comb += dsel.eq(Mux(need_div, Mux(s.d6 < 0, -q, q), s.d6))
        # |dsel| >= max(th, 1): q when divided (q >= 0), else |d6| (compared in S5 -> S6)
        s.keep = s.v6 & ~pass1 & (s.meta6.end | Mux(need_div, q >= s.th1_r, s.ge6))
        s.clip_r, s.pass1, s.mx, s.clip_on, s.nd6, s.pc, s.rem6 = clip_r, pass1, mx, clip_on, nd6, pc, rem6
        s.div_busy, s.div_done, s.div_cnt, s.dsel = div_busy, div_done, div_cnt, dsel

    def _output(self, m, s):
        """The output register and its skid buffer `sk`; the scan's advance `adv` (and copies)."""
        # the scan advances while the skid is empty (a register), so `o.ready` only reaches the
        # output registers, not the whole pipeline's enables
        meta6, cb = s.meta6, self.clip_bits
        push = Signal()                           # S6 -> out: a command or the end marker
        pdat = Signal(self.out_layout)
        sk_v = Signal()
        sk = Signal(self.out_layout)
        m.d.comb += [pdat.pe.eq(meta6.pe), pdat.row_pos.eq(meta6.row_pos), pdat.bl.eq(meta6.bl),
                     pdat.m.eq(meta6.m), pdat.n.eq(meta6.n), pdat.end.eq(meta6.end),
                     pdat.d_code.eq(Mux(meta6.end, 0, s.dsel)), pdat.overflow.eq(meta6.end & s.ovf)]
        o_free = ~self.o.valid | self.o.ready
        sk_v_nx, stall_nx = Signal(), Signal()
        m.d.comb += [sk_v_nx.eq(~o_free & (sk_v | push)), stall_nx.eq(s.stall_div)]
        with m.If(s.adv & s.V["5"] & ~s.MT["5"].end & s.clip_on):     # such a cell enters S6 (nd6)
            m.d.comb += stall_nx.eq(1)
        with m.If(s.div_busy & (s.div_cnt == cb - 1)):              # its quotient is ready (div_done)
            m.d.comb += stall_nx.eq(0)
        m.d.sync += [self.o.valid.eq(~o_free | sk_v | push), sk_v.eq(sk_v_nx), s.stall_div.eq(stall_nx),
                     *[a.eq(~sk_v_nx & ~stall_nx) for a in [s.adv, *s.adv_dup]]]
        with m.If(o_free):
            m.d.sync += self.o.payload.eq(Mux(sk_v, sk.as_value(), pdat.as_value()))
        with m.If(~sk_v):
            m.d.sync += sk.eq(pdat)
        s.push = push

    def _control(self, m, s):
        """The states CLEAR, ACCUM and DRAIN (SCAN: _scan)."""
        n_in, n_out, wr, ir = self.n_in, self.n_out, s.wr, s.ir
        # one-hot state registers (CLEAR -> ACCUM -> DRAIN -> SCAN [-> DRAIN -> SCAN] -> CLEAR): the
        # enables start at registers, not at a decoded state
        st_clear = Signal(init=1)
        st_accum, st_drain, st_scan = Signal(), Signal(), Signal()

        # CLEAR: zero the accumulators (also after reset)
        clr = Signal(range(max(n_in, 2)))
        with m.If(st_clear):
            m.d.comb += [wr.addr.eq(clr), wr.data.eq(0), wr.en.eq(1)]
            m.d.sync += clr.eq(clr + 1)
            with m.If(clr == n_in - 1):
                m.d.sync += [clr.eq(0), s.images.eq(0), s.fresh.eq(1), st_clear.eq(0), st_accum.eq(1)]

        # ACCUM: items only arrive (and reach `ir`) in this state
        m.d.comb += self.i.ready.eq(st_accum & ~s.ir_fin)
        m.d.comb += s.rd.addr.eq(Mux(st_scan, s.mrd.data, ir.index))
        with m.If(s.ir_v & (ir.op == Op.DELTA)):
            with m.If(s.fresh):
                m.d.sync += s.fresh.eq(0)
                with m.If(s.images <= self.max_batch):
                    m.d.sync += s.images.eq(s.images + 1)
        with m.If(s.ir_isv):
            m.d.sync += [s.vb.eq(1), s.addr_b.eq(ir.index), s.fresh.eq(1)]
        with m.If(s.ir_fin):
            clip = 0 if self.rule == "sign" else self.clip_code
            m.d.sync += [s.ovf.eq(s.images > self.max_batch), s.clip_r.eq(clip),
                         s.pass1.eq(clip != 0), s.mx.eq(0), st_accum.eq(0), st_drain.eq(1)]

        # DRAIN: the last items' writes land before the scan reads; (re)start the scan
        with m.If(st_drain):
            m.d.sync += [s.gi.eq(0), s.k.eq(0), s.kstart.eq(0), s.n0.eq(0), s.j0.eq(0), s.s0_act.eq(1),
                         s.s0_end.eq(0), s.j_last.eq(len(self.groups[0][2]) == 1), s.n_last.eq(n_out == 1),
                         s.g_last.eq(s.ng == 1)]
            with m.If(~s.vb & ~s.v3a):
                m.d.sync += [st_drain.eq(0), st_scan.eq(1), s.s0_run.eq(1)]
        s.st_clear, s.st_drain, s.st_scan = st_clear, st_drain, st_scan

    def _scan(self, m, s):
        """SCAN: S0 (the scan counters) in this state; the stages after it advance on `adv` alone
        (they hold nothing outside SCAN)."""
        n_out, ng, st_scan, adv, adv_dup = self.n_out, s.ng, s.st_scan, s.adv, s.adv_dup
        V, MT, stg, grd, k, gi, j0, n0 = s.V, s.MT, s.stg, s.grd, s.k, s.gi, s.j0, s.n0
        # rdat loads always, but only on `adv` in SCAN: per slice of lanes on its own copy of adv
        for r, (lo, hi) in enumerate(slices(n_out, s.N_RD)):
            with m.If(~st_scan | adv_dup[s.N_ST + r]):
                m.d.sync += [s.rdat[n].eq(s.rd.data[n]) for n in range(lo, hi)]
        with m.If(st_scan & adv):
            # S0 -> S1 (RAM read)
            m.d.sync += [V["1"].eq(s.s0_act), MT["1"].pe.eq(grd.data.pe),
                         MT["1"].row_pos.eq(grd.data.row_base + 2 * n0), MT["1"].bl.eq(j0),
                         MT["1"].m.eq(s.mrd.data), MT["1"].n.eq(n0), MT["1"].end.eq(s.s0_end)]
            with m.If(s.s0_end):
                m.d.sync += [MT["1"].pe.eq(0), MT["1"].row_pos.eq(0), MT["1"].bl.eq(0),
                             MT["1"].m.eq(0), MT["1"].n.eq(0), s.s0_act.eq(0)]
        with m.If(adv & s.s0_run):
            m.d.comb += s.rd_en_scan.eq(1)
            with m.If(~s.j_last):
                m.d.sync += [j0.eq(j0 + 1), k.eq(k + 1), s.j_last.eq(j0 == grd.data.pen_j)]
            with m.Elif(~s.n_last):
                m.d.sync += [j0.eq(0), n0.eq(n0 + 1), k.eq(s.kstart), s.j_last.eq(grd.data.last_j == 0),
                             s.n_last.eq(n0 == n_out - 2)]
            with m.Elif(~s.g_last):
                m.d.sync += [j0.eq(0), n0.eq(0), gi.eq(gi + 1), k.eq(k + 1), s.kstart.eq(k + 1),
                             s.j_last.eq(s.grn.data.last_j == 0), s.n_last.eq(n_out == 1),
                             s.g_last.eq(gi == ng - 2)]
            with m.Else():
                m.d.sync += [s.s0_end.eq(1), s.s0_run.eq(0)]
        # (the stages' registers in N_ST groups, each enabled by its own copy of adv)
        with m.If(adv_dup[0]):
            for a_, b_ in zip(stg[1:], stg[:-1]):
                m.d.sync += V[a_].eq(V[b_])
        with m.If(adv_dup[1]):
            for a_, b_ in zip(stg[1:], stg[:-1]):
                m.d.sync += MT[a_].eq(MT[b_])
        self._scan_datapath(m, s)
        with m.If(adv):
            # S6 -> out: threshold rule, drop zero updates
            m.d.comb += s.push.eq(s.keep)
            with m.If(s.div_done):
                m.d.sync += s.div_done.eq(0)
        with m.If(st_scan & adv):
            with m.If(s.pass1 & s.v6):
                with m.If(~s.meta6.end & (s.a6 > s.mx)):
                    m.d.sync += s.mx.eq(s.a6)
                with m.If(s.meta6.end):   # end of pass 1: scan again (from DRAIN), clipping
                    m.d.sync += [s.pass1.eq(0), st_scan.eq(0), s.st_drain.eq(1)]
        with m.If(st_scan & ~s.s0_act & ~Cat(*V.values()).any()):
            m.d.sync += [st_scan.eq(0), s.st_clear.eq(1)]

    def _scan_datapath(self, m, s):
        """The scan's data stages S1a .. S6: lane select, dI = -(acc * M) >> sh rounded, |dI|, the
        clipping's partial products and the threshold compare (on copies 2 and 3 of `adv`)."""
        MT, rdat, lane_r, p_lo, p_hi, prod2 = s.MT, s.rdat, s.lane_r, s.p_lo, s.p_hi, s.prod2
        x2a, x2b, d3, d4, d5, d6, a4, a5, a6, sh_r = s.x2a, s.x2b, s.d3, s.d4, s.d5, s.d6, s.a4, s.a5, s.a6, s.sh_r
        with m.If(s.adv_dup[2]):
            # S1 -> S1a: the RAM word into `rdat` (_scan)
            # S1a -> S1b: lane select
            m.d.sync += lane_r.eq(Mux(MT["1a"].end, 0, rdat[MT["1a"].n]))
            if self.rule == "sign":
                # S1b -> S1c: acc > 0, acc < 0; S1c -> S2: prod2 = sign(acc)
                pos_c, neg_c = Signal(), Signal()
                m.d.sync += [pos_c.eq(lane_r > 0), neg_c.eq(lane_r < 0), prod2.eq(Mux(pos_c, 1, Mux(neg_c, -1, 0)))]
            else:
                # S1b -> S1c: two 16-bit partial products (one DSP each, registered)
                m.d.sync += [p_lo.eq(lane_r[:16] * s.mult_r), p_hi.eq(lane_r[16:].as_signed() * s.mult_rh)]
                # S1c -> S2: product
                m.d.sync += prod2.eq((p_hi << 16) + p_lo)
        if self.rule == "sign":
            # S2 -> S2a -> S2b -> S3: d = -sign(acc), carried through the stages of the rounding shift
            with m.If(s.adv_dup[3]):
                m.d.sync += [x2a.eq(-prod2), x2b.eq(x2a), d3.eq(x2b)]
        with m.If(s.adv_dup[3]):
            # S2 -> S2a -> S2b -> S3: dI = -((prod + 2**(sh-1)) >> sh) = (~prod + rc) >> sh with
            # rc = 2**sh - 2**(sh-1) (-floor(y / 2**sh) = floor((-y + 2**sh - 1) / 2**sh)); the
            # shift in two steps of 3 bits (by 8 * sh[3:], then by sh[:3])
            if self.rule != "sign":
                m.d.sync += x2a.eq(~prod2 + s.rc_r)
                m.d.sync += x2b.eq(x2a >> Cat(Const(0, 3), sh_r[3:]))
                m.d.sync += d3.eq(x2b >> sh_r[:3])
            # S3 -> S4: |dI|
            m.d.sync += [d4.eq(d3), a4.eq(Mux(d3 < 0, -d3, d3))]
            # S4 -> S5: |dI| * clip partial products
            m.d.sync += [d5.eq(d4), a5.eq(a4), s.ge5_lo.eq(~s.ge_d[-1]), s.nz5_hi.eq(a4[self.th_bits:] != 0)]
            m.d.sync += [c.eq(a4[16 * i:16 * (i + 1)] * s.clip_r) for i, c in enumerate(s.pc)]
            # S5 -> S6: |dI| * clip, |dI| >= max(th, 1), a cell to divide (clip_on is fixed by then)
            m.d.sync += [d6.eq(d5), a6.eq(a5), s.ge6.eq(s.nz5_hi | s.ge5_lo),
                         s.nd6.eq(s.V["5"] & ~MT["5"].end & s.clip_on),
                         s.rem6.eq(sum(c << (16 * i) for i, c in enumerate(s.pc)))]

def default_instances():
    return {"update_engine": UpdateEngine()}
