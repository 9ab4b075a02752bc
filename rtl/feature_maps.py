"""Feature maps: the RAMs between the steps, one copy per reader, all copies of a map written together.

Map f (f = 0 .. n_steps - 2) holds step f's output, step f + 1's input: u8 cells in HWC order
(address (h * W + w) * C + c), out_shape (H, W, C) of step f (rtl/controller.py `plan`). Golden
counterpart: the activations between layers of golden/cnn.py (after ReLU, requant and pooling).

Each reader has its own copy, so every copy is 1 write + 1 read port, which maps to block RAM
(3-4 read ports on one memory do not). Readers of map f: the lanes of step f + 1 (the patch
gather), the post's read-modify-write (max-pool), and for the last map the training feeder (its
FC inputs V).

  wr[f]        In (rtl/post.py FmWrite: en, addr, data)  the write into every copy of map f
  rmw[f]       In (rtl/post.py FmRead: addr -> data)     map f's read-modify-write copy
  lane{f}_addr In  [lanes of step f + 1] u16   one read address per lane (its own copy)
  lane{f}_data Out [lanes of step f + 1] u8    the cell at lane{f}_addr[l], one cycle later
  v_addr, v_en In / v_data Out                 the last map's feeder copy; data one cycle after
                                               an enabled address, held while v_en is low
Reads are synchronous (the RAM's registered output); a write is seen by a read of the next cycle.
"""
from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .post import FmRead, FmWrite


class FeatureMaps(wiring.Component):
    """`steps`: the controller's step table (out_shape per step, the lanes of the next step)."""

    def __init__(self, steps):
        self.n_maps = len(steps) - 1
        self.depth = [st.out_shape[0] * st.out_shape[1] * st.out_shape[2] for st in steps[:-1]]
        self.n_lanes = [len(st.lanes) for st in steps[1:]]
        ports = {"wr": In(FmWrite).array(self.n_maps), "rmw": In(FmRead).array(self.n_maps),
                 "v_addr": In(16), "v_en": In(1), "v_data": Out(8)}
        for f, n in enumerate(self.n_lanes):
            ports[f"lane{f}_addr"] = In(data.ArrayLayout(16, n))
            ports[f"lane{f}_data"] = Out(data.ArrayLayout(8, n))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        for f in range(self.n_maps):
            wr, rd = self.wr[f], []     # rd: (reader, addr, data, enable or None)
            lanes_a, lanes_d = getattr(self, f"lane{f}_addr"), getattr(self, f"lane{f}_data")
            rd += [(f"l{li}", lanes_a[li], lanes_d[li], None) for li in range(self.n_lanes[f])]
            rd.append(("rmw", self.rmw[f].addr, self.rmw[f].data, None))
            if f == self.n_maps - 1:
                rd.append(("v", self.v_addr, self.v_data, self.v_en))
            for r, addr, dat, en in rd:
                mem = Memory(shape=unsigned(8), depth=self.depth[f], init=[])
                m.submodules[f"fm{f + 1}_{r}"] = mem
                wp, rp = mem.write_port(), mem.read_port()
                m.d.comb += [wp.en.eq(wr.en), wp.addr.eq(wr.addr), wp.data.eq(wr.data),
                             rp.addr.eq(addr), dat.eq(rp.data)]
                if en is not None:      # (the other read ports are always enabled)
                    m.d.comb += rp.en.eq(en)
        return m
