"""Threshold update engine of hybrid training: FC gradient accumulation and programming commands.

Golden counterpart: golden.update (accumulate, weight_update, threshold, commands).

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

Accumulators: one word of `n_out` lanes per FC input m in block RAM (Memory, depth n_in, 10 x 32
bits = 320-bit words for the default). Width: |V * delta| <= 255 * 2**16 for any s17 delta (the
Q1.15 deltas p - onehot only span [-2**15, 2**15]), so `max_batch` images need
bit_length(max_batch * 255 * 2**16) + 1 bits: 32 bits for max_batch = 128 (Yao 2020: batch 100;
-128 * 255 * 2**16 = -2,139,095,040 >= -2**31). Within max_batch the sums are exact, so no
saturation logic is needed; beyond it the `overflow` flag of the end marker says so.
dI is carried at full width: |acc * M| < 2**(acc_bits + 16 - 1), so d_code is s(acc_bits + 16)
for any shift 0..63 (golden needs shift >= 1; shift 0 gives -acc*M here).

Update clipping (golden.hybrid.clip_update, the replicated groups' training): with `clip_code`
c != 0 at FINISH, a first scan (no output) finds mx = max |dI| over the mapped cells; if mx > c the
second scan replaces every dI by sign(dI) * ((|dI| * c) // mx) (a restoring division of clip_bits
cycles per cell) before the threshold rule; otherwise the commands are as without clipping.
(golden takes mx over the whole (n_in, n_out) update: the same when every FC weight is mapped.)

Timing. Accumulate: one stream item per cycle (n_out 8x17 multipliers in parallel, read-modify-
write over 2 cycles; the RAM read port is transparent for the write, so back-to-back items of the
same m are exact): n_out + n_in = 202 cycles per image at full rate. FINISH: the first command is
valid 6 cycles after the FINISH transfer, then one cell per cycle through a 6-stage pipeline (RAM
read, lane select, partial products, product, round + shift, threshold) stalled only by
back-pressure on `o`: the end marker follows 1926 cycles after FINISH (1920 cells); then `n_in`
cycles clear the accumulators (also after reset), `i` is ready again 2119 cycles after FINISH (no
back-pressure; 2117 measured before the two timing stages were added).
"""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


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
                 clip_bits: int = 8):
        if groups is None:
            groups, n_out = fc_groups()
        groups = [(int(p), int(r), tuple(int(x) for x in ins)) for p, r, ins in groups]
        if n_out is None:
            raise ValueError("n_out is required with an explicit group table")
        self.groups = sorted(groups, key=lambda g: (g[0], g[1]))  # golden.update.commands order
        self.n_out, self.n_pe, self.n_rows, self.n_bl = n_out, n_pe, n_rows, n_bl
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

    def elaborate(self, platform):
        m = Module()
        n_in, n_out = self.n_in, self.n_out
        acc_shape = signed(self.acc_bits)
        word = data.ArrayLayout(acc_shape, n_out)

        m.submodules.acc = acc = Memory(shape=word, depth=n_in, init=[])
        wr = acc.write_port()
        rd = acc.read_port(transparent_for=(wr,))
        m.d.comb += rd.en.eq(0)  # (the port's enable defaults to 1): reads only where asked below

        # ---- elaboration-time scan tables (ROMs): flat input list, per-group pe/row_base/size
        flat = [x for _, _, ins in self.groups for x in ins]
        m.submodules.mrom = mrom = Memory(shape=unsigned(_bits(n_in)), depth=len(flat), init=flat)
        mrd = mrom.read_port(domain="comb")
        ng = len(self.groups)
        m.submodules.grom = grom = Memory(
            shape=data.StructLayout({"pe": _bits(self.n_pe), "row_base": _bits(self.n_rows),
                                     "last_j": _bits(self.n_bl)}),
            depth=ng, init=[{"pe": p, "row_base": r, "last_j": len(ins) - 1} for p, r, ins in self.groups])
        grd = grom.read_port(domain="comb")

        p = self.i.payload
        accept = self.i.valid & self.i.ready

        # ---- accumulate: deltas in registers, V -> products -> read-modify-write of word m
        delta = [Signal(signed(self.delta_bits), name=f"delta{n}") for n in range(n_out)]
        vb = Signal()
        addr_b = Signal(range(n_in))
        prod_b = [Signal(signed(self.v_bits + 1 + self.delta_bits), name=f"prod_b{n}") for n in range(n_out)]
        vval = p.value.as_unsigned()[:self.v_bits]
        m.d.sync += vb.eq(0)

        images = Signal(range(self.max_batch + 2))
        fresh = Signal(init=1)

        # ---- scan pipeline (stall on output back-pressure)
        adv = Signal()
        adv_out = Signal()
        m.d.comb += adv_out.eq(~self.o.valid | self.o.ready)
        gi = Signal(range(max(ng, 2)))
        k = Signal(range(max(len(flat), 2)))      # flat index of (gi, j)
        kstart = Signal.like(k)                   # flat index of (gi, 0)
        n0 = Signal(range(max(n_out, 2)))
        j0 = Signal(range(max(self.n_bl, 2)))
        s0_act = Signal()                         # S0 holds a pending entry (cell or end marker)
        s0_end = Signal()                         # ... which is the end marker
        m.d.comb += [mrd.addr.eq(k), grd.addr.eq(gi)]

        meta = data.StructLayout({"pe": _bits(self.n_pe), "row_pos": _bits(self.n_rows), "bl": _bits(self.n_bl),
                                  "m": _bits(n_in), "n": _bits(n_out), "end": 1})
        v1, v2, v3 = Signal(), Signal(), Signal()
        meta1, meta2, meta3 = Signal(meta), Signal(meta), Signal(meta)
        prod_w = self.acc_bits + self.mult_bits + 1
        prod2 = Signal(signed(prod_w))
        d3 = Signal(signed(self.d_bits))
        ovf = Signal()

        lanes = rd.data  # ArrayLayout view
        lane = Signal(acc_shape)
        m.d.comb += lane.eq(lanes[meta1.n])
        v1b, meta1b, lane_r = Signal(), Signal(meta), Signal(acc_shape)
        v1c, meta1c = Signal(), Signal(meta)
        p_lo = Signal(unsigned(16 + self.mult_bits))
        p_hi = Signal(signed(self.acc_bits - 16 + self.mult_bits + 1))

        x_w = max(prod_w, (1 << self.shift_bits) - 1) + 1
        one_sh = Signal(unsigned(1 << self.shift_bits))
        m.d.comb += one_sh.eq(Const(1, 1) << self.shift)
        x = Signal(signed(x_w))
        m.d.comb += x.eq(prod2 + one_sh[1:])      # + 2**(sh-1) (0 for sh = 0)
        # update clipping (golden.hybrid.clip_update): pass 1 finds max|dI| (no output), pass 2 scales
        # every cell by clip / max (truncated) before the threshold, a restoring division per cell
        cb = self.clip_bits
        clip_r = Signal(unsigned(cb))
        pass1 = Signal()
        mx = Signal(unsigned(self.d_bits))
        d3abs = Signal(unsigned(self.d_bits))
        m.d.comb += d3abs.eq(Mux(d3 < 0, -d3, d3))
        need_div = Signal()
        m.d.comb += need_div.eq(v3 & ~meta3.end & ~pass1 & (clip_r != 0) & (mx > clip_r))
        div_busy, div_done = Signal(), Signal()
        div_cnt = Signal(range(cb + 1))
        rem = Signal(unsigned(self.d_bits + cb))
        dvs = Signal(unsigned(self.d_bits + cb))
        q = Signal(unsigned(cb))
        with m.If(need_div & ~div_done & ~div_busy):
            m.d.sync += [rem.eq(d3abs * clip_r), dvs.eq(mx << (cb - 1)), q.eq(0), div_cnt.eq(0), div_busy.eq(1)]
        with m.If(div_busy):
            with m.If(rem >= dvs):
                m.d.sync += [rem.eq(rem - dvs), q.eq(Cat(Const(1, 1), q[:-1]))]
            with m.Else():
                m.d.sync += q.eq(Cat(Const(0, 1), q[:-1]))
            m.d.sync += [dvs.eq(dvs >> 1), div_cnt.eq(div_cnt + 1)]
            with m.If(div_cnt == cb - 1):
                m.d.sync += [div_busy.eq(0), div_done.eq(1)]
        dsel = Signal(signed(self.d_bits))
        m.d.comb += dsel.eq(Mux(need_div, Mux(d3 < 0, -q, q), d3))
        dabs = Signal(unsigned(self.d_bits))
        m.d.comb += dabs.eq(Mux(dsel < 0, -dsel, dsel))
        keep = v3 & ~pass1 & (meta3.end | ((dsel != 0) & (dabs >= self.th_code)))
        m.d.comb += adv.eq(adv_out & ~(need_div & ~div_done))

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM(init="CLEAR"):
            with m.State("CLEAR"):
                clr = Signal(range(max(n_in, 2)))
                m.d.comb += [wr.addr.eq(clr), wr.data.eq(0), wr.en.eq(1)]
                m.d.sync += clr.eq(clr + 1)
                with m.If(clr == n_in - 1):
                    m.d.sync += [clr.eq(0), images.eq(0), fresh.eq(1)]
                    m.next = "ACCUM"

            with m.State("ACCUM"):
                m.d.comb += self.i.ready.eq(1)
                m.d.comb += [rd.addr.eq(p.index), wr.addr.eq(addr_b), wr.en.eq(vb)]
                for n in range(n_out):
                    m.d.comb += wr.data[n].eq(lanes[n] + prod_b[n])
                with m.If(accept):
                    with m.Switch(p.op):
                        with m.Case(Op.DELTA):
                            with m.Switch(p.index):
                                for n in range(n_out):
                                    with m.Case(n):
                                        m.d.sync += delta[n].eq(p.value)
                            with m.If(fresh):
                                m.d.sync += fresh.eq(0)
                                with m.If(images <= self.max_batch):
                                    m.d.sync += images.eq(images + 1)
                        with m.Case(Op.V):
                            m.d.comb += rd.en.eq(1)
                            m.d.sync += [vb.eq(1), addr_b.eq(p.index), fresh.eq(1)]
                            m.d.sync += [prod_b[n].eq(vval * delta[n]) for n in range(n_out)]
                        with m.Case(Op.FINISH):
                            m.d.sync += [gi.eq(0), k.eq(0), kstart.eq(0), n0.eq(0), j0.eq(0),
                                         s0_act.eq(1), s0_end.eq(0), ovf.eq(images > self.max_batch),
                                         clip_r.eq(self.clip_code), pass1.eq(self.clip_code != 0), mx.eq(0)]
                            m.next = "SCAN"

            with m.State("SCAN"):
                m.d.comb += rd.addr.eq(mrd.data)
                with m.If(adv):
                    m.d.comb += rd.en.eq(s0_act & ~s0_end)
                    # S0 -> S1
                    m.d.sync += [v1.eq(s0_act), meta1.pe.eq(grd.data.pe),
                                 meta1.row_pos.eq(grd.data.row_base + 2 * n0), meta1.bl.eq(j0),
                                 meta1.m.eq(mrd.data), meta1.n.eq(n0), meta1.end.eq(s0_end)]
                    with m.If(s0_end):
                        m.d.sync += [meta1.pe.eq(0), meta1.row_pos.eq(0), meta1.bl.eq(0), meta1.m.eq(0),
                                     meta1.n.eq(0), s0_act.eq(0)]
                    with m.Elif(s0_act):
                        with m.If(j0 != grd.data.last_j):
                            m.d.sync += [j0.eq(j0 + 1), k.eq(k + 1)]
                        with m.Elif(n0 != n_out - 1):
                            m.d.sync += [j0.eq(0), n0.eq(n0 + 1), k.eq(kstart)]
                        with m.Elif(gi != ng - 1):
                            m.d.sync += [j0.eq(0), n0.eq(0), gi.eq(gi + 1), k.eq(k + 1), kstart.eq(k + 1)]
                        with m.Else():
                            m.d.sync += s0_end.eq(1)
                    # S1 -> S1b: lane select (registered for timing: block RAM clock-to-out + a 10:1 mux)
                    m.d.sync += [v1b.eq(v1), meta1b.eq(meta1), lane_r.eq(Mux(meta1.end, 0, lane))]
                    # S1b -> S1c: two 16-bit partial products (one DSP each, registered)
                    m.d.sync += [v1c.eq(v1b), meta1c.eq(meta1b), p_lo.eq(lane_r[:16] * self.mult),
                                 p_hi.eq(lane_r[16:].as_signed() * self.mult)]
                    # S1c -> S2: product
                    m.d.sync += [v2.eq(v1c), meta2.eq(meta1c), prod2.eq((p_hi << 16) + p_lo)]
                    # S2 -> S3: round half up, arithmetic shift, negate
                    m.d.sync += [v3.eq(v2), meta3.eq(meta2), d3.eq(-(x >> self.shift))]
                    # S3 -> out: threshold rule, drop zero updates
                    m.d.sync += self.o.valid.eq(keep)
                    m.d.sync += [self.o.payload.pe.eq(meta3.pe), self.o.payload.row_pos.eq(meta3.row_pos),
                                 self.o.payload.bl.eq(meta3.bl), self.o.payload.m.eq(meta3.m),
                                 self.o.payload.n.eq(meta3.n), self.o.payload.end.eq(meta3.end),
                                 self.o.payload.d_code.eq(Mux(meta3.end, 0, dsel)),
                                 self.o.payload.overflow.eq(meta3.end & ovf)]
                    with m.If(div_done):
                        m.d.sync += div_done.eq(0)
                    with m.If(pass1 & v3):
                        with m.If(~meta3.end & (d3abs > mx)):
                            m.d.sync += mx.eq(d3abs)
                        with m.If(meta3.end):   # end of pass 1: scan again, clipping
                            m.d.sync += [gi.eq(0), k.eq(0), kstart.eq(0), n0.eq(0), j0.eq(0),
                                         s0_act.eq(1), s0_end.eq(0), pass1.eq(0)]
                with m.If(~s0_act & ~v1 & ~v1b & ~v1c & ~v2 & ~v3):
                    m.next = "CLEAR"
        return m


def default_instances():
    return {"update_engine": UpdateEngine()}
