"""Link layer of the host interface: frame decoder/encoder with CRC-32, duplicate suppression,
ack/nack, command decoder to the CSR bank and to the controller's command/response streams.

Protocol (frame format, commands, status codes, retry semantics): docs/link.md; the constants
come from rtl/protocol.py, the one description, from which rtl/hostgen.py generates the host's
sw/link_proto.py.

`Link` is the core: bytes in (`rx`) and out (`tx`), a CSR bus master (`csr`), the controller
streams `cmd` (payload words of STREAM commands, `last` on the final word) and `rsp` (the
controller's answer words, `last` on the final one). Three FSMs work in turn, handing over with
registered pulses/flags (the decoder and the encoder are components, `FrameDecoder` and
`FrameEncoder`; the executor is the Link's own logic):

    decoder  HUNT -> SYNC1 -> HDR (8 bytes) -> HCHK (2) -> PAYLOAD (into the rx buffer) -> CRC (4 bytes)
             -> WAIT (until the response has been sent); QUIET (ignore bytes until the line is idle)
    executor IDLE -> CHECK -> EXEC (command) -> FINISH (record the response) -> TX
                     `-> TX: replay of the recorded response (repeated frame)
                     `-> TX: NACK(CRC) (valid header, bad CRC; nothing recorded), NACK(TOO_LONG), STALE
    encoder  IDLE -> HDR -> HCHK -> HCHK2 -> PAY (tx buffer) -> CRC -> DONE

Timing (ECP5 ~100 MHz): the executor and the encoder are one-hot, bytes move through one-byte
registers each way (at most a byte per two cycles: the UART needs 10 x divisor), the buffers
are read synchronously (the encoder prefetches the next payload word), buffer writes, CSR bus
strobes, the cmd word, rsp words (an input register), counter increments and flags are
registered, and wide comparisons are registered flags. A command takes some cycles more than
with the single binary-encoded FSM before (nothing measurable at 10 x 868 cycles per UART byte):
PING copies a word per 5 cycles, the CSR checks take 3 cycles per address, a CSR read 4 per
register, a CSR write 6; STREAM sends a cmd word per 5 cycles at most and takes a rsp word per
2 cycles at most. Measured through the bypass ports (byte_out always ready), cycles from the
last byte in to the last byte out, before -> now: PING 64 B 95 -> 238, IDENTIFY 85 -> 181,
CSR_READ of 4 43 -> 91, CSR_WRITE of 1 18 -> 42.

Robustness. The decoder never parses a payload byte as a header: a header whose 16-bit HCHK
matches is consumed whole (LEN + CRC bytes; LEN above max_payload: counted off, then NACK
TOO_LONG); after a header whose HCHK fails, or a byte at a frame boundary that is not the sync,
it is QUIET until no byte came for `byte_timeout` cycles (the host is stop-and-wait: a frame's
bytes come back to back, a retry after a gap). A frame that stops arriving is abandoned after
`byte_timeout` idle cycles (dropped frame). Every error ends in HUNT, so no input sequence can
wedge it (tb/test_link.py checks this with hypothesis). Nothing of a frame is executed before its
CRC-32 has been checked: the payload waits in the rx buffer.

Duplicate suppression. After executing a frame the link records (SID, SEQ, CRC-32 of the frame)
and the response stays in the tx buffer; a frame with the same SID, SEQ *and* CRC is answered from
the record (dup_frames counter) and not executed again. A frame of the session whose SEQ is not
newer (at most 2^15 behind, mod 2^16), and a frame of another session that is not OPEN, are
answered STALE (dup_frames) without executing; OPEN makes its SID the session.

Streams. STREAM sends the payload words on `cmd` and, at the same time, collects `rsp` words
into the tx buffer until one with `last`; `stream_timeout` idle cycles without progress end the
command with TIMEOUT (the word on `cmd` is withdrawn: the host should then RESET the controller).
Words on `rsp` outside a STREAM command are discarded and counted (stream_discards).

Bytes. link_rx_bytes counts every byte the decoder takes (when it leaves the input register, so
a byte held there while a response is sent counts after it, as in sw/devmodel.py), link_tx_bytes
every byte that leaves on `tx`; both registered increments, cleared by RESET flag bit 1.

`LinkTop` = UART PHY + rx FIFO + Link + CsrBank over `build_map([link_block(), *blocks])`:
the controller top will instantiate it with its own register blocks and attach to `cmd`/`rsp`,
`soft_reset` and `ctrl_status`. With bypass=True it also has byte-stream ports that replace the
UART (selected by the `bypass` input) for fast co-simulation.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl import csr
from rtl.onehot import OneHotFSM, any_of
from rtl.uart import Uart
from rtl.protocol import (COUNTERS, CRC_POLY, FLAG_BITS, ID_MAGIC, LINK_VERSION, RESET_COUNTERS, RESET_FLAGS_MASK,
                          RESPONSE, SYNC, Cmd, Status)

WORD = data.StructLayout({"data": 32, "last": 1})


# ------------------------------------------------------------------ registers of the link block

class Id(csr.Register, access="ro", const=True, reset=ID_MAGIC):
    "ID magic 0x4D434E4E ('MCNN')."


class Version(csr.Register, access="ro", const=True, reset=LINK_VERSION):
    "Link protocol version, major << 16 | minor."


class MapHash(csr.Register, access="ro", const=True):
    "CRC-32 of the CSR map (names, addresses, widths, access); equals sw/csr_map.MAP_HASH."


class NPe(csr.Register, access="ro", const=True, width=8):
    "Number of processing elements (memristor arrays)."


class Rows(csr.Register, access="ro", const=True, width=16):
    "Word/source lines per PE array."


class Bls(csr.Register, access="ro", const=True, width=16):
    "Bit lines per PE array."


class InputBits(csr.Register, access="ro", const=True, width=8):
    "Bits of an input activation (bit-serial slots)."


class AdcBits(csr.Register, access="ro", const=True, width=8):
    "ADC resolution in bits."


class MaxPayload(csr.Register, access="ro", const=True, width=16):
    "Largest command payload in bytes (rx buffer)."


class MaxResponse(csr.Register, access="ro", const=True, width=16):
    "Largest response payload in bytes (tx buffer)."


class Scratch(csr.Register, access="rw"):
    "Free register for the host (link tests)."


class CtrlStatus(csr.Register, access="ro"):
    "Status word of the controller (0 until a controller drives it)."


class Flags(csr.Register, access="w1c", width=len(FLAG_BITS)):
    ("Sticky link events, write 1 to clear: 0 crc_error, 1 framing_error, 2 dropped_frame, 3 dup_frame, "
     "4 stream_timeout, 5 stream_overflow, 6 uart_break, 7 stream_discard.")


class CrcErrors(csr.Register, access="ro"):
    "Frames with a valid header and a wrong CRC-32 (each answered with NACK CRC)."


class FramingErrors(csr.Register, access="ro"):
    "Header check (HCHK) mismatches, UART stop-bit errors and breaks."


class DroppedFrames(csr.Register, access="ro"):
    "Frames abandoned: inter-byte timeout, LEN above max_payload, UART overrun."


class DupFrames(csr.Register, access="ro"):
    "Frames not executed as repeats: replayed from the record, or answered STALE (older, another session's)."


class Executed(csr.Register, access="ro"):
    "Frames executed (valid CRC, not a repeat), any status."


class StreamDiscards(csr.Register, access="ro"):
    "Controller response words received outside a STREAM command and discarded."


class RxBytes(csr.Register, access="ro"):
    "Bytes the link took in (every byte from the PHY, garbage included), 32-bit, wrapping."


class TxBytes(csr.Register, access="ro"):
    "Bytes the link sent (responses, NACKs, replays), 32-bit, wrapping."


class ByteTimeout(csr.Register, access="rw"):
    ("Inter-byte timeout in clock cycles: a frame that stops arriving is abandoned after it; after a bad "
     "header the link ignores bytes until the line has been idle this long.")


class StreamTimeout(csr.Register, access="rw"):
    "Cycles without progress after which a STREAM command ends with TIMEOUT."


def link_block(n_pe=8, rows=128, bls=16, input_bits=8, adc_bits=8, max_payload=1024, max_response=1024,
               byte_timeout=100 * 10 * 868, stream_timeout=1 << 24) -> csr.Block:
    """The link/identity register block (always the first block of the map, at address 0).
    MapHash is filled in by LinkTop once the whole map is known."""
    regs = [Id(), Version(), MapHash(), NPe(reset=n_pe), Rows(reset=rows), Bls(reset=bls),
            InputBits(reset=input_bits), AdcBits(reset=adc_bits), MaxPayload(reset=max_payload),
            MaxResponse(reset=max_response), Scratch(),
            CtrlStatus(), Flags(), CrcErrors(), FramingErrors(), DroppedFrames(), DupFrames(), Executed(),
            StreamDiscards(), ByteTimeout(reset=byte_timeout), StreamTimeout(reset=stream_timeout), RxBytes(),
            TxBytes()]
    return csr.Block("link", regs, doc="link layer and identity",
                     windows={"identify": ("id", "max_response"), "status": ("ctrl_status", "stream_discards")})


def with_map_hash(blocks) -> csr.CsrMap:
    """build_map, then set link_map_hash's constant to the map's hash (which excludes resets)."""
    cmap = csr.build_map(blocks)
    cmap["link_map_hash"].reg.reset = cmap.hash
    return cmap


# ------------------------------------------------------------------ CRC-32 in RTL

def _crc32_byte_matrix():
    """For each bit of the next CRC register: (mask of CRC bits, mask of byte bits) whose XOR it is."""
    c = [(1 << i, 0) for i in range(32)]          # bit i of the register as (crc mask, byte mask)
    for i in range(8):
        fb = (c[0][0], c[0][1] ^ (1 << i))
        c = [(c[j + 1][0] if j < 31 else 0, c[j + 1][1] if j < 31 else 0) for j in range(32)]
        c = [(c[j][0] ^ fb[0], c[j][1] ^ fb[1]) if (CRC_POLY >> j) & 1 else c[j] for j in range(32)]
    return c


_CRC_MATRIX = _crc32_byte_matrix()


def crc32_byte(m, crc, byte):
    """Next CRC-32 register (reflected, poly 0xEDB88320; init/final inversion outside) after `byte`:
    a comb Signal, each bit one flat XOR of the register and byte bits it depends on (a balanced
    tree, 2-3 LUT levels, instead of eight chained bit steps)."""
    nxt = Signal(32, name="crc_next")
    for j, (cm, bm) in enumerate(_CRC_MATRIX):
        bits = [crc[i] for i in range(32) if (cm >> i) & 1] + [byte[i] for i in range(8) if (bm >> i) & 1]
        x = bits[0]
        for bit in bits[1:]:
            x = x ^ bit
        m.d.comb += nxt[j].eq(x)
    return nxt


# ------------------------------------------------------------------ the link core

def from_ns(ns, names: str) -> list:
    """The values `names` (space-separated) of `ns`, the namespace the sections of an elaborate share."""
    return [getattr(ns, n) for n in names.split()]


class _Load:
    """Registers loaded from several places of mutually exclusive FSM branches: `load(*values)`
    marks the branch being written; `finish()` makes each register an AND-OR of the values (one
    short mux instead of a priority chain of one mux per place)."""

    def __init__(self, m, name, targets):
        self.m, self.name, self.targets, self.terms = m, name, targets, []

    def load(self, *values):
        g = Signal(name=f"ld_{self.name}{len(self.terms)}")
        self.m.d.comb += g.eq(1)
        self.terms.append((g, values))

    def finish(self):
        with self.m.If(any_of(g for g, _ in self.terms)):
            for k, t in enumerate(self.targets):
                v = Const(0, len(t))
                for g, values in self.terms:
                    val = values[k]
                    if isinstance(val, int) and val == 0:
                        continue
                    v = v | (g.replicate(len(t)) & val)
                self.m.d.sync += t.eq(v)


class Link(wiring.Component):
    def __init__(self, max_payload: int = 1024, max_response: int = 1024, addr_width: int = 5,
                 map_size: int = 32, identify=(0, 10), status=(11, 8)):
        if max_payload % 4 or max_response % 4 or not (4 <= max_payload <= 0xFFFC) or not (4 <= max_response <= 0xFFFC):
            raise ValueError("max_payload / max_response: multiples of 4 in 4..65532")
        self.max_payload, self.max_response = max_payload, max_response
        self.map_size = map_size
        self.identify, self.status = identify, status
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "csr": Out(csr.CsrBus(addr_width)),
            "cmd": Out(stream.Signature(WORD)),
            "rsp": In(stream.Signature(WORD)),
            "byte_timeout": In(32),
            "stream_timeout": In(32),
            # PHY events (pulses), counted here
            "phy_framing_error": In(1),
            "phy_break": In(1),
            "phy_overrun": In(1),
            "soft_reset": Out(1),
            "idle": Out(1),
            "flags_set": Out(len(FLAG_BITS)),
            **{c: Out(32) for c in COUNTERS},
        })

    def elaborate(self, platform):
        # Timing structure: three small FSMs instead of one -- the decoder (FrameDecoder), the
        # command executor ("main", here) and the encoder (FrameEncoder) -- and every path between them, to the
        # buffers, to the CSR bus and to the byte streams starts at a register:
        #   * bytes in through a one-byte register (`ib`, ready = ~iv), bytes out from one (`ob`):
        #     at most one byte per two cycles each way, the CRCs are fed from these registers;
        #   * both buffers are read synchronously into a register (3 cycles from the address);
        #     the encoder prefetches the next payload word while it sends the current one;
        #   * buffer writes, CSR bus strobes/data, the `cmd` word, the `rsp` word (input register),
        #     counter increments and flags are registered; wide comparisons (CRC, length, command
        #     checks, timeouts) are registered flags, computed while the FSMs wait anyway (a loop
        #     state is entered only once the flags of the registers it changed have settled);
        #   * registers loaded in several branches are AND-OR loads (`_Load`), not priority chains.
        m = Module()
        rxw, txw = self.max_payload // 4, self.max_response // 4
        m.submodules.rxbuf = rxbuf = Memory(shape=32, depth=rxw, init=[])
        m.submodules.txbuf = txbuf = Memory(shape=32, depth=txw, init=[])
        rx_wr = rxbuf.write_port(granularity=8)
        rx_rd = rxbuf.read_port()
        tx_wr = txbuf.write_port()
        tx_rd = txbuf.read_port()
        aw = len(self.csr.addr)

        # the sections below share their signals through `ns`: each takes what it uses from the
        # earlier ones and exports what the later ones use
        ns = SimpleNamespace()
        vars(ns).update(aw=aw, rx_rd=rx_rd, rx_wr=rx_wr, rxw=rxw, tx_rd=tx_rd, tx_wr=tx_wr, txw=txw)
        self._counters(m, ns)
        self._buffers(m, ns)
        self._decoder(m, ns)
        self._executor_regs(m, ns)
        self._command_checks(m, ns)
        self._executor(m, ns)
        self._executor_csr(m, ns)
        self._executor_stream(m, ns)
        # the encoder: a response frame from the executor's registers and the tx buffer
        m.submodules.encoder = enc = FrameEncoder(txw)
        wiring.connect(m, enc.tx, wiring.flipped(self.tx))
        m.d.comb += [enc.go.eq(ns.tgo), enc.seq.eq(ns.seq), enc.sid.eq(ns.sid), enc.code.eq(ns.code),
                     enc.status.eq(ns.t_status), enc.length.eq(ns.t_len),
                     ns.tdone.eq(enc.done), tx_rd.addr.eq(enc.rd_addr), enc.rd_data.eq(tx_rd.data)]
        return m

    def _counters(self, m, ns):
        """Event counters (increments registered, then added) and sticky flags; `count_event`."""
        # ---- event counters and flags: increments registered, then added
        inc = {c: Signal(name=f"inc_{c}") for c in COUNTERS}
        flag = {n: Signal(name=f"flag_{n}") for n in FLAG_BITS}
        clear_counters = Signal()
        # the counters are reset-less and cleared by clear_r, which is 1 in reset (its init): their
        # LSR is then one flip-flop, not a LUT of the reset and the clear (timing)
        clear_r = Signal(init=1)
        m.d.comb += [flag["framing_error"].eq(self.phy_framing_error), flag["dropped_frame"].eq(self.phy_overrun),
                     flag["uart_break"].eq(self.phy_break)]
        m.d.sync += [self.flags_set.eq(Cat(*flag.values())), clear_r.eq(clear_counters)]
        m.d.comb += inc["tx_bytes"].eq(self.tx.valid & self.tx.ready)    # (rx_bytes: the decoder's `took`)
        for c in COUNTERS:
            amt = Signal(2, name=f"amt_{c}")
            extra = 0
            if c == "framing_errors":
                extra = self.phy_framing_error + self.phy_break
            elif c == "dropped_frames":
                extra = self.phy_overrun
            m.d.sync += amt.eq(inc[c] + extra)
            cnt = Signal.like(getattr(self, c), name=f"cnt_{c}", reset_less=True)
            m.d.comb += getattr(self, c).eq(cnt)
            with m.If(clear_r):
                m.d.sync += cnt.eq(0)
            with m.Else():
                m.d.sync += cnt.eq(cnt + amt)

        def count_event(counter, flag_name):
            m.d.comb += [inc[counter].eq(1), flag[flag_name].eq(1)]
        vars(ns).update(clear_counters=clear_counters, count_event=count_event, flag=flag, inc=inc)

    def _buffers(self, m, ns):
        """The rx buffer's synchronous word read (`rx_read`), the tx buffer's registered word writes
        (`tx_write`)."""
        rx_rd, rxw, tx_wr, txw = from_ns(ns, "rx_rd rxw tx_wr txw")
        # ---- rx buffer: registered byte writes; synchronous read of word `ra` into `rwd`
        ra = Signal(range(rxw))
        rq = Signal()                       # a read was issued (ra set) last cycle
        r1 = Signal()
        rdok = Signal()                     # rwd holds rxbuf[ra]
        rwd = Signal(32)
        m.d.comb += rx_rd.addr.eq(ra)
        m.d.sync += [rq.eq(0), r1.eq(rq), rwd.eq(rx_rd.data)]
        with m.If(r1):
            m.d.sync += rdok.eq(1)

        def rx_read(word):
            m.d.sync += [ra.eq(word), rq.eq(1), rdok.eq(0)]

        # ---- tx buffer: registered word writes
        twe = Signal()
        twa = Signal(range(txw))
        twd = Signal(32)
        m.d.sync += twe.eq(0)
        m.d.comb += [tx_wr.addr.eq(twa), tx_wr.data.eq(twd), tx_wr.en.eq(twe)]

        def tx_write(word, value):
            m.d.sync += [twe.eq(1), twa.eq(word), twd.eq(value)]
        vars(ns).update(rdok=rdok, rwd=rwd, rx_read=rx_read, tx_write=tx_write)

    def _decoder(self, m, ns):
        """The request frame decoder (FrameDecoder) and its events."""
        count_event, rx_wr, rxw = from_ns(ns, "count_event rx_wr rxw")
        m.submodules.decoder = dec = FrameDecoder(rxw, self.max_payload)
        wiring.connect(m, wiring.flipped(self.rx), dec.rx)
        resume = Signal()     # executor -> decoder: response sent, hunt for the next frame
        m.d.comb += [dec.byte_timeout.eq(self.byte_timeout), dec.resume.eq(resume), self.idle.eq(dec.idle),
                     ns.inc["rx_bytes"].eq(dec.took),
                     rx_wr.addr.eq(dec.wr_addr), rx_wr.data.eq(dec.wr_byte.replicate(4)), rx_wr.en.eq(dec.wr_en)]
        with m.If(dec.framing_error):
            count_event("framing_errors", "framing_error")
        with m.If(dec.dropped_frame):
            count_event("dropped_frames", "dropped_frame")
        vars(ns).update(seq=dec.seq, sid=dec.sid, code=dec.code, length=dec.length, w0r=dec.w0, rcrc=dec.rcrc,
                        crc=dec.crc, rx_pend=dec.pend, rx_long=dec.oversize, rx_taken=dec.taken, resume=resume)

    def _executor_regs(self, m, ns):
        """Executor registers: replay record, response being sent, burst counters, STREAM timer, CSR bus and
        cmd word registers, and the registered flags of the loops."""
        aw, code, crc, rcrc, seq, sid = from_ns(ns, "aw code crc rcrc seq sid")
        # ---- executor state
        # replay record (the session's newest executed frame) and the response being sent
        rec_valid = Signal()
        rec_sid = Signal(16)  # the session: SID of the last executed frame (0 after reset)
        rec_seq = Signal(16)
        rec_crc = Signal(32)
        rec_status = Signal(8)
        rec_len = Signal(16)
        t_status = Signal(8)
        t_len = Signal(16)
        res_status = Signal(8)
        res_len = Signal(16)
        tgo = Signal()        # executor -> encoder: send (t_status, t_len) for the decoder's frame
        tdone = Signal()      # encoder -> executor: the last byte has left
        # command execution
        addr = Signal(17)
        cur = Signal(17)      # addr + idx: the CSR bus address
        count = Signal(16)
        idx = Signal(16)
        sidx = Signal(16)
        ridx = Signal(16)
        rsp_done = Signal()
        overflow = Signal()
        cf = Signal()         # STREAM: a cmd word is being fetched from the rx buffer
        sl = Signal()         # STREAM: sidx changed last cycle
        m.d.sync += sl.eq(0)
        stimer = Signal(32)
        st_to = Signal()
        prog = Signal()       # STREAM progress this cycle (restarts the timeout)
        # stimer >= stream_timeout in two registered halves; st_to ignores them for two cycles after
        # progress (they still describe the timer before its restart)
        st_hi_gt = Signal()
        st_hi_eq = Signal()
        st_lo_ge = Signal()
        prog_d = Signal()
        m.d.sync += [st_hi_gt.eq(stimer[16:] > self.stream_timeout[16:]),
                     st_hi_eq.eq(stimer[16:] == self.stream_timeout[16:]),
                     st_lo_ge.eq(stimer[:16] >= self.stream_timeout[:16]), prog_d.eq(prog),
                     stimer.eq(stimer + 1), st_to.eq((st_hi_gt | (st_hi_eq & st_lo_ge)) & ~prog & ~prog_d)]
        with m.If(prog):
            m.d.sync += stimer.eq(0)

        # CSR bus from registers
        b_rstb = Signal()
        b_wstb = Signal()
        b_wdata = Signal(32)
        m.d.sync += [b_rstb.eq(0), b_wstb.eq(0)]
        m.d.comb += [self.csr.addr.eq(cur[:aw]), self.csr.r_stb.eq(b_rstb), self.csr.w_stb.eq(b_wstb),
                     self.csr.w_data.eq(b_wdata)]

        # cmd word register
        cv = Signal()
        cdata = Signal(32)
        clast = Signal()
        m.d.comb += [self.cmd.valid.eq(cv), self.cmd.payload.data.eq(cdata), self.cmd.payload.last.eq(clast)]

        # registered flags; every loop state is entered one cycle after the registers they
        # depend on last changed
        crc_bad = Signal()
        dup = Signal()
        stale = Signal()      # (after dup) not newer than the session's newest frame, or another session's
        behind = Signal(16)   # rec_seq - seq: < 0x8000 when seq is not newer
        sid_eq = Signal()
        is_open = Signal()
        m.d.sync += [behind.eq(rec_seq - seq), sid_eq.eq(sid == rec_sid), is_open.eq(code == Cmd.OPEN),
                     stale.eq(Mux(sid_eq, rec_valid & ~behind[15], ~is_open))]
        f_eq = Signal()       # idx == count
        f_last = Signal()     # idx == count - 1
        oob = Signal()        # cur beyond the map
        f_bad = Signal()      # CSR address cur not readable (two cycles after cur changed)
        m.d.sync += f_bad.eq(~self.csr.r_ok | oob)
        rd_next = Signal()    # RD_CHECK: this address is fine and not the last: next one
        wr_next = Signal()    # WR_CHECK: idem
        m.d.sync += [rd_next.eq(~f_eq & self.csr.r_ok & ~oob),
                     wr_next.eq(~f_eq & self.csr.r_ok & ~oob & self.csr.w_ok)]
        s_eq = Signal()       # sidx == count
        s_last = Signal()     # sidx == count - 1
        count_m1 = Signal(17)
        m.d.sync += count_m1.eq(count - 1)
        s_done = Signal()     # STREAM: all cmd words sent, the last rsp word in (stays so once true)
        m.d.sync += s_done.eq(s_eq & ~sl & ~cf & ~cv & rsp_done)
        m.d.sync += [crc_bad.eq(rcrc != ~crc), dup.eq(rec_valid & (seq == rec_seq) & (rcrc == rec_crc) & sid_eq),
                     f_eq.eq(idx == count), f_last.eq(idx == count_m1), oob.eq(cur[aw:] != 0),
                     s_eq.eq(sidx == count), s_last.eq(sidx == count_m1)]
        vars(ns).update(addr=addr, b_rstb=b_rstb, b_wdata=b_wdata, b_wstb=b_wstb, cdata=cdata, cf=cf, clast=clast,
            count=count, crc_bad=crc_bad, cur=cur, cv=cv, dup=dup, f_bad=f_bad, f_eq=f_eq, f_last=f_last, idx=idx,
            overflow=overflow, prog=prog, rd_next=rd_next, rec_crc=rec_crc, rec_len=rec_len, rec_seq=rec_seq,
            rec_sid=rec_sid, rec_status=rec_status, rec_valid=rec_valid, res_len=res_len, res_status=res_status,
            ridx=ridx, rsp_done=rsp_done, s_done=s_done, s_eq=s_eq, s_last=s_last, sidx=sidx, sl=sl, st_to=st_to,
            stale=stale, stimer=stimer, t_len=t_len, t_status=t_status, tdone=tdone, tgo=tgo, wr_next=wr_next)

    def _command_checks(self, m, ns):
        """Command checks in three registered stages (code, length and w0r are fixed long before EXEC): error
        status, kind, address and count."""
        code, length, txw, w0r = from_ns(ns, "code length txw w0r")
        id_base, id_n = self.identify
        st_base, st_n = self.status
        # command checks, registered (code, length and w0r are fixed long before EXEC)
        w0 = w0r
        # stage 1: predicates of code, length and w0r
        p = {k: Signal(name=f"p_{k}") for k in ("ping", "ident", "status", "rd", "wr", "rst", "open", "stream",
                                                  "len_big", "len0", "len4", "len_lt8", "len_mis",
                                                  "cnt0", "cnt_big", "rst_bad")}
        v_ping = Signal(16)
        v_wr = Signal(16)
        v_stream = Signal(16)
        m.d.sync += [p["ping"].eq(code == Cmd.PING), p["ident"].eq(code == Cmd.IDENTIFY),
                     p["status"].eq(code == Cmd.STATUS), p["rd"].eq(code == Cmd.CSR_READ),
                     p["wr"].eq(code == Cmd.CSR_WRITE), p["rst"].eq(code == Cmd.RESET), p["open"].eq(code == Cmd.OPEN),
                     p["stream"].eq(code == Cmd.STREAM),
                     p["len_big"].eq(length > self.max_response), p["len0"].eq(length == 0),
                     p["len4"].eq(length == 4), p["len_lt8"].eq(length < 8), p["len_mis"].eq(length[:2] != 0),
                     p["cnt0"].eq(w0[16:] == 0), p["cnt_big"].eq(w0[16:] > txw),
                     p["rst_bad"].eq((w0 & ~RESET_FLAGS_MASK) != 0),
                     v_ping.eq((length + 3) >> 2), v_wr.eq((length >> 2) - 1), v_stream.eq(length >> 2)]
        # stage 2: error class, kind, address and count (registered)
        e_unknown = Signal()
        e_len = Signal()
        e_arg = Signal()
        x_addr = Signal(17)
        x_count = Signal(16)
        xk = {k: Signal(name=f"x_{k}") for k in ("copy", "rd", "wr", "rst", "open", "stream")}
        m.d.sync += [xk["copy"].eq(p["ping"]), xk["rd"].eq(p["ident"] | p["status"] | p["rd"]),
                     xk["wr"].eq(p["wr"]), xk["rst"].eq(p["rst"]), xk["open"].eq(p["open"]),
                     xk["stream"].eq(p["stream"])]
        bad_len = ((p["ping"] & p["len_big"]) | ((p["ident"] | p["status"]) & ~p["len0"]) |
                   ((p["rd"] | p["rst"]) & ~p["len4"]) | (p["wr"] & (p["len_lt8"] | p["len_mis"])) |
                   (p["stream"] & (p["len0"] | p["len_mis"])))
        bad_arg = (p["rd"] & (p["cnt0"] | p["cnt_big"])) | (p["wr"] & ~p["cnt0"]) | (p["rst"] & p["rst_bad"])
        m.d.sync += [e_unknown.eq(~(p["ping"] | p["ident"] | p["status"] | p["rd"] | p["wr"] | p["rst"] |
                                    p["open"] | p["stream"])),
                     e_len.eq(bad_len), e_arg.eq(bad_arg)]
        with m.If(p["ping"]):
            m.d.sync += x_count.eq(v_ping)
        with m.Elif(p["ident"]):
            m.d.sync += [x_addr.eq(id_base), x_count.eq(id_n)]
        with m.Elif(p["status"]):
            m.d.sync += [x_addr.eq(st_base), x_count.eq(st_n)]
        with m.Elif(p["rd"]):
            m.d.sync += [x_addr.eq(w0[:16]), x_count.eq(w0[16:])]
        with m.Elif(p["wr"]):
            m.d.sync += [x_addr.eq(w0[:16]), x_count.eq(v_wr)]
        with m.Else():
            m.d.sync += x_count.eq(v_stream)
        # stage 3
        x_bad = Signal()
        x_status = Signal(8)
        m.d.sync += x_bad.eq(e_unknown | e_len | e_arg)
        with m.If(e_unknown):
            m.d.sync += x_status.eq(Status.UNKNOWN_CMD)
        with m.Elif(e_len):
            m.d.sync += x_status.eq(Status.BAD_LENGTH)
        with m.Else():
            m.d.sync += x_status.eq(Status.BAD_ARG)
        vars(ns).update(w0=w0, x_addr=x_addr, x_bad=x_bad, x_count=x_count, x_status=x_status, xk=xk)

    def _executor(self, m, ns):
        """Executor FSM ("main"): frame check, replay or NACK, command dispatch (EXEC), PING copy; the rsp
        input register."""
        (addr, cf, clear_counters, count, count_event, crc_bad, cur, dup, f_eq, idx, length, overflow, rdok,
         rec_len, rec_status, rec_valid, res_len, res_status, resume, ridx, rsp_done, rwd, rx_long,
         rx_pend, rx_read, rx_taken, sidx, st_to, stale, stimer, t_len, t_status, tgo, tx_write, w0,
         x_addr, x_bad, x_count, x_status, xk) = from_ns(ns, """
            addr cf clear_counters count count_event crc_bad cur dup f_eq idx length overflow rdok rec_len
            rec_status rec_valid res_len res_status resume ridx rsp_done rwd rx_long rx_pend rx_read
            rx_taken sidx st_to stale stimer t_len t_status tgo tx_write w0 x_addr x_bad x_count x_status
            xk""")
        # idx / cur: one increment and one restart for all the loops (a short mux in front of them)
        step = Signal()
        restart = Signal()
        with m.If(restart):
            m.d.sync += [idx.eq(0), cur.eq(addr)]
        with m.Elif(step):
            m.d.sync += [idx.eq(idx + 1), cur.eq(cur + 1)]

        sender = _Load(m, "send", [t_status, t_len])     # (SEQ, SID, command: the decoder's frame)
        finisher = _Load(m, "fin", [res_status, res_len])

        def send(status, n_bytes):
            sender.load(status, n_bytes)
            m.d.sync += tgo.eq(1)
            mf.go("TX")

        def finish(status, n_bytes=0):
            finisher.load(status, n_bytes)
            mf.go("FINISH")

        m.d.sync += [tgo.eq(0), resume.eq(0)]
        # controller response words outside a STREAM command: drained and counted
        # rsp words land in a register first (ready = register empty)
        in_stream = Signal()
        qv = Signal()
        qdata = Signal(32)
        qlast = Signal()
        qtake = Signal()
        m.d.comb += self.rsp.ready.eq(~qv)
        with m.If(qtake):
            m.d.sync += qv.eq(0)
        with m.If(self.rsp.valid & ~qv):
            m.d.sync += [qv.eq(1), qdata.eq(self.rsp.payload.data), qlast.eq(self.rsp.payload.last)]
        with m.If(qv & ~in_stream):
            m.d.comb += qtake.eq(1)
            count_event("stream_discards", "stream_discard")

        mf = OneHotFSM(m, "main", ["IDLE", "CHECK", "EXEC", "COPY_W", "COPY", "COPY_DATA",
                                 "RD_CHECK_W", "RD_CHECK_W2", "RD_CHECK", "RD_ISSUE", "RD_WAIT", "RD_WAIT2", "RD_STORE",
                                 "WR_CHECK_W", "WR_CHECK_W2", "WR_CHECK", "WR_W", "WR", "WR_DATA", "WR_STB",
                                 "STREAM_W", "STREAM", "FINISH", "TX"])

        with mf.state("IDLE"):
            with m.If(rx_pend):
                m.d.comb += rx_taken.eq(1)
                with m.If(rx_long):
                    send(Status.TOO_LONG, 0)
                with m.Else():
                    mf.go("CHECK")

        with mf.state("CHECK"):
            with m.If(crc_bad):
                count_event("crc_errors", "crc_error")
                send(Status.CRC, 0)
            with m.Elif(dup):
                count_event("dup_frames", "dup_frame")
                send(rec_status, rec_len)     # the tx buffer still holds the recorded payload
            with m.Elif(stale):
                count_event("dup_frames", "dup_frame")
                send(Status.STALE, 0)         # not executed; the record (and the tx buffer) kept
            with m.Else():
                m.d.sync += [rec_valid.eq(0), sidx.eq(0), ridx.eq(0), rsp_done.eq(0),
                             overflow.eq(0), cf.eq(0), stimer.eq(0), st_to.eq(0)]
                mf.go("EXEC")

        # ---- command decoder (the rx buffer holds the checked payload)
        with mf.state("EXEC"):
            m.d.sync += [addr.eq(x_addr), cur.eq(x_addr), count.eq(x_count), idx.eq(0)]
            with m.If(x_bad):
                finish(x_status)
            with m.Elif(xk["copy"]):
                mf.go("COPY_W")
            with m.Elif(xk["rd"]):
                mf.go("RD_CHECK_W")
            with m.Elif(xk["wr"]):
                mf.go("WR_CHECK_W")
            with m.Elif(xk["open"]):            # the session became the frame's SID (FINISH records it)
                finish(Status.OK)
            with m.Elif(xk["rst"]):
                m.d.sync += self.soft_reset.eq(w0[0])
                m.d.comb += clear_counters.eq(w0[RESET_COUNTERS.bit_length() - 1])
                finish(Status.OK)
            with m.Else():
                mf.go("STREAM_W")

        with mf.state("COPY_W"):
            mf.go("COPY")

        with mf.state("COPY"):                   # PING: rx buffer -> tx buffer, a word per 5 cycles
            with m.If(f_eq):
                finish(Status.OK, length)
            with m.Else():
                rx_read(idx)
                mf.go("COPY_DATA")

        with mf.state("COPY_DATA"):
            with m.If(rdok):
                tx_write(idx, rwd)
                m.d.comb += step.eq(1)
                mf.go("COPY_W")
        vars(ns).update(finish=finish, finisher=finisher, in_stream=in_stream, mf=mf, qdata=qdata, qlast=qlast,
            qtake=qtake, qv=qv, restart=restart, send=send, sender=sender, step=step)

    def _executor_csr(self, m, ns):
        """Executor states of CSR_READ / CSR_WRITE (and IDENTIFY / STATUS): check every address, then access."""
        (b_rstb, b_wdata, b_wstb, count, f_bad, f_eq, f_last, finish, idx, mf, rd_next, rdok, restart, rwd,
         rx_read, step, tx_write, wr_next) = from_ns(ns, """
            b_rstb b_wdata b_wstb count f_bad f_eq f_last finish idx mf rd_next rdok restart rwd rx_read step
            tx_write wr_next""")
        def address_check(kind, ok_next, then, fail):
            """KIND_CHECK_W, KIND_CHECK_W2 (the bank decodes the next address into registers), then
            KIND_CHECK: every address of the burst is checked before the first access; `fail()`
            finishes with the status of a bad one"""
            with mf.state(f"{kind}_CHECK_W"):
                mf.go(f"{kind}_CHECK_W2")
            with mf.state(f"{kind}_CHECK_W2"):
                mf.go(f"{kind}_CHECK")
            with mf.state(f"{kind}_CHECK"):
                with m.If(ok_next):
                    m.d.comb += step.eq(1)
                    mf.go(f"{kind}_CHECK_W")
                with m.Elif(f_eq):
                    m.d.comb += restart.eq(1)
                    mf.go(then)
                with m.Else():
                    fail()

        def write_fail():
            with m.If(f_bad):
                finish(Status.BAD_ADDR)
            with m.Else():
                finish(Status.READ_ONLY)

        address_check("RD", rd_next, "RD_ISSUE", lambda: finish(Status.BAD_ADDR))   # readable
        address_check("WR", wr_next, "WR_W", write_fail)                            # writable

        with mf.state("RD_ISSUE"):
            m.d.sync += b_rstb.eq(1)
            mf.go("RD_WAIT")

        with mf.state("RD_WAIT"):                # the strobe is on the bus now
            mf.go("RD_WAIT2")

        with mf.state("RD_WAIT2"):               # the bank's read takes two cycles
            mf.go("RD_STORE")

        with mf.state("RD_STORE"):
            tx_write(idx, self.csr.r_data)
            m.d.comb += step.eq(1)
            with m.If(f_last):
                finish(Status.OK, count << 2)
            with m.Else():
                mf.go("RD_ISSUE")


        with mf.state("WR_W"):
            mf.go("WR")

        with mf.state("WR"):
            with m.If(f_eq):
                finish(Status.OK)
            with m.Else():
                rx_read(idx + 1)
                mf.go("WR_DATA")

        with mf.state("WR_DATA"):
            with m.If(rdok):
                m.d.sync += [b_wdata.eq(rwd), b_wstb.eq(1)]
                mf.go("WR_STB")

        with mf.state("WR_STB"):                 # the strobe is on the bus now
            m.d.comb += step.eq(1)
            mf.go("WR_W")

    def _executor_stream(self, m, ns):
        """Executor states of STREAM, FINISH (record the response) and TX."""
        (cdata, cf, clast, cv, finish, finisher, flag, in_stream, inc, mf, overflow, prog, qdata, qlast,
         qtake, qv, rcrc, rdok, rec_crc, rec_len, rec_seq, rec_sid, rec_status, rec_valid, res_len, res_status,
         resume, ridx, rsp_done, rwd, rx_read, s_done, s_eq, s_last, send, sender, seq, sid, sidx, sl, st_to,
         tdone, tx_write, txw) = from_ns(ns, """
            cdata cf clast cv finish finisher flag in_stream inc mf overflow prog qdata qlast qtake qv rcrc rdok
            rec_crc rec_len rec_seq rec_sid rec_status rec_valid res_len res_status resume ridx rsp_done rwd
            rx_read s_done s_eq s_last send sender seq sid sidx sl st_to tdone tx_write txw""")
        with mf.state("STREAM_W"):
            mf.go("STREAM")

        with mf.state("STREAM"):                 # send cmd words and collect rsp words at once
            m.d.comb += in_stream.eq(1)
            with m.If(cv & self.cmd.ready):
                m.d.comb += prog.eq(1)
                m.d.sync += cv.eq(0)
            # fetch word sidx (s_eq / s_last lag sidx by a cycle: sl blocks that cycle)
            with m.If(~cf & ~sl & ~s_eq):
                rx_read(sidx)
                m.d.sync += cf.eq(1)
            with m.If(cf & rdok & ~cv):
                m.d.sync += [cdata.eq(rwd), clast.eq(s_last), cv.eq(1), sidx.eq(sidx + 1),
                             cf.eq(0), sl.eq(1)]
            with m.If(qv & ~rsp_done):
                m.d.comb += qtake.eq(1)
                m.d.comb += prog.eq(1)
                with m.If(ridx < txw):
                    tx_write(ridx, qdata)
                    m.d.sync += ridx.eq(ridx + 1)
                with m.Else():
                    m.d.sync += overflow.eq(1)
                with m.If(qlast):
                    m.d.sync += rsp_done.eq(1)
            with m.If(s_done):
                with m.If(overflow):
                    m.d.comb += flag["stream_overflow"].eq(1)
                    finish(Status.OVERFLOW)
                with m.Else():
                    finish(Status.OK, ridx << 2)
            with m.Elif(st_to):
                m.d.comb += flag["stream_timeout"].eq(1)
                m.d.sync += cv.eq(0)            # the word on cmd is withdrawn
                finish(Status.TIMEOUT)

        with mf.state("FINISH"):                 # record the response, then send it
            m.d.comb += inc["executed"].eq(1)
            m.d.sync += [rec_valid.eq(1), rec_sid.eq(sid), rec_seq.eq(seq), rec_crc.eq(rcrc),
                         rec_status.eq(res_status), rec_len.eq(res_len), self.soft_reset.eq(0)]
            send(res_status, res_len)     # (res_len is 0 with an error status)

        with mf.state("TX"):
            with m.If(tdone):
                m.d.sync += resume.eq(1)
                mf.go("IDLE")

        mf.finish()
        sender.finish()
        finisher.finish()


class FrameEncoder(wiring.Component):
    """Response frame encoder: on `go` (a pulse) it sends A5 5A | seq | sid | RESPONSE | code | status |
    length | HCHK (2) | the first `length` bytes of the tx buffer | CRC-32 on `tx` (fields LE), then
    pulses `done`.

    The tx buffer is read through `rd_addr` / `rd_data` (a synchronous read port, data a cycle after
    the address); `seq`, `sid`, `code`, `status`, `length` hold from `go` to `done`. The bytes leave from the byte
    register `ob` (at most one per two cycles), and the CRC takes each byte as it leaves (a byte is
    loaded only when ob is empty). The header bytes, the payload word and the CRC are shifted out of
    registers (no byte mux); the next payload word is prefetched while one is sent.
    """

    def __init__(self, txw: int):
        self.txw = txw
        super().__init__({
            "go": In(1), "seq": In(16), "sid": In(16), "code": In(8), "status": In(8), "length": In(16),
            "done": Out(1),
            "rd_addr": Out(range(txw)), "rd_data": In(32),
            "tx": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        ob = Signal(8)
        ov = Signal()
        ocrc = Signal()       # ob counts in the CRC
        tcrc = Signal(32, init=0xFFFFFFFF)
        tcnt = Signal(16)
        tlast = Signal()      # tcnt == length - 1
        tl0 = Signal()        # length == 0
        t_len_m1 = Signal(17)
        m.d.sync += t_len_m1.eq(self.length - 1)
        hsr = Signal(80)      # sync and header bytes still to send
        hck_hi = Signal(8)    # HCHK byte 1 (the header's CRC-32 changes as byte 0 leaves)
        tra = Signal(range(self.txw))
        tpre = Signal(32)     # txbuf[tra], two cycles after tra changed
        tw = Signal(32)       # the payload word being sent (shifted a byte at a time)
        tcrc_next = crc32_byte(m, tcrc, ob)
        m.d.comb += [self.tx.payload.eq(ob), self.tx.valid.eq(ov), self.rd_addr.eq(tra)]
        m.d.sync += [tpre.eq(self.rd_data), tlast.eq(tcnt == t_len_m1), tl0.eq(self.length == 0), self.done.eq(0)]
        with m.If(ov & self.tx.ready):
            m.d.sync += ov.eq(0)
            with m.If(ocrc):
                m.d.sync += tcrc.eq(tcrc_next)

        tcnt_clr = Signal()
        tcnt_inc = Signal()
        with m.If(tcnt_clr):
            m.d.sync += tcnt.eq(0)
        with m.Elif(tcnt_inc):
            m.d.sync += tcnt.eq(tcnt + 1)
        tf = OneHotFSM(m, "tx", ["IDLE", "HDR", "HCHK", "HCHK2", "PAY", "CRC", "DONE"])
        obl = _Load(m, "ob", [ob])
        crc_lane = Signal(8)
        m.d.comb += crc_lane.eq(~tcrc.word_select(tcnt[:2], 8))
        with tf.state("IDLE"):
            with m.If(self.go):
                m.d.comb += tcnt_clr.eq(1)
                m.d.sync += [tcrc.eq(0xFFFFFFFF), tra.eq(0),
                             hsr.eq(Cat(Const(SYNC[0], 8), Const(SYNC[1], 8), self.seq, self.sid,
                                        self.code | RESPONSE, self.status, self.length))]
                tf.go("HDR")

        with tf.state("HDR"):
            with m.If(~ov):
                obl.load(hsr[:8])
                m.d.sync += [hsr.eq(hsr[8:]), ov.eq(1), ocrc.eq(tcnt[1:4] != 0)]     # (not the sync bytes)
                m.d.comb += tcnt_inc.eq(1)
                with m.If(tcnt[:4] == 9):
                    tf.go("HCHK")

        with tf.state("HCHK"):
            with m.If(~ov):
                obl.load(~tcrc[:8])
                m.d.sync += [ov.eq(1), ocrc.eq(1), hck_hi.eq(~tcrc[8:16])]
                tf.go("HCHK2")

        with tf.state("HCHK2"):
            with m.If(~ov):
                obl.load(hck_hi)
                m.d.comb += tcnt_clr.eq(1)
                m.d.sync += [ov.eq(1), ocrc.eq(1), tw.eq(tpre), tra.eq(1)]
                with m.If(tl0):
                    tf.go("CRC")
                with m.Else():
                    tf.go("PAY")

        with tf.state("PAY"):
            with m.If(~ov):
                obl.load(tw[:8])
                m.d.comb += tcnt_inc.eq(1)
                m.d.sync += [tw.eq(tw[8:]), ov.eq(1), ocrc.eq(1)]
                with m.If(tcnt[:2] == 3):
                    m.d.sync += [tw.eq(tpre), tra.eq(tra + 1)]     # prefetched word; fetch the next
                with m.If(tlast):
                    m.d.comb += tcnt_clr.eq(1)
                    tf.go("CRC")

        with tf.state("CRC"):
            with m.If(~ov):
                obl.load(crc_lane)
                m.d.comb += tcnt_inc.eq(1)
                m.d.sync += [ov.eq(1), ocrc.eq(0)]
                with m.If(tcnt[:2] == 3):
                    tf.go("DONE")

        with tf.state("DONE"):
            with m.If(~ov):
                m.d.sync += self.done.eq(1)
                tf.go("IDLE")
        tf.finish()
        obl.finish()
        return m


class FrameDecoder(wiring.Component):
    """Request frame decoder: bytes in on `rx`; a frame's header fields out (`seq`, `code`, `length`),
    its payload written to the rx buffer (`wr_en` byte lanes, `wr_addr` word, `wr_byte`), its first
    payload word kept in `w0`, its received CRC in `rcrc` and the CRC-32 computed over it in `crc`.

    HUNT -> SYNC1 -> HDR (8 bytes) -> HCHK (2) -> PAYLOAD -> CRC (4 bytes) -> WAIT: `pend` rises when
    a frame (or, with `oversize`, a frame whose LEN is above max_payload: its bytes counted off, not
    stored, `dropped_frame`) waits for the executor, which pulses `taken`, and `resume` once the
    response is sent. A header whose HCHK does not match (`framing_error`) or a byte at a frame
    boundary that is not the sync leads to QUIET, which ignores bytes until none came for
    `byte_timeout` cycles; a frame that stops arriving for `byte_timeout` cycles
    (`dropped_frame`) returns to HUNT. `idle`: hunting, no byte waiting. `took`: a byte is taken
    from the input register this cycle (the link counts it, link_rx_bytes).

    Bytes go through a one-byte input register (ready = empty), compared to the sync bytes and the
    HCHK bytes as they are loaded; the flags of the length and count registers are registered (they
    change only when a byte is taken, never two cycles in a row).
    """

    def __init__(self, rxw: int, max_payload: int):
        self.rxw, self.max_payload = rxw, max_payload
        super().__init__({
            "rx": In(stream.Signature(8)),
            "byte_timeout": In(32),
            "seq": Out(16), "sid": Out(16), "code": Out(8), "length": Out(16), "w0": Out(32), "rcrc": Out(32),
            "crc": Out(32),
            "wr_en": Out(4), "wr_addr": Out(range(rxw)), "wr_byte": Out(8),
            "pend": Out(1), "oversize": Out(1), "taken": In(1), "resume": In(1),
            "framing_error": Out(1), "dropped_frame": Out(1), "idle": Out(1), "took": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        ns = SimpleNamespace()
        self._registers(m, ns)
        self._fsm(m, ns)
        return m

    def _registers(self, m, ns):
        """The input byte register (compared to the sync bytes and the HCHK as it loads), the rx buffer write
        registers, the header registers, the CRC-32 and the registered flags of length, count and timeout."""
        ib = Signal(8)
        iv = Signal()
        take = Signal()                     # the decoder consumes ib this cycle
        m.d.comb += self.rx.ready.eq(~iv)
        with m.If(take):
            m.d.sync += iv.eq(0)
        # compared as it is loaded (crc only changes when a byte is taken, never while one loads)
        ib_s0 = Signal()
        ib_s1 = Signal()
        ib_hchk = Signal()      # = HCHK byte 0 (the header's CRC-32, low byte)
        ib_hchk1 = Signal()     # = HCHK byte 1 (kept in hck_hi when byte 0 was taken)
        hck_hi = Signal(8)
        crc = Signal(32, init=0xFFFFFFFF)
        with m.If(self.rx.valid & ~iv):
            m.d.sync += [ib.eq(self.rx.payload), iv.eq(1), ib_s0.eq(self.rx.payload == SYNC[0]),
                         ib_s1.eq(self.rx.payload == SYNC[1]), ib_hchk.eq(self.rx.payload == ~crc[:8]),
                         ib_hchk1.eq(self.rx.payload == hck_hi)]

        rwe = Signal(4)
        rwa = Signal(range(self.rxw))
        rwb = Signal(8)
        m.d.sync += rwe.eq(0)
        m.d.comb += [self.wr_addr.eq(rwa), self.wr_byte.eq(rwb), self.wr_en.eq(rwe)]
        seq = Signal(16)
        sid = Signal(16)
        code = Signal(8)
        length = Signal(16)
        hok = Signal()        # HCHK byte 0 matched
        skip = Signal()       # the frame is consumed, not kept (LEN above max_payload -> TOO_LONG)
        rcrc = Signal(32)
        rcnt = Signal(16)
        rtimer = Signal(32)
        rx_to = Signal()
        w0r = Signal(32)      # the first payload word, kept as it arrives (EXEC decodes it)
        rx_pend = Signal()    # a frame (or a TOO_LONG header) waits for the executor
        rx_long = Signal()
        crc_next = crc32_byte(m, crc, ib)
        crc_clr = Signal()
        crc_upd = Signal()
        with m.If(crc_clr):
            m.d.sync += crc.eq(0xFFFFFFFF)
        with m.Elif(crc_upd):
            m.d.sync += crc.eq(crc_next)
        # flags of registers that change only when a byte is taken (never two cycles in a row)
        too_long = Signal()
        length_m1 = Signal(17)
        m.d.sync += length_m1.eq(length - 1)
        len0 = Signal()
        pay_last = Signal()
        first_word = Signal()
        m.d.sync += [too_long.eq(length > self.max_payload), len0.eq(length == 0),
                     pay_last.eq(rcnt == length_m1), first_word.eq(rcnt[2:] == 0)]
        m.d.sync += [rtimer.eq(rtimer + 1), rx_to.eq(rtimer >= self.byte_timeout)]
        with m.If(take):
            m.d.sync += [rtimer.eq(0), rx_to.eq(0)]
        vars(ns).update(code=code, crc=crc, crc_clr=crc_clr, crc_upd=crc_upd, first_word=first_word, hck_hi=hck_hi,
            hok=hok, ib=ib, ib_hchk=ib_hchk, ib_hchk1=ib_hchk1, ib_s0=ib_s0, ib_s1=ib_s1, iv=iv, len0=len0,
            length=length, pay_last=pay_last, rcnt=rcnt, rcrc=rcrc, rwa=rwa, rwb=rwb, rwe=rwe, rx_long=rx_long,
            rx_pend=rx_pend, rx_to=rx_to, seq=seq, sid=sid, skip=skip, take=take, too_long=too_long, w0r=w0r)

    def _fsm(self, m, ns):
        """The decoder FSM ("rx") and the frame hand-over to the executor (`pend`, `taken`) and the outputs."""
        (code, crc, crc_clr, crc_upd, first_word, hck_hi, hok, ib, ib_hchk, ib_hchk1, ib_s0, ib_s1, iv, len0, length,
         pay_last, rcnt, rcrc, rwa, rwb, rwe, rx_long, rx_pend, rx_to, seq, sid, skip, take, too_long,
         w0r) = from_ns(ns, """
            code crc crc_clr crc_upd first_word hck_hi hok ib ib_hchk ib_hchk1 ib_s0 ib_s1 iv len0 length pay_last
            rcnt rcrc rwa rwb rwe rx_long rx_pend rx_to seq sid skip take too_long w0r""")
        def rx_timeout_drop():
            m.d.comb += self.dropped_frame.eq(1)
            rf.go("HUNT")

        rf = OneHotFSM(m, "rx", ['HUNT', 'SYNC1', 'HDR', 'HCHK', 'PAYLOAD', 'CRC', 'WAIT', 'QUIET'])

        with rf.state("HUNT"):               # a frame boundary: the next byte must start a frame
            m.d.comb += self.idle.eq(~iv)
            with m.If(iv & ib_s0):
                rf.go("SYNC1")
            with m.Elif(iv):
                rf.go("QUIET")

        with rf.state("SYNC1"):
            with m.If(iv):
                with m.If(ib_s1):
                    m.d.comb += crc_clr.eq(1)
                    m.d.sync += rcnt.eq(0)
                    rf.go("HDR")
                with m.Else():
                    rf.go("QUIET")
            with m.Elif(rx_to):
                rf.go("HUNT")

        with rf.state("QUIET"):              # out of step: ignore every byte until the line is idle
            with m.If(~iv & rx_to):
                rf.go("HUNT")

        fields = [seq[:8], seq[8:], sid[:8], sid[8:], code, None, length[:8], length[8:]]    # (None: STATUS)
        with rf.state("HDR"):
            with m.If(iv):
                m.d.comb += crc_upd.eq(1)
                m.d.sync += rcnt.eq(rcnt + 1)
                with m.Switch(rcnt[:3]):
                    for k, f in enumerate(fields):
                        with m.Case(k):
                            if f is not None:
                                m.d.sync += f.eq(ib)
                            if k == len(fields) - 1:
                                m.d.sync += rcnt.eq(0)
                                rf.go("HCHK")
            with m.Elif(rx_to):
                rx_timeout_drop()

        with rf.state("HCHK"):               # two bytes: the low 16 bits of the header's CRC-32
            with m.If(iv):
                m.d.comb += crc_upd.eq(1)
                m.d.sync += rcnt.eq(1)
                with m.If(~rcnt[0]):
                    m.d.sync += [hok.eq(ib_hchk), hck_hi.eq(~crc[8:16])]
                with m.Elif(~(hok & ib_hchk1)):
                    m.d.comb += self.framing_error.eq(1)
                    rf.go("QUIET")
                with m.Else():
                    m.d.sync += [rcnt.eq(0), skip.eq(too_long)]
                    with m.If(len0):
                        rf.go("CRC")
                    with m.Else():
                        rf.go("PAYLOAD")
            with m.Elif(rx_to):
                rx_timeout_drop()

        with rf.state("PAYLOAD"):            # (skip: consumed, not kept)
            with m.If(iv):
                with m.If(~skip):
                    m.d.sync += [rwe.eq(Const(1, 4) << rcnt[:2]), rwa.eq(rcnt[2:]), rwb.eq(ib)]
                with m.If(first_word & ~skip):
                    with m.Switch(rcnt[:2]):
                        for lane in range(4):
                            with m.Case(lane):
                                m.d.sync += w0r[8 * lane:8 * lane + 8].eq(ib)
                m.d.comb += crc_upd.eq(1)
                m.d.sync += rcnt.eq(rcnt + 1)
                with m.If(pay_last):
                    m.d.sync += rcnt.eq(0)
                    rf.go("CRC")
            with m.Elif(rx_to):
                rx_timeout_drop()

        with rf.state("CRC"):
            with m.If(iv):
                m.d.sync += [rcrc.eq(Cat(rcrc[8:], ib)), rcnt.eq(rcnt + 1)]
                with m.If(rcnt[:2] == 3):
                    m.d.sync += [rx_pend.eq(1), rx_long.eq(skip)]
                    m.d.comb += self.dropped_frame.eq(skip)
                    rf.go("WAIT")
            with m.Elif(rx_to):
                rx_timeout_drop()

        with rf.state("WAIT"):               # the executor and the encoder have the frame
            with m.If(self.resume):
                rf.go("HUNT")
        rf.finish()
        m.d.comb += take.eq(iv & ~rf.bit["WAIT"])     # every state but WAIT takes a byte
        m.d.comb += self.took.eq(take)                # (counted as received: link_rx_bytes)
        with m.If(self.taken):
            m.d.sync += rx_pend.eq(0)
        m.d.comb += [self.seq.eq(seq), self.sid.eq(sid), self.code.eq(code), self.length.eq(length), self.w0.eq(w0r),
                     self.rcrc.eq(rcrc), self.crc.eq(crc), self.pend.eq(rx_pend), self.oversize.eq(rx_long)]


# ------------------------------------------------------------------ UART + link + CSR bank

class LinkTop(wiring.Component):
    """UART PHY -> rx FIFO -> Link -> UART PHY, with the CSR bank of link_block() + `blocks`.

    Ports: uart_rx/uart_tx pins; cmd/rsp controller streams; soft_reset pulse; ctrl_status
    (controller status word, read as link_ctrl_status); `regs` (fields of the extra blocks, if
    any, named as in the map); idle (the link waits for a frame). bypass=True adds byte_in /
    byte_out streams replacing the UART when the `bypass` input is 1 (co-simulation).
    """

    def __init__(self, divisor: int = 868, max_payload: int = 1024, max_response: int = 1024, blocks=(),
                 fifo_depth: int = 16, bypass: bool = False, byte_timeout: int | None = None,
                 stream_timeout: int = 1 << 24, **params):
        self.divisor, self.fifo_depth, self.has_bypass = divisor, fifo_depth, bypass
        self.max_payload, self.max_response = max_payload, max_response
        if byte_timeout is None:
            byte_timeout = 100 * 10 * divisor        # 100 character times
        self.blocks = list(blocks)
        self.map = with_map_hash([link_block(max_payload=max_payload, max_response=max_response,
                                             byte_timeout=byte_timeout, stream_timeout=stream_timeout, **params),
                                  *self.blocks])
        members = {
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "cmd": Out(stream.Signature(WORD)),
            "rsp": In(stream.Signature(WORD)),
            "soft_reset": Out(1),
            "ctrl_status": In(32),
            "idle": Out(1),
        }
        if self.blocks:
            sub = csr.CsrMap([r for r in self.map.registers if r.block != "link"], {}, {}, self.map.size)
            members["regs"] = Out(csr.field_signature(sub))
        if bypass:
            members.update({"bypass": In(1), "byte_in": In(stream.Signature(8)), "byte_out": Out(stream.Signature(8))})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cmap = self.map
        m.submodules.uart = uart = Uart(self.divisor)
        m.submodules.rxfifo = fifo = SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        m.submodules.bank = bank = csr.CsrBank(cmap)
        m.submodules.link = link = Link(self.max_payload, self.max_response, cmap.addr_width, cmap.size,
                                        identify=cmap.windows["link_identify"], status=cmap.windows["link_status"])
        m.d.comb += uart.rx.eq(self.uart_rx)
        m.d.comb += self.uart_tx.eq(uart.tx)
        m.d.comb += [fifo.w_data.eq(uart.o.payload), fifo.w_en.eq(uart.o.valid), uart.o.ready.eq(fifo.w_rdy)]
        wiring.connect(m, link.csr, bank.bus)
        wiring.connect(m, link.cmd, wiring.flipped(self.cmd))
        wiring.connect(m, wiring.flipped(self.rsp), link.rsp)
        m.d.comb += [self.soft_reset.eq(link.soft_reset), self.idle.eq(link.idle),
                     link.phy_framing_error.eq(uart.framing_error), link.phy_break.eq(uart.brk),
                     link.phy_overrun.eq(uart.overrun)]

        # bytes: UART (through the FIFO) or, in co-simulation, the bypass ports
        def uart_path():
            m.d.comb += [link.rx.payload.eq(fifo.r_data), link.rx.valid.eq(fifo.r_rdy), fifo.r_en.eq(link.rx.ready),
                         uart.i.payload.eq(link.tx.payload), uart.i.valid.eq(link.tx.valid),
                         link.tx.ready.eq(uart.i.ready)]
        if self.has_bypass:
            with m.If(self.bypass):
                m.d.comb += [fifo.r_en.eq(1),      # (UART bytes are discarded while bypassed)
                             link.rx.payload.eq(self.byte_in.payload), link.rx.valid.eq(self.byte_in.valid),
                             self.byte_in.ready.eq(link.rx.ready),
                             self.byte_out.payload.eq(link.tx.payload), self.byte_out.valid.eq(link.tx.valid),
                             link.tx.ready.eq(self.byte_out.ready)]
            with m.Else():
                uart_path()
        else:
            uart_path()

        # CSR fields: link registers from the link core, the rest to/from the `regs` port
        f = bank.regs
        m.d.comb += [link.byte_timeout.eq(f.link_byte_timeout), link.stream_timeout.eq(f.link_stream_timeout),
                     f.link_flags_set.eq(link.flags_set), f.link_ctrl_status.eq(self.ctrl_status)]
        for c in COUNTERS:
            m.d.comb += getattr(f, f"link_{c}").eq(getattr(link, c))
        if self.blocks:
            for name, member in self.regs.signature.members.items():
                if member.flow == Out:
                    m.d.comb += getattr(self.regs, name).eq(getattr(f, name))
                else:
                    m.d.comb += getattr(f, name).eq(getattr(self.regs, name))
        return m


def default_instances():
    return {"link_top": LinkTop(), "frame_decoder": FrameDecoder(256, 1024), "frame_encoder": FrameEncoder(256)}
