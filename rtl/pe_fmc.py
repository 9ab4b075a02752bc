"""PE-board PHY: the 8 logical PE ports (rtl/pe_board.py) over one narrow bus on the FMC connector.

Why a PHY. A PE port is the macro core's full-rate interface: per clock cycle 23 signals go out
(BL enables, pulse, S&H, ADC start/bank/MUX select) and 257 come back (adc_valid and the 32 ADC
codes of 8 bits). Eight PEs are 2,240 signals; the ZC706's FMC HPC connector carries 68
single-ended LA lines (+ 4 M2C clock lines). So the controller cannot run at the port's rate over
the connector; it runs *ticked*: its `sync` logic is enabled (EnableInserter) once per tick, and
between two ticks this PHY moves one controller cycle's worth of PE traffic over the bus.

One tick (the controller is frozen in between, so its PE outputs are stable):

  CAPTURE  register every PE's outputs (the "down word" of that PE)
  WRITE    for each PE p and beat b: we=1, addr={p, b}, wdata = bits [b*DW, (b+1)*DW) of p's down word
  APPLY    apply=1 for one cycle: the board acts on the written words at once (BL drivers, pulse,
           S&H sample, start of conversions)
  WAIT     `ready_guard` cycles (the round trip of registered pins, so a `ready` left over from
           the previous tick is not taken), then until the board raises `ready` (its pulse and
           conversions are done; the board drops `ready` within a cycle of seeing `apply`)
  READ     for each PE that was *requested* (one of `request` members set in its down word, by
           default adc_start) and each beat b: re=1, addr={p, b}; the board answers each read, in
           order, with rvalid and rdata (any latency, pipelined); the answers fill p's "up word"
           (adc_valid, adc_codes, ... in signature order, the same packing as the down word)
  PRE      one cycle: the tick's flip-flops are loaded (a two-level tree, for timing)
  TICK     tick=1: the controller takes one step and from then on sees the new up words
           (PEs that were not requested read as all zeros: adc_valid = 0)

This preserves the port's cycle semantics (rtl/read_lane.py: codes of an adc_start at cycle t
arrive with adc_valid at t+1) at the tick rate. A tick takes 1 + n_pe*dn_beats + 1 + max(guard,
wait) + k*up_beats + latency + 2 cycles for k requested PEs: with the board top's registered pins
(ready_guard 4) and a board that answers at once, 17 cycles without conversions and ~38 with the
two lanes the Yao CNN converts on in parallel. The BL pulse width, S&H and ADC timing are
the board's (50 ns pulses in Yao 2020), not a number of ticks.

The packing is generic over the PE signature: a member added to rtl/pe_board.py (e.g. the
programming path) is carried without changing this file, with more beats if needed.
Pin-level mapping onto the FMC HPC LA lines: constraints/zc706.py.
"""
from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .pe_board import PEBoardSignature
from .replica import replicas, slices


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def port_widths(pe_sig: wiring.Signature) -> tuple[int, int]:
    """(down width, up width) of one PE port: sums of its Out / In member widths."""
    dn = sum(Shape.cast(m.shape).width for _, m in pe_sig.members.items() if m.flow == Out)
    up = sum(Shape.cast(m.shape).width for _, m in pe_sig.members.items() if m.flow == In)
    return dn, up


class FmcBusSignature(wiring.Signature):
    """The PE-board bus as the FPGA sees it (Out: FPGA -> board)."""

    def __init__(self, addr_bits=7, dn_width=24, up_width=32):
        super().__init__({
            "addr": Out(addr_bits),     # {pe, beat}: beat in the low bits
            "we": Out(1),
            "wdata": Out(dn_width),
            "apply": Out(1),
            "re": Out(1),
            "rdata": In(up_width),
            "rvalid": In(1),
            "ready": In(1),
        })


class PeFmcPhy(wiring.Component):
    """n_pe PE ports, plus optionally one auxiliary port `aux` of another signature (the board
    top's programming / verify-read channel, rtl/zc706_top.py: ProgPort) carried the same way as
    port number n_pe; `aux_request` names its members whose being set makes the PHY read its up
    word back. Each port writes / reads only its own number of beats."""

    def __init__(self, pe_sig: wiring.Signature | None = None, n_pe=8, dn_width=24, up_width=32,
                 request=("adc_start",), ready_guard=0, aux_sig: wiring.Signature | None = None, aux_request=(),
                 tick_copies=0):
        self.ready_guard = ready_guard
        self.tick_copies = tick_copies
        self.pe_sig = pe_sig or PEBoardSignature()
        self.aux_sig = aux_sig
        self.n_pe, self.dn_width, self.up_width = n_pe, dn_width, up_width
        self.request = [r for r in request if r in self.pe_sig.members]
        if not self.request:
            raise ValueError(f"none of the request members {request} is in the PE signature")
        self.aux_request = [r for r in aux_request if aux_sig is not None and r in aux_sig.members]
        if aux_sig is not None and not self.aux_request:
            raise ValueError(f"none of the aux request members {aux_request} is in the aux signature")
        self.dn_bits, self.up_bits = port_widths(self.pe_sig)
        self.dn_beats = _ceil(self.dn_bits, dn_width)
        self.up_beats = _ceil(self.up_bits, up_width)
        sigs = [self.pe_sig] * n_pe + ([aux_sig] if aux_sig is not None else [])
        self.port_beats = [(_ceil(max(1, port_widths(s)[0]), dn_width), _ceil(max(1, port_widths(s)[1]), up_width))
                           for s in sigs]
        self.n_ports = len(sigs)
        self.pe_bits = _bits(self.n_ports)
        self.beat_bits = _bits(max(max(d, u) for d, u in self.port_beats))
        self.addr_bits = self.pe_bits + self.beat_bits
        members = {
            # the controller's PE ports, seen from the other side
            "pe": In(self.pe_sig).array(n_pe),
            "fmc": Out(FmcBusSignature(self.addr_bits, dn_width, up_width)),
            "tick": Out(1),             # clock enable of the controller: one step
            "ticks": Out(32),           # ticks since reset
        }
        if tick_copies:
            # copies of `tick` (rtl/replica.py), one per group of far-apart enabled registers
            members["tick_dup"] = Out(tick_copies)
        if aux_sig is not None:
            members["aux"] = In(aux_sig)
        super().__init__(members)

    @staticmethod
    def _down(port, sig):
        return Cat(*[getattr(port, n) for n, m in sig.members.items() if m.flow == Out])

    @staticmethod
    def _up_members(port, sig):
        return [getattr(port, n) for n, m in sig.members.items() if m.flow == In]

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()       # the signals and tables the sections below share
        s.ports = [(self.pe[p], self.pe_sig, self.request) for p in range(self.n_pe)]
        if self.aux_sig is not None:
            s.ports.append((self.aux, self.aux_sig, self.aux_request))
        s.N = len(s.ports)
        s.DBs = [d for d, _ in self.port_beats]
        s.UBs = [u for _, u in self.port_beats]
        self._up_words(m, s)
        self._write_path(m, s)
        self._request_order(m, s)
        self._tick(m, s)
        self._fsm(m, s)
        return m

    def _up_words(self, m, s):
        """The up words: `up_next` filled by the READ phase, `up_cur` what the controller sees."""
        N, UW = s.N, self.up_width
        s.req = Signal(N)
        # (reset-less: APPLY clears them before any TICK copies them, and a clear that is not also a
        # reset is one flip-flop on their LSR, not a LUT of both)
        s.up_next = [Signal(s.UBs[p] * UW, name=f"up_next{p}", reset_less=True) for p in range(N)]
        s.up_cur = [Signal(s.UBs[p] * UW, name=f"up_cur{p}") for p in range(N)]
        for p, (port, sig, _) in enumerate(s.ports):
            m.d.comb += Cat(*self._up_members(port, sig)).eq(s.up_cur[p])

    def _write_path(self, m, s):
        """The down words: captured into `cap`, sent beat by beat through the shift register `dn_all`."""
        N, DBs, DW, fmc = s.N, s.DBs, self.dn_width, self.fmc
        # the write phase walks every port's down beats in order: the words are captured into `cap`
        # (data straight from the controller's PE outputs, the state only on the flip-flops' clock
        # enable: no multiplexer after the controller's logic) and leave through the shift register
        # `dn_all` (loaded from `cap` in the first WRITE cycle, which sends cap's first beat); the
        # bus address comes from a table indexed by a beat counter (no word multiplexer or per-port
        # compare between the captured words and the I/O registers)
        beats = [(p, b) for p in range(N) for b in range(DBs[p])]
        cap = Signal(len(beats) * DW)
        dn_all = Signal(len(beats) * DW)
        down = [cap[sum(DBs[:p]) * DW:sum(DBs[:p + 1]) * DW] for p in range(N)]
        # request flags of the captured words: position of each request member in the down word
        for p, (port, sig, request) in enumerate(s.ports):
            offs, pos = {}, 0
            for n, mem in sig.members.items():
                if mem.flow == Out:
                    offs[n] = pos
                    pos += len(getattr(port, n))
            m.d.comb += s.req[p].eq(Cat(*[down[p][offs[r]] for r in request]).any())
        s.last_up = Array(Const(u - 1, self.beat_bits) for u in s.UBs + [1])
        s.addr_tab = Array(Const(b | (p << self.beat_bits), len(fmc.addr)) for p, b in beats)
        s.wk = Signal(range(len(beats)))
        s.beats, s.cap, s.dn_all = beats, cap, dn_all

    def _request_order(self, m, s):
        """The read phase's pointers and the request order as registers."""
        N, UBs, req = s.N, s.UBs, s.req
        # read issue / capture pointers walk the requested PEs only
        s.ip = Signal(range(N + 1))
        s.ib = Signal(self.beat_bits)
        s.cp = Signal(range(N + 1))
        s.cb = Signal(self.beat_bits)

        def next_req(after):
            """First requested PE > after (N if none), as a priority chain."""
            r = Const(N, range(N + 1))
            for q in reversed(range(1, N)):     # (PE 0 is never after another)
                r = _mux(req[q] & (after < q), q, r, N)
            return r

        def first_req():
            r = Const(N, range(N + 1))
            for q in reversed(range(N)):
                r = _mux(req[q], q, r, N)
            return r

        # the request order as registers, computed every cycle from the captured request flags
        # (stable from the first WRITE cycle to the next CAPTURE; READ is >= 2 cycles later):
        # next requested PE after each q and the first one, so READ and APPLY index a table instead
        # of running a priority chain (timing)
        nreq = [Signal(range(N + 1), name=f"nreq{q}") for q in range(N)]
        nreq_end = Signal(N)      # nreq[q] == N
        freq = Signal(range(N + 1))
        m.d.sync += [freq.eq(first_req())]
        for q in range(N):
            m.d.sync += [nreq[q].eq(next_req(q)), nreq_end[q].eq(~(req >> (q + 1)).any())]
        s.nreq_a = Array(nreq + [Const(N, range(N + 1))])
        # the capture side's decisions as registers kept with its pointers (timing: the move to
        # TICK on the last answer is then rvalid and two flip-flops): cb_last = (cb is cp's last
        # beat), c_end = (no requested PE after cp); n_one[q] / n_end[q]: the same for nreq[q]
        # (registers from nreq, ready in WAIT)
        s.cb_last = Signal()
        s.c_end = Signal()
        one_beat = Array([Const(u == 1) for u in UBs] + [Const(1)])
        end_a = Array([nreq_end[q] for q in range(N)] + [Const(1)])
        n_one = Signal(N)
        n_end = Signal(N)
        for q in range(N):
            m.d.sync += [n_one[q].eq(one_beat[nreq[q]]), n_end[q].eq(end_a[nreq[q]])]
        # the capture pointers also one-hot (PE, beat): each up word's write enable is then one
        # LUT of flip-flops instead of a compare of {cp, cb} (timing)
        s.cpo = Signal(N)
        s.cbo = Signal(max(UBs))
        # nreq[q] one-hot, registered (ready in WAIT like n_one / n_end)
        nreq_oh = [Signal(N, name=f"nreq_oh{q}") for q in range(N)]
        m.d.sync += [nreq_oh[q].eq(self._dec(nreq[q], N)) for q in range(N)]
        s.nreq_end, s.freq, s.n_one, s.n_end, s.nreq_oh = nreq_end, freq, n_one, n_end, nreq_oh

    @staticmethod
    def _dec(x, N):
        return Cat(*[x == q for q in range(N)])

    def _tick(self, m, s):
        """The shift of `dn_all`, the tick and its copies, the loads of the up words."""
        N, UBs, DW, UW, cap, dn_all = s.N, s.UBs, self.dn_width, self.up_width, s.cap, s.dn_all
        s.guard = Signal(range(self.ready_guard + 2))
        s.w_first = w_first = Signal()      # the first WRITE cycle (sends from `cap`, loads `dn_all`)
        # the shift of `dn_all` (hundreds of flip-flops) in NDN slices, each enabled by its own copy
        # of "in WRITE" and selecting by its own copy of w_first (rtl/replica.py; timing: the FSM's
        # state decode and w_first each drove every bit)
        NDN = 4
        s.wr_dup = wr_dup = replicas(Signal(), NDN, "phy_writing")
        s.wf_dup = wf_dup = replicas(w_first, NDN, "phy_w_first")
        for k, (lo, hi) in enumerate(slices(len(dn_all), NDN)):
            with m.If(wr_dup[k]):
                m.d.sync += dn_all[lo:hi].eq((Mux(wf_dup[k], cap, dn_all) >> DW)[lo:hi])
        # the down word on the bus is only looked at with `we`: driven in every state (its I/O
        # register then needs no clear outside WRITE)
        m.d.comb += self.fmc.wdata.eq(Mux(w_first, cap[:DW], dn_all[:DW]))
        # `tick` enables every register of the controller: a flip-flop of its own (1 exactly in TICK)
        # instead of a decode of the state, so the clock enable's wide fan-out starts at a register
        tick_r = Signal(attrs={"keep": 1})   # (kept apart from its copies)
        tick_dup = replicas(tick_r, self.tick_copies, "tick")
        # more copies, internal: the load of the up words into up_cur (in TICK), one per half of
        # a port's words (`half`: port, word -> copy; a port's ~260 flip-flops spread too far)
        halves = [(p, lo, hi) for p in range(N) for lo, hi in slices(UBs[p], min(2, UBs[p]))]
        half = {(p, b): h for h, (p, lo, hi) in enumerate(halves) for b in range(lo, hi)}
        cur_ld = replicas(tick_r, len(halves), "phy_cur_ld")
        for h, (p, lo, hi) in enumerate(halves):
            with m.If(cur_ld[h]):
                m.d.sync += s.up_cur[p][lo * UW:hi * UW].eq(s.up_next[p][lo * UW:hi * UW])

        # the tick is decided a cycle ahead (state PRE): the decision sets a few `pre` flip-flops,
        # and each loads its share of tick_r and the copies, which can then sit next to their loads
        # (a two-level register tree: one net from the FSM to every copy was too slow)
        ticks_all = [tick_r, *tick_dup, *cur_ld]
        pre = replicas(Signal(), -(-len(ticks_all) // 8), "tick_pre")
        m.d.sync += [t.eq(pre[k * len(pre) // len(ticks_all)]) for k, t in enumerate(ticks_all)]

        def set_tick(v):        # tick = v in the cycle after the next
            m.d.sync += [t.eq(v) for t in pre]
        set_tick(0)
        s.set_tick = set_tick
        m.d.comb += self.tick.eq(tick_r)
        if tick_dup:
            m.d.comb += self.tick_dup.eq(Cat(*tick_dup))
        # each up word's clock enable is one LUT of flip-flops (timing): `apply_r` (1 exactly in
        # APPLY, which clears up_next) and `cwo`, the capture pointer one-hot over all up words
        # (cpo x cbo, nonzero only in READ), next to rvalid
        s.words = words = [(p, b) for p in range(N) for b in range(UBs[p])]
        s.apply_r = apply_r = replicas(Signal(), len(halves), "phy_apply")      # one per half port, as cur_ld
        s.cwo = cwo = Signal(len(words))
        m.d.sync += [a.eq(0) for a in apply_r]
        for k, (p, b) in enumerate(words):
            with m.If(apply_r[half[p, b]]):
                m.d.sync += s.up_next[p].word_select(b, UW).eq(0)
            with m.Elif(self.fmc.rvalid & cwo[k]):
                m.d.sync += s.up_next[p].word_select(b, UW).eq(self.fmc.rdata)

    def _fsm(self, m, s):
        """The tick's phases: CAPTURE, WRITE, APPLY, WAIT, READ, PRE, TICK (see the module docstring)."""
        N, UBs, DBs, DW, fmc = s.N, s.UBs, s.DBs, self.dn_width, self.fmc
        ip, ib, cp, cb, cpo, cbo, cwo, cb_last = s.ip, s.ib, s.cp, s.cb, s.cpo, s.cbo, s.cwo, s.cb_last
        wk, w_first, wr_dup, wf_dup, guard = s.wk, s.w_first, s.wr_dup, s.wf_dup, s.guard

        def sel(bits):      # bits[cp] as an AND-OR with the one-hot cpo (0 when cp == N)
            return (cpo & bits).any()

        def spread(pe_oh):      # one-hot PE -> one-hot word (the PE's first up word)
            return Cat(*[pe_oh[p] if b == 0 else Const(0) for p, b in s.words])
        with m.FSM():
            with m.State("CAPTURE"):
                dn_now = [Signal(DBs[p] * DW, name=f"dn_now{p}") for p in range(N)]
                for p, (port, sig, _) in enumerate(s.ports):
                    m.d.comb += dn_now[p].eq(self._down(port, sig))
                m.d.sync += [s.cap.eq(Cat(*dn_now)), wk.eq(0), w_first.eq(1)]
                m.d.sync += [f.eq(1) for f in wr_dup + wf_dup]
                m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += [fmc.we.eq(1), fmc.addr.eq(s.addr_tab[wk])]
                m.d.sync += [w_first.eq(0), *[f.eq(0) for f in wf_dup]]
                with m.If(wk == len(s.beats) - 1):
                    m.next = "APPLY"
                    m.d.sync += [f.eq(0) for f in wr_dup]
                    m.d.sync += [a.eq(1) for a in s.apply_r]
                with m.Else():
                    m.d.sync += wk.eq(wk + 1)
            with m.State("APPLY"):
                m.d.comb += fmc.apply.eq(1)
                m.d.sync += [ip.eq(s.freq), ib.eq(0), cp.eq(s.freq), cb.eq(0), guard.eq(self.ready_guard),
                             cpo.eq(self._dec(s.freq, N)), cbo.eq(1)]
                m.next = "WAIT"
            with m.State("WAIT"):
                # (cp is the first requested PE from APPLY on; WAIT lasts >= 1 cycle)
                m.d.sync += [cb_last.eq(sel(Cat(*[Const(u == 1) for u in UBs]))), s.c_end.eq(sel(s.nreq_end))]
                with m.If(guard != 0):
                    m.d.sync += guard.eq(guard - 1)
                with m.Elif(fmc.ready):
                    with m.If(cp == N):
                        m.next = "PRE"
                        s.set_tick(1)
                    with m.Else():
                        m.next = "READ"
                        m.d.sync += cwo.eq(spread(cpo))
            with m.State("READ"):
                # issue
                with m.If(ip != N):
                    m.d.comb += [fmc.re.eq(1), fmc.addr.eq(Cat(ib, ip[:self.pe_bits]))]
                    with m.If(ib == s.last_up[ip]):
                        m.d.sync += [ib.eq(0), ip.eq(s.nreq_a[ip])]
                    with m.Else():
                        m.d.sync += ib.eq(ib + 1)
                # capture, in issue order (cp != N throughout READ: READ is left on the last answer)
                with m.If(fmc.rvalid):
                    # (the word itself is captured on cwo, _tick)
                    with m.If(cb_last):
                        nxt_oh = Array(s.nreq_oh)[cp[:self.pe_bits]]
                        m.d.sync += [cb.eq(0), cp.eq(s.nreq_a[cp]), cpo.eq(nxt_oh), cbo.eq(1),
                                     cwo.eq(spread(nxt_oh)),
                                     cb_last.eq(sel(s.n_one)), s.c_end.eq(sel(s.n_end))]
                        with m.If(s.c_end):
                            m.next = "PRE"
                            s.set_tick(1)
                            m.d.sync += cwo.eq(0)
                    with m.Else():
                        # the next beat is cp's last: cbo's bit UBs[p] - 2 for the PE p of cpo
                        m.d.sync += [cb.eq(cb + 1), cbo.eq(cbo << 1), cwo.eq(cwo << 1),
                                     cb_last.eq(Cat(*[cpo[p] & cbo[u - 2] for p, u in enumerate(UBs) if u >= 2]).any())]
            with m.State("PRE"):
                m.next = "TICK"
            with m.State("TICK"):
                m.d.sync += self.ticks.eq(self.ticks + 1)      # (up_cur loads on cur_ld, _tick)
                m.next = "CAPTURE"

def _mux(c, a, b, n):
    return Mux(c, Const(a, range(n + 1)), b)


def default_instances():
    return {"pe_fmc_phy": PeFmcPhy()}
