"""Pair programmer: turns the update engine's commands into write-verify targets on the G+/G- pair.

Golden counterpart: golden.hybrid.PairProgrammer.apply in closed-loop mode (the rule is documented
there). Per command (pe, row_pos, bl, d_code):
  read c+ (row_pos) and c- (row_pos + 1) on the verify path (`rd_req` / `rd_rsp`);
  d > 0: lower G- ("down") and raise G+ ("up"); d < 0: the other way round;
  room_down = max(c_down - lo, 0), room_up = max(hi - c_up, 0) (0 for a blocked cell);
  a = min(|d|, room_down), b = min(|d| - a, room_up), moved between the two devices when a part
  is within the verify margin, parts <= margin dropped;
  write-verify commands: down -> c_down - a, then up -> c_up + b (`wv_cmd`).
A cell whose write-verify fails is blocked for good (`wv_res` is watched; one bit per cell).
The update engine's end-of-batch marker passes through on `done` once every command before it is
finished, so the host knows when an iteration's programming is over.

Open loop (Li 2018, golden mode "open"; `resolution` given): the "too small to program" tests use
golden PairProgrammer._resolution per read code instead of the verify margin: `resolution` =
(down, up), the largest integer part <= the resolution of a lowered (RESET) / raised (SET) device
at each code 0..2**code_bits-1 (elaboration data, rtl/open_loop.py `open_resolution`), looked up
from c_down / c_up; and the `wv_from` port carries the read code of the cell of each `wv_cmd` (the
open-loop unit counts its pulses from it). rtl/open_programmer.py composes it with rtl/open_loop.py.
"""
from types import SimpleNamespace

from amaranth.hdl import Array, C, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class PairProgrammer(wiring.Component):
    def __init__(self, cmd_layout, wv_cmd_layout, wv_res_layout, n_pe=8, n_rows=128, n_bl=16, code_bits=8,
                 lo=25, hi=200, margin=5, resolution=None):
        self.n_pe, self.n_rows, self.n_bl, self.code_bits = n_pe, n_rows, n_bl, code_bits
        self.lo, self.hi, self.margin = lo, hi, margin
        self.resolution = None if resolution is None else tuple(tuple(int(v) for v in t) for t in resolution)
        if self.resolution is not None and any(len(t) != 1 << code_bits for t in self.resolution):
            raise ValueError(f"resolution: two tables of {1 << code_bits} codes (down, up)")
        extra = {} if resolution is None else {"wv_from": Out(code_bits)}
        self.rd_layout = data.StructLayout({"pe": _bits(n_pe), "row": _bits(n_rows), "bl": _bits(n_bl)})
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout)),
            "rd_req": Out(stream.Signature(self.rd_layout)),
            "rd_rsp": In(stream.Signature(data.StructLayout({"code": code_bits}))),
            "wv_cmd": Out(stream.Signature(wv_cmd_layout)),
            "wv_res": In(wv_res_layout),       # observed (valid & ready) by the owner
            "wv_res_fire": In(1),
            "done": Out(stream.Signature(data.StructLayout({"overflow": 1}))),
            "busy": Out(1),
            **extra,
        })

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()       # the signals the sections below share
        # the state is one-hot, one flip-flop per state (timing: a binary state of 25 states
        # needed a 5-bit decode in front of every transition and register enable)
        names = ["IDLE", "READ_POS", "WAIT_POS", "READ_NEG", "WAIT_NEG", "ORIENT", "BLOCK_DOWN",
                 "BLOCK_UP", "BLOCK_WAIT", "SPLIT", "SPLIT_A", "SPLIT_R", "SPLIT_B", "SPLIT_S",
                 "SPLIT_K", "SPLIT_C", "SPLIT_T", "SPLIT_D", "SPLIT_E", "SPLIT_F", "PROG_DOWN",
                 "PROG_UP", "WAIT_WV", "DRAIN", "DONE"]
        s.c = Signal.like(self.cmd.payload)         # the command (loaded in IDLE)
        self._blocked(m, s)
        s.st = st = {n: Signal(init=(n == "IDLE"), name=f"st_{n.lower()}") for n in names}

        def goto(frm, to):
            m.d.sync += [st[frm].eq(0), st[to].eq(1)]
        s.goto = goto
        self._requests(m, s)
        self._read(m, s)
        self._split(m, s)
        self._program(m, s)
        return m

    def _cell_addr(self, pe, row, bl):
        return (pe * self.n_rows + row) * self.n_bl + bl

    def _blocked(self, m, s):
        """The blocked-cell RAM, written on failed write-verify results, and the count of this
        block's write-verify commands whose results are pending."""
        ncell = self.n_pe * self.n_rows * self.n_bl
        m.submodules.blocked = blk = Memory(shape=1, depth=ncell, init=[])
        blk_w = blk.write_port()
        # synchronous read (block RAM: a 16 K x 1 asynchronous LUT-RAM was a 10-level mux tree)
        blk_r = blk.read_port()
        # results of this block's own commands (host transfers share the sequencer but never run
        # at the same time as a training batch's programming: they are not counted or blocked)
        # write-verify commands issued, results not yet seen: at most 2 (a cell's down and up
        # commands; WAIT_WV waits for 0 before the next cell), so a 2-bit counter whose zero/one
        # tests are single LUTs (timing)
        pending = Signal(range(4))
        mine = Signal()
        m.d.comb += mine.eq(self.wv_res_fire & (pending != 0))
        # a failed write-verify blocks its cell
        # (registered: the result handshake comes from outside the block; a cycle later is safe,
        # the cell is read again only >= 4 states after its command's results; reset_less so that
        # a soft reset in between does not lose the write)
        r = self.wv_res
        blk_we = Signal(reset_less=True)
        blk_wa = Signal(range(ncell), reset_less=True)
        m.d.sync += [blk_we.eq(mine & ~r.ok), blk_wa.eq(self._cell_addr(r.pe, r.row, r.bl))]
        m.d.comb += [blk_w.en.eq(blk_we), blk_w.addr.eq(blk_wa), blk_w.data.eq(1)]
        # the blocked RAM's read address: a register loaded a state ahead (no state decode before
        # the RAM)
        blk_a = Signal(range(ncell))
        m.d.comb += blk_r.addr.eq(blk_a)
        with m.If(self.wv_cmd.valid & self.wv_cmd.ready & ~mine):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(~(self.wv_cmd.valid & self.wv_cmd.ready) & mine):
            m.d.sync += pending.eq(pending - 1)
        # WAIT_WV / DRAIN: every result seen (or the last one arriving now)
        s.settled = (pending == 0) | ((pending == 1) & mine)
        m.d.comb += self.busy.eq(pending != 0)
        s.blk_r, s.blk_a = blk_r, blk_a

    def _requests(self, m, s):
        """The outgoing requests and the handshakes, all registers."""
        c, st = s.c, s.st
        # the outgoing requests (verify reads, write-verify commands) are registers: valid and
        # payload do not depend on the state decode (timing: they cross the host bridge)
        rd_v = Signal()
        rd_row = Signal.like(c.row_pos)
        m.d.comb += [self.rd_req.valid.eq(rd_v), self.rd_req.payload.pe.eq(c.pe),
                     self.rd_req.payload.row.eq(rd_row), self.rd_req.payload.bl.eq(c.bl)]
        wv_v = Signal()
        wv_row = Signal.like(c.row_pos)
        wv_tgt = Signal(self.code_bits)
        m.d.comb += [self.wv_cmd.valid.eq(wv_v), self.wv_cmd.payload.pe.eq(c.pe),
                     self.wv_cmd.payload.row.eq(wv_row), self.wv_cmd.payload.bl.eq(c.bl),
                     self.wv_cmd.payload.target.eq(wv_tgt)]
        # the handshake signals towards the update engine and the host bridge (cmd.ready,
        # rd_rsp.ready, done.valid) are registers too: the IDLE and DONE state flip-flops, and
        # rsp_r set on entering the WAIT states
        rsp_r = Signal()
        m.d.comb += [self.cmd.ready.eq(st["IDLE"]), self.rd_rsp.ready.eq(rsp_r),
                     self.done.valid.eq(st["DONE"]), self.done.payload.overflow.eq(c.overflow)]
        s.rd_v, s.rd_row, s.wv_v, s.wv_row, s.wv_tgt, s.rsp_r = rd_v, rd_row, wv_v, wv_row, wv_tgt, rsp_r

    def _read(self, m, s):
        """IDLE .. BLOCK_WAIT: take a command, read c+ and c- on the verify path, orient the pair
        (down / up) and look up whether its cells are blocked."""
        cb, c, st, goto, rd_v, rd_row, rsp_r = self.code_bits, s.c, s.st, s.goto, s.rd_v, s.rd_row, s.rsp_r
        blk_r, blk_a = s.blk_r, s.blk_a
        cp = Signal(cb)
        cn = Signal(cb)
        # the command's row_pos + 1 and its end flag, registered at the command (the next states
        # use them without an adder in front)
        row_p1 = Signal.like(c.row_pos)
        with m.If(st["IDLE"] & self.cmd.valid):
            m.d.sync += [c.eq(self.cmd.payload), row_p1.eq(self.cmd.payload.row_pos + 1),
                         rd_row.eq(self.cmd.payload.row_pos)]
            with m.If(self.cmd.payload.end):
                goto("IDLE", "DRAIN")
            with m.Else():
                m.d.sync += rd_v.eq(1)
                goto("IDLE", "READ_POS")
        with m.If(st["READ_POS"] & self.rd_req.ready):
            m.d.sync += [rd_v.eq(0), rsp_r.eq(1)]
            goto("READ_POS", "WAIT_POS")
        with m.If(st["WAIT_POS"] & self.rd_rsp.valid):
            m.d.sync += [cp.eq(self.rd_rsp.payload.code), rd_v.eq(1), rd_row.eq(row_p1), rsp_r.eq(0)]
            goto("WAIT_POS", "READ_NEG")
        with m.If(st["READ_NEG"] & self.rd_req.ready):
            m.d.sync += [rd_v.eq(0), rsp_r.eq(1)]
            goto("READ_NEG", "WAIT_NEG")
        with m.If(st["WAIT_NEG"] & self.rd_rsp.valid):
            m.d.sync += [cn.eq(self.rd_rsp.payload.code), rsp_r.eq(0)]
            goto("WAIT_NEG", "ORIENT")
        # the command's orientation and |d|, registered every cycle from c (c is loaded in IDLE,
        # ORIENT comes >= 4 cycles later): ORIENT then only multiplexes registers (timing)
        need = Signal(unsigned(cb + 2))
        down_row = Signal.like(c.row_pos)
        up_row = Signal.like(c.row_pos)
        c_down = Signal(cb)
        c_up = Signal(cb)
        pos_d = Signal()
        need_c = Signal.like(need)
        absd = Mux(c.d_code < 0, -c.d_code, c.d_code)
        # |d| > 2**(cb+1) compared on d itself, in parallel with the negation (timing)
        big = (c.d_code > 2 ** (cb + 1)) | (c.d_code < -(2 ** (cb + 1)))
        # both rooms together are < 2**(cb+1): any larger need gives the same split
        m.d.sync += [pos_d.eq(c.d_code > 0), need_c.eq(Mux(big, 2 ** (cb + 1), absd))]
        with m.If(st["ORIENT"]):
            m.d.sync += [
                need.eq(need_c),
                down_row.eq(Mux(pos_d, row_p1, c.row_pos)),
                up_row.eq(Mux(pos_d, c.row_pos, row_p1)),
                c_down.eq(Mux(pos_d, cn, cp)), c_up.eq(Mux(pos_d, cp, cn)),
                blk_a.eq(self._cell_addr(c.pe, Mux(pos_d, row_p1, c.row_pos), c.bl)),
            ]
            goto("ORIENT", "BLOCK_DOWN")
        # blocked cells have no room (the blocked RAM's data comes a cycle after its address)
        bd = Signal()
        bu = Signal()
        with m.If(st["BLOCK_DOWN"]):
            m.d.sync += blk_a.eq(self._cell_addr(c.pe, up_row, c.bl))
            goto("BLOCK_DOWN", "BLOCK_UP")
        s.m_d = s.m_u = self.margin             # closed loop: the verify margin
        if self.resolution is not None:         # open loop: per-code tables, registered (c_down, c_up set in ORIENT)
            wb = max(1, max(max(t) for t in self.resolution).bit_length())
            s.m_d, s.m_u = Signal(wb, name="res_down"), Signal(wb, name="res_up")
            tab_d, tab_u = (Array(C(v, wb) for v in t) for t in self.resolution)
            with m.If(st["BLOCK_DOWN"]):
                m.d.sync += [s.m_d.eq(tab_d[c_down]), s.m_u.eq(tab_u[c_up])]
        with m.If(st["BLOCK_UP"]):
            m.d.sync += bd.eq(blk_r.data)
            goto("BLOCK_UP", "BLOCK_WAIT")
        with m.If(st["BLOCK_WAIT"]):
            m.d.sync += bu.eq(blk_r.data)
            goto("BLOCK_WAIT", "SPLIT")
        s.need, s.down_row, s.up_row, s.c_down, s.c_up, s.bd, s.bu = need, down_row, up_row, c_down, c_up, bd, bu

    def _split(self, m, s):
        """SPLIT .. SPLIT_E: the rooms and the split of |d| into a (down) and b (up), golden's rule."""
        cb, st, goto, need, c_down, c_up = self.code_bits, s.st, s.goto, s.need, s.c_down, s.c_up
        # the split runs over 9 states (one comparison or addition chain each, for timing; a few
        # cycles per cell next to the verify reads and programming pulses)
        room_d = Signal(signed(cb + 3))
        room_u = Signal(signed(cb + 3))
        a = Signal(signed(cb + 4))
        b = Signal(signed(cb + 4))
        a0 = Signal(signed(cb + 4))
        b0 = Signal(signed(cb + 4))
        a1 = Signal(signed(cb + 4))
        b1 = Signal(signed(cb + 4))
        a2 = Signal(signed(cb + 4))
        b2 = Signal(signed(cb + 4))
        with m.If(st["SPLIT"]):
            rd = Mux(s.bd | (c_down < self.lo), 0, c_down - self.lo)
            ru = Mux(s.bu | (c_up > self.hi), 0, self.hi - c_up)
            m.d.sync += [room_d.eq(rd), room_u.eq(ru)]
            goto("SPLIT", "SPLIT_A")
        rest = Signal(signed(cb + 4))
        with m.If(st["SPLIT_A"]):
            m.d.sync += a0.eq(Mux(need < room_d, need, room_d))
            goto("SPLIT_A", "SPLIT_R")
        with m.If(st["SPLIT_R"]):
            m.d.sync += rest.eq(need - a0)
            goto("SPLIT_R", "SPLIT_B")
        # a + b, its comparisons with the rooms and the small-part tests get states of their own
        # (timing): a + b is the same before and after SPLIT_C's move, so one sum serves SPLIT_C
        # and SPLIT_D
        ab = Signal(signed(cb + 4))
        a_small = Signal()
        with m.If(st["SPLIT_B"]):
            m.d.sync += b0.eq(Mux(rest < room_u, rest, room_u))
            goto("SPLIT_B", "SPLIT_S")
        with m.If(st["SPLIT_S"]):
            m.d.sync += [ab.eq(a0 + b0), a_small.eq((a0 > 0) & (a0 <= s.m_d))]
            goto("SPLIT_S", "SPLIT_K")
        ab_le_u = Signal()
        ab_le_d = Signal()
        # the final "part <= margin" tests as registers, computed as each candidate is (timing:
        # SPLIT_E's compare, multiplexer and state enable were one path)
        ab_le_m, a1_le_m, b1_le_m, a2_le_m, b2_le_m = (Signal(name=n) for n in
                                                       ("ab_le_m", "a1_le_m", "b1_le_m", "a2_le_m", "b2_le_m"))
        with m.If(st["SPLIT_K"]):
            m.d.sync += [ab_le_u.eq(ab <= room_u), ab_le_d.eq(ab <= room_d), ab_le_m.eq(ab <= s.m_d)]
            goto("SPLIT_K", "SPLIT_C")
        b_small = Signal()
        with m.If(st["SPLIT_C"]):
            # golden: if 0 < a <= res_d and a + b <= room_u: a, b = 0, a + b
            with m.If(a_small & ab_le_u):
                m.d.sync += [a1.eq(0), b1.eq(ab)]
            with m.Else():
                m.d.sync += [a1.eq(a0), b1.eq(b0)]
            goto("SPLIT_C", "SPLIT_T")
        with m.If(st["SPLIT_T"]):
            m.d.sync += [b_small.eq((b1 > 0) & (b1 <= s.m_u)),
                         a1_le_m.eq(a1 <= s.m_d), b1_le_m.eq(b1 <= s.m_u)]
            goto("SPLIT_T", "SPLIT_D")
        with m.If(st["SPLIT_D"]):
            # golden: if 0 < b <= res_u and a + b <= room_d: a, b = a + b, 0
            with m.If(b_small & ab_le_d):
                m.d.sync += [a2.eq(ab), b2.eq(0), a2_le_m.eq(ab_le_m), b2_le_m.eq(1)]   # golden: 0 <= res_u
            with m.Else():
                m.d.sync += [a2.eq(a1), b2.eq(b1), a2_le_m.eq(a1_le_m), b2_le_m.eq(b1_le_m)]
            goto("SPLIT_D", "SPLIT_E")
        with m.If(st["SPLIT_E"]):
            m.d.sync += [a.eq(Mux(a2_le_m, 0, a2)), b.eq(Mux(b2_le_m, 0, b2))]
            goto("SPLIT_E", "SPLIT_F")
        s.a, s.b = a, b

    def _program(self, m, s):
        """SPLIT_F .. DONE: the write-verify commands of the cell, the wait for their results, and
        the end-of-batch marker."""
        st, goto, wv_v, wv_row, wv_tgt = s.st, s.goto, s.wv_v, s.wv_row, s.wv_tgt
        # the write-verify commands: "down" (if a != 0) from PROG_DOWN, then "up" (if b != 0)
        # from PROG_UP, each loaded into the registered request on entering its state
        t_up = Signal(self.code_bits)
        b_nz = Signal()
        with m.If(st["SPLIT_F"]):
            m.d.sync += [wv_v.eq(s.a != 0), wv_row.eq(s.down_row), wv_tgt.eq(s.c_down - s.a),
                         t_up.eq(s.c_up + s.b), b_nz.eq(s.b != 0)]
            if self.resolution is not None:
                m.d.sync += self.wv_from.eq(s.c_down)
            goto("SPLIT_F", "PROG_DOWN")
        with m.If(st["PROG_DOWN"] & (~wv_v | self.wv_cmd.ready)):
            m.d.sync += [wv_v.eq(b_nz), wv_row.eq(s.up_row), wv_tgt.eq(t_up)]
            if self.resolution is not None:
                m.d.sync += self.wv_from.eq(s.c_up)
            goto("PROG_DOWN", "PROG_UP")
        with m.If(st["PROG_UP"] & (~wv_v | self.wv_cmd.ready)):
            m.d.sync += wv_v.eq(0)
            goto("PROG_UP", "WAIT_WV")
        # the next command's reads must see this one's programming: wait for its results
        with m.If(st["WAIT_WV"] & s.settled):
            goto("WAIT_WV", "IDLE")
        with m.If(st["DRAIN"] & s.settled):
            goto("DRAIN", "DONE")
        with m.If(st["DONE"] & self.done.ready):
            goto("DONE", "IDLE")
