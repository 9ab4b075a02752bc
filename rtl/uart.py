"""UART PHY, 8N1: receiver with mid-bit majority sampling and error detection, transmitter.

`divisor` is the number of clock cycles per bit (100 MHz / 115200 baud = 868; the co-simulation
uses 8). Both directions carry bytes on `amaranth.lib.stream` interfaces.

UartRx. The line goes through a 2-flip-flop synchroniser; a 3-sample shift register of the
synchronised line gives a majority vote, so a one-cycle glitch never flips a bit. A falling edge
starts a character; the start bit is re-checked at mid-bit (a glitch shorter than half a bit is
ignored), then the 8 data bits (LSB first) and the stop bit are voted at their centres, each
`divisor` cycles after the previous one. Outcomes of a character:
  * stop bit 1: the byte goes out on `o`; if the previous byte is still waiting (`o.valid &
    ~o.ready`) the new one is dropped and `overrun` pulses;
  * stop bit 0 and all data bits 0: a break (line held low) -- `brk` pulses once;
  * stop bit 0 otherwise: `framing_error` pulses.
After a break or framing error the receiver waits for the line to be high (idle) before it looks
for the next start bit, so a stuck-low line produces one event, not a stream of garbage bytes.

UartTx. Start bit, 8 data bits LSB first, one stop bit; `i.ready` is high when idle, so a byte
is accepted every 10 bits + 1 cycle.
"""
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class UartRx(wiring.Component):
    def __init__(self, divisor: int = 868):
        if divisor < 4:
            raise ValueError("divisor must be >= 4 cycles per bit")
        self.divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "brk": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        s1 = Signal(init=1)
        s2 = Signal(init=1)
        win = Signal(3, init=0b111)
        m.d.sync += [s1.eq(self.rx), s2.eq(s1), win.eq(Cat(s2, win[:2]))]
        vote = (win[0] & win[1]) | (win[0] & win[2]) | (win[1] & win[2])
        cnt = Signal(range(d))
        nbit = Signal(range(8))
        shreg = Signal(8)
        # registered cnt == d - 1 / cnt == d // 2 - 1, computed with each new value of cnt (timing)
        c_end = Signal()
        c_half = Signal()

        cnt_one = Signal()
        cnt_rst = Signal()
        run = Signal()
        with m.If(cnt_one):
            m.d.sync += [cnt.eq(1), c_end.eq(1 == d - 1), c_half.eq(1 == d // 2 - 1)]
        with m.Elif(cnt_rst):
            m.d.sync += [cnt.eq(0), c_end.eq(0 == d - 1), c_half.eq(0 == d // 2 - 1)]
        with m.Elif(run):
            m.d.sync += [cnt.eq(cnt + 1), c_end.eq(cnt == d - 2), c_half.eq(cnt == d // 2 - 2)]

        def cnt_inc():
            m.d.comb += run.eq(1)

        def cnt_set(v):
            m.d.comb += (cnt_one if v else cnt_rst).eq(1)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += [self.framing_error.eq(0), self.brk.eq(0), self.overrun.eq(0)]

        # The vote lags the line by 3 cycles (2 synchroniser stages + half the 3-sample window);
        # all sampling points are relative to the edge as seen by the vote, so the lag cancels.
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~vote):
                    cnt_set(1)
                    m.next = "START"
            with m.State("START"):
                cnt_inc()
                with m.If(c_half):
                    with m.If(vote):
                        m.next = "IDLE"            # glitch, not a start bit
                    with m.Else():
                        cnt_set(0)
                        m.d.sync += nbit.eq(0)
                        m.next = "DATA"
            with m.State("DATA"):
                cnt_inc()
                with m.If(c_end):
                    cnt_set(0)
                    m.d.sync += [shreg.eq(Cat(shreg[1:], vote)), nbit.eq(nbit + 1)]
                    with m.If(nbit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                cnt_inc()
                with m.If(c_end):
                    cnt_set(0)
                    with m.If(vote):
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Elif(shreg == 0):
                        m.d.sync += self.brk.eq(1)
                        m.next = "WAIT_IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "WAIT_IDLE"
            with m.State("WAIT_IDLE"):
                with m.If(vote):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    def __init__(self, divisor: int = 868):
        if divisor < 4:
            raise ValueError("divisor must be >= 4 cycles per bit")
        self.divisor = divisor
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        cnt = Signal(range(d))
        nbit = Signal(range(11))
        shreg = Signal(10, init=0x3FF)
        m.d.comb += self.tx.eq(shreg[0])
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [shreg.eq(Cat(0, self.i.payload, 1)), cnt.eq(0), nbit.eq(0)]
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == d - 1):
                    m.d.sync += [cnt.eq(0), shreg.eq(Cat(shreg[1:], 1)), nbit.eq(nbit + 1)]
                    with m.If(nbit == 9):
                        m.next = "IDLE"
        return m


class Uart(wiring.Component):
    """UartRx + UartTx with the pins `rx`/`tx`, bytes in `o` (received) and `i` (to send)."""

    def __init__(self, divisor: int = 868):
        self.divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "o": Out(stream.Signature(8)),
            "i": In(stream.Signature(8)),
            "framing_error": Out(1),
            "brk": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UartRx(self.divisor)
        m.submodules.utx = utx = UartTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx),
                     self.framing_error.eq(urx.framing_error), self.brk.eq(urx.brk), self.overrun.eq(urx.overrun)]
        wiring.connect(m, urx.o, wiring.flipped(self.o))
        wiring.connect(m, wiring.flipped(self.i), utx.i)
        return m


def default_instances():
    return {"uart": Uart()}
