"""Streaming max-pool, p x p windows with stride p (non-overlapping); golden.datapath.maxpool.

Stream order (input and output): one u8 activation per transfer, NHWC raster order, i.e. for each
row h, for each column w, the C channels c = 0..C-1 in sequence; images follow each other back to
back (the block counts H*W*C transfers per image, no framing on the input). This is the order of
the conv outputs (per position, all output channels of that position, one channel per transfer as
the shift-and-add / differential / group-accumulator / relu_requant chain delivers them), and the
payload {"x": u8} equals rtl.relu_requant's output payload, so the two connect directly.
The output is the pooled map in the same order, (ho, wo, c), with `last` set on the final value of
each image. Rows h >= (H//p)*p and columns w >= (W//p)*p are consumed and ignored (26x26 p=3
drops the last 2 rows/columns, as golden.cnn.pool_windows does).

Line buffer: a Memory of (W//p)*C partial maxima (address wo*C + c) for the pooled row being
built, read asynchronously (distributed RAM, 64 x 8 bits for S2, 48 x 8 for S4) so the same
entry can be read-modified-written on consecutive cycles (C = 1). The first element of a window
overwrites its entry, the others take the max with it, and the last one (window row p-1, column
p-1) goes to the output register instead of being written back: a pooled value leaves one cycle
after the last pixel of its window is accepted. Throughput one input transfer per cycle; the input
stalls only when a window-completing item meets a full, back-pressured output register.
"""
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


def _cnt(n: int) -> unsigned:
    return unsigned(max(1, (n - 1).bit_length()))


class MaxPool(wiring.Component):
    def __init__(self, h: int = 26, w: int = 26, c: int = 8, p: int = 3, bits: int = 8):
        if not (1 <= p <= h and p <= w and c >= 1):
            raise ValueError(f"max-pool {p}x{p} does not fit a {h}x{w}x{c} map")
        self.h, self.w, self.c, self.p, self.bits = h, w, c, p, bits
        self.ho, self.wo = h // p, w // p
        self.in_layout = data.StructLayout({"x": unsigned(bits)})
        self.out_layout = data.StructLayout({"x": unsigned(bits), "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        H, W, C, P = self.h, self.w, self.c, self.p
        depth = self.wo * C
        m.submodules.line = line = Memory(shape=unsigned(self.bits), depth=depth, init=[])
        rd = line.read_port(domain="comb")
        wr = line.write_port()

        # position of the next input item
        hh = Signal(_cnt(H))                 # row
        ww = Signal(_cnt(W))                 # column
        cc = Signal(_cnt(C))                 # channel
        ph = Signal(_cnt(P))                 # row inside the window
        pw = Signal(_cnt(P))                 # column inside the window
        base = Signal(_cnt(depth + C))       # wo * C (runs past depth in dropped columns, unused there)

        keep = (hh < self.ho * P) & (ww < self.wo * P)
        first = (ph == 0) & (pw == 0)
        done = (ph == P - 1) & (pw == P - 1) & keep     # this item completes a window
        addr = base + cc
        x = self.i.payload.x
        new = Mux(first | (x > rd.data), x, rd.data)
        m.d.comb += [rd.addr.eq(addr), wr.addr.eq(addr), wr.data.eq(new)]

        # stall only a window-completing item while the output register is full and held
        m.d.comb += self.i.ready.eq(~done | ~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.If(self.i.valid & self.i.ready):
            with m.If(done):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.x.eq(new),
                             self.o.payload.last.eq((hh == self.ho * P - 1) & (ww == self.wo * P - 1)
                                                    & (cc == C - 1))]
            with m.Elif(keep):
                m.d.comb += wr.en.eq(1)
            # advance the position counters
            with m.If(cc == C - 1):
                m.d.sync += cc.eq(0)
                with m.If(ww == W - 1):
                    m.d.sync += [ww.eq(0), pw.eq(0), base.eq(0)]
                    with m.If(hh == H - 1):
                        m.d.sync += [hh.eq(0), ph.eq(0)]
                    with m.Else():
                        m.d.sync += [hh.eq(hh + 1), ph.eq(Mux(ph == P - 1, 0, ph + 1))]
                with m.Else():
                    m.d.sync += ww.eq(ww + 1)
                    with m.If(pw == P - 1):
                        m.d.sync += [pw.eq(0), base.eq(base + C)]
                    with m.Else():
                        m.d.sync += pw.eq(pw + 1)
            with m.Else():
                m.d.sync += cc.eq(cc + 1)
        return m


def default_instances():
    """S2 (26x26x8, 3x3) and S4 (8x8x12, 2x2) of Yao 2020."""
    return {"maxpool": MaxPool(), "maxpool_s4": MaxPool(8, 8, 12, 2)}
