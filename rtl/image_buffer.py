"""Image buffer: the input image stream into the image memory, held until the first step has read it.

Golden counterpart: the image as golden/cnn.py takes it (H x W x C u8 pixels, HWC raster order)
and its label; the stream packs 4 pixels per 32-bit word, pixel 4n + k in bits 8k..8k+7 of word
n, and ends with one word whose bits 0-7 are the label (tb/cosim packs it so, rtl/host.py
forwards it). `words` = ceil(pixels / 4) + 1.

  image      In  stream u32   the image words in order, the label word last; ready = ~full
  full       Out 1    a complete image is in the buffer (set by the label word, a register)
  free       In  1    pulse: the image has been read (the first step is done); `full` clears
  start      In  1    pulse: the controller starts the image; `label` takes the loaded label
  label      Out 8    the label of the image started last (a register; the next image may load
                      meanwhile, its label is kept apart until its own start)
  rd_addr[i] In  word address of read port i (one port per reader: the first step's lanes)
  rd_data[i] Out 32   the word at rd_addr[i] one cycle later (a registered block RAM read)

One memory, 1 write + n_read read ports. `load_last` (address = words - 1) is a register, set a
word ahead, rather than a compare on the accept path.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


class ImageBuffer(wiring.Component):
    """`words`: image words including the label word; `n_read`: read ports."""

    def __init__(self, words: int, n_read: int):
        self.words, self.n_read = words, n_read
        super().__init__({
            "image": In(stream.Signature(unsigned(32))),
            "full": Out(1), "free": In(1), "start": In(1), "label": Out(8),
            "rd_addr": In(data.ArrayLayout(range(words), n_read)), "rd_data": Out(data.ArrayLayout(32, n_read)),
        })

    def elaborate(self, platform):
        m = Module()
        words = self.words
        m.submodules.mem = mem = Memory(shape=unsigned(32), depth=words, init=[])
        for i in range(self.n_read):
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(self.rd_addr[i]), self.rd_data[i].eq(rp.data)]
        wp = mem.write_port()
        load_addr = Signal(range(words + 1))
        label_in = Signal(8)
        load_last = Signal(init=words == 1)   # load_addr == words - 1, a register
        m.d.comb += [self.image.ready.eq(~self.full), wp.addr.eq(load_addr), wp.data.eq(self.image.payload)]
        with m.If(self.image.valid & self.image.ready):
            m.d.comb += wp.en.eq(1)
            with m.If(load_last):
                m.d.sync += [label_in.eq(self.image.payload[:8]), load_addr.eq(0), self.full.eq(1),
                             load_last.eq(words == 1)]
            with m.Else():
                m.d.sync += [load_addr.eq(load_addr + 1), load_last.eq(load_addr == words - 2)]
        with m.If(self.start):
            m.d.sync += self.label.eq(label_in)
        with m.If(self.free):      # after the load above: a free wins (never both: ready = ~full)
            m.d.sync += self.full.eq(0)
        return m
