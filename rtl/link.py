"""Link layer of the host interface: frame decoder/encoder with CRC-32, duplicate suppression,
ack/nack, command decoder to the CSR bank and to the controller's command/response streams.

Protocol (frame format, commands, status codes, retry semantics): docs/link.md; the constants
come from sw/link.py, the host end, so there is one definition of the protocol.

`Link` is the core: bytes in (`rx`) and out (`tx`), a CSR bus master (`csr`), the controller
streams `cmd` (payload words of STREAM commands, `last` on the final word) and `rsp` (the
controller's answer words, `last` on the final one). One FSM does everything in turn:

    HUNT -> SYNC1 -> HDR (4 bytes) -> HCHK -> PAYLOAD (into the rx buffer) -> CRC (4 bytes)
         -> CHECK -> EXEC (command) -> FINISH (record the response) -> TX (header, tx buffer, CRC)
                  `-> replay TX of the recorded response (repeated frame)
                  `-> NACK(CRC) TX (valid header, bad CRC; nothing recorded)

Robustness. A header whose HCHK byte does not match is dropped at once (framing error) and a
LEN above max_payload gets a NACK(TOO_LONG) before any payload is awaited, so a corrupted length
cannot make the decoder swallow the frames that follow; a frame that stops arriving is abandoned
after `byte_timeout` idle cycles (dropped frame). After any error the decoder is back in HUNT,
so no input sequence can wedge it (tb/test_link.py checks this with hypothesis). Nothing of a
frame is executed before its CRC-32 has been checked: the payload waits in the rx buffer.

Duplicate suppression. After executing a frame the link records (SEQ, CRC-32 of the frame) and the
response stays in the tx buffer; a frame with the same SEQ *and* CRC is answered from the record
(dup_frames counter) and not executed again. Matching the CRC as well as SEQ means a new command
that happens to reuse a SEQ (host restart, SEQ wrap) is still executed.

Streams. STREAM sends the payload words on `cmd` and, at the same time, collects `rsp` words
into the tx buffer until one with `last`; `stream_timeout` idle cycles without progress end the
command with TIMEOUT (the word on `cmd` is withdrawn: the host should then RESET the controller).
Words on `rsp` outside a STREAM command are discarded and counted (stream_discards).

`LinkTop` = UART PHY + rx FIFO + Link + CsrBank over `build_map([link_block(), *blocks])`:
the controller top will instantiate it with its own register blocks and attach to `cmd`/`rsp`,
`soft_reset` and `ctrl_status`. With bypass=True it also has byte-stream ports that replace the
UART (selected by the `bypass` input) for fast co-simulation.
"""
from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl import csr
from rtl.uart import Uart
from sw.link import COUNTERS, FLAG_BITS, RESET_COUNTERS, RESET_FLAGS_MASK, RESPONSE, SYNC, Cmd, Status

ID_MAGIC = 0x4D434E4E        # "MCNN"
VERSION = 0x0001_0000        # link protocol 1.0 (major << 16 | minor)
CRC_POLY = 0xEDB88320        # CRC-32/ISO-HDLC, reflected (= zlib.crc32)

WORD = data.StructLayout({"data": 32, "last": 1})


# ------------------------------------------------------------------ registers of the link block

class Id(csr.Register, access="ro", const=True, reset=ID_MAGIC):
    "ID magic 0x4D434E4E ('MCNN')."


class Version(csr.Register, access="ro", const=True, reset=VERSION):
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
    "Repeated frames answered from the replay record without executing them."


class Executed(csr.Register, access="ro"):
    "Frames executed (valid CRC, not a repeat), any status."


class StreamDiscards(csr.Register, access="ro"):
    "Controller response words received outside a STREAM command and discarded."


class ByteTimeout(csr.Register, access="rw"):
    "Inter-byte timeout in clock cycles: a frame that stops arriving is abandoned after it."


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
            StreamDiscards(), ByteTimeout(reset=byte_timeout), StreamTimeout(reset=stream_timeout)]
    return csr.Block("link", regs, doc="link layer and identity",
                     windows={"identify": ("id", "max_response"), "status": ("ctrl_status", "stream_discards")})


def with_map_hash(blocks) -> csr.CsrMap:
    """build_map, then set link_map_hash's constant to the map's hash (which excludes resets)."""
    cmap = csr.build_map(blocks)
    cmap["link_map_hash"].reg.reset = cmap.hash
    return cmap


# ------------------------------------------------------------------ CRC-32 in RTL

def crc32_byte(m, crc, byte):
    """Next CRC-32 register (reflected, poly 0xEDB88320; init/final inversion outside) after `byte`:
    a comb Signal (one intermediate Signal per bit step keeps the expression small)."""
    c = crc
    for i in range(8):
        nxt = Signal(32, name=f"crc_step{i}")
        fb = c[0] ^ byte[i]
        m.d.comb += nxt.eq(Cat(c[1:], Const(0, 1)) ^ (Const(CRC_POLY, 32) & fb.replicate(32)))
        c = nxt
    return c


# ------------------------------------------------------------------ the link core

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
        m = Module()
        rxw, txw = self.max_payload // 4, self.max_response // 4
        m.submodules.rxbuf = rxbuf = Memory(shape=32, depth=rxw, init=[])
        m.submodules.txbuf = txbuf = Memory(shape=32, depth=txw, init=[])
        rx_wr = rxbuf.write_port(granularity=8)
        rx_rd = rxbuf.read_port(domain="comb")
        tx_wr = txbuf.write_port()
        tx_rd = txbuf.read_port(domain="comb")

        seq = Signal(8)
        code = Signal(8)
        length = Signal(16)
        crc = Signal(32, init=0xFFFFFFFF)
        rcrc = Signal(32)
        cnt = Signal(16)
        timer = Signal(32)
        # replay record and the response being sent
        rec_valid = Signal()
        rec_seq = Signal(8)
        rec_crc = Signal(32)
        rec_status = Signal(8)
        rec_len = Signal(16)
        t_seq = Signal(8)
        t_status = Signal(8)
        t_len = Signal(16)
        res_status = Signal(8)
        res_len = Signal(16)
        # command execution
        addr = Signal(17)
        count = Signal(16)
        idx = Signal(16)
        sidx = Signal(16)
        ridx = Signal(16)
        rsp_done = Signal()
        overflow = Signal()
        # the first payload word, kept as it arrives: EXEC decodes it from a register, not through
        # the rx buffer's read port (timing); only commands with LEN >= 4 look at it
        w0r = Signal(32)

        # one CRC engine, fed by whichever byte moves this cycle
        crc_in = Signal(8)
        crc_next = crc32_byte(m, crc, crc_in)
        rx_take = self.rx.valid & self.rx.ready
        tx_take = self.tx.valid & self.tx.ready
        b = self.rx.payload

        inc = {c: Signal(name=f"inc_{c}") for c in COUNTERS}
        flag = {n: Signal(name=f"flag_{n}") for n in FLAG_BITS}
        clear_counters = Signal()
        in_stream = Signal()
        m.d.comb += self.flags_set.eq(Cat(*flag.values()))
        m.d.comb += [flag["framing_error"].eq(self.phy_framing_error), flag["dropped_frame"].eq(self.phy_overrun),
                     flag["uart_break"].eq(self.phy_break)]
        for c in COUNTERS:
            extra = 0
            if c == "framing_errors":
                extra = self.phy_framing_error + self.phy_break
            elif c == "dropped_frames":
                extra = self.phy_overrun
            with m.If(clear_counters):
                m.d.sync += getattr(self, c).eq(0)
            with m.Else():
                m.d.sync += getattr(self, c).eq(getattr(self, c) + inc[c] + extra)

        def count_event(counter, flag_name):
            m.d.comb += [inc[counter].eq(1), flag[flag_name].eq(1)]

        # controller response words outside a STREAM command: drained and counted
        with m.If(self.rsp.valid & ~in_stream):
            count_event("stream_discards", "stream_discard")

        # rx payload write: byte lane cnt[0:2] of word cnt[2:]
        m.d.comb += [rx_wr.addr.eq(cnt[2:]), rx_wr.data.eq(b.replicate(4))]

        def nack(status):
            m.d.sync += [t_seq.eq(seq), t_status.eq(status), t_len.eq(0), cnt.eq(0), crc.eq(0xFFFFFFFF)]
            m.next = "TX_HDR"

        def finish(status, n_bytes=0):
            m.d.sync += [res_status.eq(status), res_len.eq(n_bytes)]
            m.next = "FINISH"

        # idle-cycle timer of the rx states and of STREAM
        m.d.sync += timer.eq(timer + 1)
        rx_timeout = timer >= self.byte_timeout

        # stream defaults: rsp is drained (and counted) outside STREAM
        m.d.comb += self.rsp.ready.eq(1)
        m.d.comb += self.cmd.payload.data.eq(rx_rd.data)

        sync0, sync1 = SYNC[0], SYNC[1]
        id_base, id_n = self.identify
        st_base, st_n = self.status

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += [self.idle.eq(1), self.rx.ready.eq(1)]
                with m.If(rx_take & (b == sync0)):
                    m.d.sync += timer.eq(0)
                    m.next = "SYNC1"

            with m.State("SYNC1"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(rx_take):
                    m.d.sync += timer.eq(0)
                    with m.If(b == sync1):
                        m.d.sync += [crc.eq(0xFFFFFFFF), cnt.eq(0)]
                        m.next = "HDR"
                    with m.Elif(b != sync0):
                        m.next = "HUNT"
                with m.Elif(rx_timeout):
                    m.next = "HUNT"

            with m.State("HDR"):
                m.d.comb += [self.rx.ready.eq(1), crc_in.eq(b)]
                with m.If(rx_take):
                    m.d.sync += [timer.eq(0), crc.eq(crc_next), cnt.eq(cnt + 1)]
                    with m.Switch(cnt[:2]):
                        with m.Case(0):
                            m.d.sync += seq.eq(b)
                        with m.Case(1):
                            m.d.sync += code.eq(b)
                        with m.Case(2):
                            m.d.sync += length[:8].eq(b)
                        with m.Case(3):
                            m.d.sync += length[8:].eq(b)
                            m.next = "HCHK"
                with m.Elif(rx_timeout):
                    count_event("dropped_frames", "dropped_frame")
                    m.next = "HUNT"

            with m.State("HCHK"):
                m.d.comb += [self.rx.ready.eq(1), crc_in.eq(b)]
                with m.If(rx_take):
                    m.d.sync += [timer.eq(0), crc.eq(crc_next), cnt.eq(0)]
                    with m.If(b != ~crc[:8]):
                        count_event("framing_errors", "framing_error")
                        m.next = "HUNT"
                    with m.Elif(length > self.max_payload):
                        count_event("dropped_frames", "dropped_frame")
                        nack(Status.TOO_LONG)
                    with m.Elif(length == 0):
                        m.next = "CRC"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Elif(rx_timeout):
                    count_event("dropped_frames", "dropped_frame")
                    m.next = "HUNT"

            with m.State("PAYLOAD"):
                m.d.comb += [self.rx.ready.eq(1), crc_in.eq(b)]
                with m.If(rx_take):
                    m.d.comb += rx_wr.en.eq(1 << cnt[:2])
                    with m.If(cnt[2:] == 0):
                        with m.Switch(cnt[:2]):
                            for lane in range(4):
                                with m.Case(lane):
                                    m.d.sync += w0r[8 * lane:8 * lane + 8].eq(b)
                    m.d.sync += [timer.eq(0), crc.eq(crc_next), cnt.eq(cnt + 1)]
                    with m.If(cnt == length - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "CRC"
                with m.Elif(rx_timeout):
                    count_event("dropped_frames", "dropped_frame")
                    m.next = "HUNT"

            with m.State("CRC"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(rx_take):
                    m.d.sync += [timer.eq(0), rcrc.eq(Cat(rcrc[8:], b)), cnt.eq(cnt + 1)]
                    with m.If(cnt == 3):
                        m.next = "CHECK"
                with m.Elif(rx_timeout):
                    count_event("dropped_frames", "dropped_frame")
                    m.next = "HUNT"

            with m.State("CHECK"):
                with m.If(rcrc != ~crc):
                    count_event("crc_errors", "crc_error")
                    nack(Status.CRC)
                with m.Elif(rec_valid & (seq == rec_seq) & (rcrc == rec_crc)):
                    count_event("dup_frames", "dup_frame")
                    m.d.sync += [t_seq.eq(rec_seq), t_status.eq(rec_status), t_len.eq(rec_len),
                                 cnt.eq(0), crc.eq(0xFFFFFFFF)]
                    m.next = "TX_HDR"          # the tx buffer still holds the recorded payload
                with m.Else():
                    m.d.sync += [rec_valid.eq(0), idx.eq(0), sidx.eq(0), ridx.eq(0), rsp_done.eq(0),
                                 overflow.eq(0), timer.eq(0)]
                    m.next = "EXEC"

            # ---- command decoder (the rx buffer holds the checked payload)
            with m.State("EXEC"):
                w0 = w0r
                with m.Switch(code):
                    with m.Case(Cmd.PING):
                        with m.If(length > self.max_response):
                            finish(Status.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += count.eq((length + 3) >> 2)
                            m.next = "COPY"
                    with m.Case(Cmd.IDENTIFY, Cmd.STATUS):
                        with m.If(length != 0):
                            finish(Status.BAD_LENGTH)
                        with m.Else():
                            with m.If(code == Cmd.IDENTIFY):
                                m.d.sync += [addr.eq(id_base), count.eq(id_n)]
                            with m.Else():
                                m.d.sync += [addr.eq(st_base), count.eq(st_n)]
                            m.next = "RD_CHECK"
                    with m.Case(Cmd.CSR_READ):
                        with m.If(length != 4):
                            finish(Status.BAD_LENGTH)
                        with m.Elif((w0[16:] == 0) | (w0[16:] > txw)):
                            finish(Status.BAD_ARG)
                        with m.Else():
                            m.d.sync += [addr.eq(w0[:16]), count.eq(w0[16:])]
                            m.next = "RD_CHECK"
                    with m.Case(Cmd.CSR_WRITE):
                        with m.If((length < 8) | (length[:2] != 0)):
                            finish(Status.BAD_LENGTH)
                        with m.Elif(w0[16:] != 0):
                            finish(Status.BAD_ARG)
                        with m.Else():
                            m.d.sync += [addr.eq(w0[:16]), count.eq((length >> 2) - 1)]
                            m.next = "WR_CHECK"
                    with m.Case(Cmd.RESET):
                        with m.If(length != 4):
                            finish(Status.BAD_LENGTH)
                        with m.Elif((w0 & ~RESET_FLAGS_MASK) != 0):
                            finish(Status.BAD_ARG)
                        with m.Else():
                            m.d.sync += self.soft_reset.eq(w0[0])
                            m.d.comb += clear_counters.eq(w0[RESET_COUNTERS.bit_length() - 1])
                            finish(Status.OK)
                    with m.Case(Cmd.STREAM):
                        with m.If((length == 0) | (length[:2] != 0)):
                            finish(Status.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += count.eq(length >> 2)
                            m.next = "STREAM"
                    with m.Default():
                        finish(Status.UNKNOWN_CMD)

            with m.State("COPY"):                   # PING: rx buffer -> tx buffer
                m.d.comb += [rx_rd.addr.eq(idx), tx_wr.addr.eq(idx), tx_wr.data.eq(rx_rd.data)]
                with m.If(idx == count):
                    finish(Status.OK, length)
                with m.Else():
                    m.d.comb += tx_wr.en.eq(1)
                    m.d.sync += idx.eq(idx + 1)

            with m.State("RD_CHECK"):               # every address of the burst must be readable
                cur = addr + idx
                m.d.comb += self.csr.addr.eq(cur)
                with m.If(idx == count):
                    m.d.sync += idx.eq(0)
                    m.next = "RD_ISSUE"
                with m.Elif((cur >= self.map_size) | ~self.csr.r_ok):
                    finish(Status.BAD_ADDR)
                with m.Else():
                    m.d.sync += idx.eq(idx + 1)

            with m.State("RD_ISSUE"):
                m.d.comb += [self.csr.addr.eq(addr + idx), self.csr.r_stb.eq(1)]
                m.next = "RD_STORE"

            with m.State("RD_STORE"):
                m.d.comb += [tx_wr.addr.eq(idx), tx_wr.data.eq(self.csr.r_data), tx_wr.en.eq(1)]
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == count - 1):
                    finish(Status.OK, count << 2)
                with m.Else():
                    m.next = "RD_ISSUE"

            with m.State("WR_CHECK"):               # every address must be writable before any write
                cur = addr + idx
                m.d.comb += self.csr.addr.eq(cur)
                with m.If(idx == count):
                    m.d.sync += idx.eq(0)
                    m.next = "WR"
                with m.Elif((cur >= self.map_size) | ~self.csr.r_ok):
                    finish(Status.BAD_ADDR)
                with m.Elif(~self.csr.w_ok):
                    finish(Status.READ_ONLY)
                with m.Else():
                    m.d.sync += idx.eq(idx + 1)

            with m.State("WR"):
                m.d.comb += [self.csr.addr.eq(addr + idx), rx_rd.addr.eq(idx + 1),
                             self.csr.w_data.eq(rx_rd.data)]
                with m.If(idx == count):
                    finish(Status.OK)
                with m.Else():
                    m.d.comb += self.csr.w_stb.eq(1)
                    m.d.sync += idx.eq(idx + 1)

            with m.State("STREAM"):                 # send cmd words and collect rsp words at once
                m.d.comb += in_stream.eq(1)
                m.d.comb += [rx_rd.addr.eq(sidx), self.cmd.valid.eq(sidx != count),
                             self.cmd.payload.last.eq(sidx == count - 1)]
                with m.If(self.cmd.valid & self.cmd.ready):
                    m.d.sync += [sidx.eq(sidx + 1), timer.eq(0)]
                m.d.comb += [self.rsp.ready.eq(~rsp_done), tx_wr.addr.eq(ridx), tx_wr.data.eq(self.rsp.payload.data)]
                with m.If(self.rsp.valid & self.rsp.ready):
                    m.d.sync += timer.eq(0)
                    with m.If(ridx < txw):
                        m.d.comb += tx_wr.en.eq(1)
                        m.d.sync += ridx.eq(ridx + 1)
                    with m.Else():
                        m.d.sync += overflow.eq(1)
                    with m.If(self.rsp.payload.last):
                        m.d.sync += rsp_done.eq(1)
                with m.If((sidx == count) & rsp_done):
                    with m.If(overflow):
                        m.d.comb += flag["stream_overflow"].eq(1)
                        finish(Status.OVERFLOW)
                    with m.Else():
                        finish(Status.OK, ridx << 2)
                with m.Elif(timer >= self.stream_timeout):
                    m.d.comb += flag["stream_timeout"].eq(1)
                    finish(Status.TIMEOUT)

            with m.State("FINISH"):                 # record the response, then send it
                m.d.comb += inc["executed"].eq(1)
                ok = res_status == Status.OK
                n_bytes = ok.replicate(16) & res_len
                m.d.sync += [rec_valid.eq(1), rec_seq.eq(seq), rec_crc.eq(rcrc), rec_status.eq(res_status),
                             rec_len.eq(n_bytes), t_seq.eq(seq), t_status.eq(res_status), t_len.eq(n_bytes),
                             self.soft_reset.eq(0), cnt.eq(0), crc.eq(0xFFFFFFFF)]
                m.next = "TX_HDR"

            # ---- encoder: A5 5A seq code len_l len_h hchk | payload | crc (LE)
            with m.State("TX_HDR"):
                with m.Switch(cnt[:3]):
                    with m.Case(0):
                        m.d.comb += self.tx.payload.eq(sync0)
                    with m.Case(1):
                        m.d.comb += self.tx.payload.eq(sync1)
                    with m.Case(2):
                        m.d.comb += self.tx.payload.eq(t_seq)
                    with m.Case(3):
                        m.d.comb += self.tx.payload.eq(t_status | RESPONSE)
                    with m.Case(4):
                        m.d.comb += self.tx.payload.eq(t_len[:8])
                    with m.Case(5):
                        m.d.comb += self.tx.payload.eq(t_len[8:])
                    with m.Case(6):
                        m.d.comb += self.tx.payload.eq(~crc[:8])
                m.d.comb += [self.tx.valid.eq(1), crc_in.eq(self.tx.payload)]
                with m.If(tx_take):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt >= 2):
                        m.d.sync += crc.eq(crc_next)
                    with m.If(cnt == 6):
                        m.d.sync += cnt.eq(0)
                        with m.If(t_len == 0):
                            m.next = "TX_CRC"
                        with m.Else():
                            m.next = "TX_PAY"

            with m.State("TX_PAY"):
                m.d.comb += [tx_rd.addr.eq(cnt[2:]), self.tx.valid.eq(1), crc_in.eq(self.tx.payload)]
                with m.Switch(cnt[:2]):
                    for lane in range(4):
                        with m.Case(lane):
                            m.d.comb += self.tx.payload.eq(tx_rd.data[8 * lane:8 * lane + 8])
                with m.If(tx_take):
                    m.d.sync += [crc.eq(crc_next), cnt.eq(cnt + 1)]
                    with m.If(cnt == t_len - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "TX_CRC"

            with m.State("TX_CRC"):
                fin = ~crc
                with m.Switch(cnt[:2]):
                    for lane in range(4):
                        with m.Case(lane):
                            m.d.comb += self.tx.payload.eq(fin[8 * lane:8 * lane + 8])
                m.d.comb += self.tx.valid.eq(1)
                with m.If(tx_take):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == 3):
                        m.d.sync += [cnt.eq(0), timer.eq(0)]
                        m.next = "HUNT"
        return m


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
    return {"link_top": LinkTop()}
