"""Control/status registers: register classes, a map builder, an Amaranth CSR bank, host constants.

amaranth-soc is not available, so this is a small self-contained mechanism:

* **Registers** are small classes (amaranth-soc gpio.py style). A register has a name, a width
  (1..32 bits), an access mode and a reset value, and its docstring is its documentation::

      class Scratch(Register, access="rw"):
          "Free 32-bit register for the host (link tests)."

      class NPe(Register, access="ro", const=True):
          "Number of processing elements."

      Scratch(), NPe(reset=8), Register("mode", width=2, access="rw", doc="...")

  Access modes: ``ro`` (read-only; a hardware input port, or a constant with ``const=True``),
  ``rw`` (read/write storage; an output port), ``w1c`` (sticky bits: hardware sets them through
  the ``<name>_set`` input port, the host clears a bit by writing 1 to it; an output port too).
  The name is the class name in snake_case unless given.

* **Blocks** group registers (``Block("link", [...], windows={...})``); ``build_map(blocks)`` places
  the blocks one after another, each aligned to a power of two at least its size, and assigns one
  32-bit word address per register. Register names in the map are ``<block>_<register>``.
  The controller adds its own blocks later: ``build_map([link_block(), *controller_blocks])``.
  A *window* is a named run of consecutive registers of a block (the link's IDENTIFY and STATUS
  commands read theirs).

* **CsrBank** is the hardware: a CSR bus in (``CsrBus``: address, read/write strobes, write data;
  read data two cycles after the read strobe; ``r_ok``/``w_ok`` tell whether the address is
  readable/writable; the address is decoded into registers, so it must be on the bus a cycle
  before a strobe and r_ok/w_ok lag it by a cycle), register fields out (``bank.regs.<name>``).

* **Host constants**: rtl/hostgen.py renders the design's map (link and controller blocks) as
  ``sw/csr_map.py`` (``python -m rtl.hostgen``; ``--check`` fails if it is out of date).

The map hash (``CsrMap.hash``) is the CRC-32 of the names, addresses, widths and access modes
(not the reset values, so elaboration parameters do not change it); it is readable on the device
(``link_map_hash``) and the host driver compares it with the generated constants.
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

ACCESS = ("ro", "rw", "w1c")
DATA_WIDTH = 32


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class Register:
    """One CSR (see the module docstring). Subclass with class keywords or instantiate directly."""
    access: str = "rw"
    width: int = DATA_WIDTH
    reset: int = 0
    const: bool = False
    doc: str = ""

    def __init_subclass__(cls, access=None, width=None, reset=None, const=None, **kw):
        super().__init_subclass__(**kw)
        if access is not None:
            cls.access = access
        if width is not None:
            cls.width = width
        if reset is not None:
            cls.reset = reset
        if const is not None:
            cls.const = const
        cls.doc = " ".join((cls.__doc__ or "").split())

    def __init__(self, name: str | None = None, *, access=None, width=None, reset=None, const=None,
                 doc=None):
        self.name = name if name is not None else _snake(type(self).__name__)
        self.access = access if access is not None else type(self).access
        self.width = width if width is not None else type(self).width
        self.reset = reset if reset is not None else type(self).reset
        self.const = const if const is not None else type(self).const
        self.doc = doc if doc is not None else type(self).doc
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"register name {self.name!r}: lower-case identifier expected")
        if self.access not in ACCESS:
            raise ValueError(f"register {self.name}: access {self.access!r} not in {ACCESS}")
        if not 1 <= self.width <= DATA_WIDTH:
            raise ValueError(f"register {self.name}: width {self.width} not in 1..{DATA_WIDTH}")
        if not 0 <= self.reset < (1 << self.width):
            raise ValueError(f"register {self.name}: reset {self.reset:#x} does not fit {self.width} bits")
        if self.const and self.access != "ro":
            raise ValueError(f"register {self.name}: only ro registers can be constants")

    def __repr__(self):
        const = " const" if self.const else ""
        return f"<Register {self.name} {self.access}{const} w{self.width} reset={self.reset:#x}>"


@dataclass
class Block:
    """A named group of registers, placed contiguously. windows: {window: (first_reg, last_reg)}."""
    name: str
    registers: list
    doc: str = ""
    windows: dict = field(default_factory=dict)

    def __post_init__(self):
        names = [r.name for r in self.registers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"block {self.name}: duplicate register names {sorted(dup)}")
        if not self.registers:
            raise ValueError(f"block {self.name}: no registers")
        for w, (a, b) in self.windows.items():
            if a not in names or b not in names or names.index(a) > names.index(b):
                raise ValueError(f"block {self.name}: window {w} ({a}..{b}) is not a run of its registers")


@dataclass(frozen=True)
class MappedRegister:
    name: str       # <block>_<register>
    addr: int       # word address
    block: str
    reg: Register

    @property
    def access(self):
        return self.reg.access

    @property
    def width(self):
        return self.reg.width


@dataclass
class CsrMap:
    registers: list            # [MappedRegister], by address
    blocks: dict               # block name -> (base, size)
    windows: dict              # "<block>_<window>" -> (addr, count)
    size: int                  # address space in words (power of two)

    @property
    def addr_width(self) -> int:
        return max(1, (self.size - 1).bit_length())

    def __getitem__(self, name) -> MappedRegister:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def hash(self) -> int:
        desc = [(r.name, r.addr, r.width, r.access, r.reg.const) for r in self.registers]
        return zlib.crc32(json.dumps(desc).encode())


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def build_map(blocks, base: int = 0) -> CsrMap:
    """Assign addresses: blocks in order, each aligned to a power of two >= its size."""
    regs, bmap, windows = [], {}, {}
    addr = base
    for b in blocks:
        if b.name in bmap:
            raise ValueError(f"block {b.name!r} twice in the map")
        size = _pow2(len(b.registers))
        addr = (addr + size - 1) // size * size
        bmap[b.name] = (addr, size)
        names = [r.name for r in b.registers]
        for i, r in enumerate(b.registers):
            regs.append(MappedRegister(f"{b.name}_{r.name}", addr + i, b.name, r))
        for w, (first, last) in b.windows.items():
            windows[f"{b.name}_{w}"] = (addr + names.index(first), names.index(last) - names.index(first) + 1)
        addr += size
    full = [r.name for r in regs]
    if len(set(full)) != len(full):
        raise ValueError("duplicate register names across blocks")
    return CsrMap(regs, bmap, windows, _pow2(max(addr, 2)))


# ------------------------------------------------------------------ hardware

class CsrBus(wiring.Signature):
    """CSR bus, from the master's side. One access per strobe; r_data is valid two cycles after
    r_stb (and holds until the next read). The bank decodes the address into registers: the
    address must be on the bus the cycle before a strobe as well (a read takes the register
    selected by the previous cycle's address), and r_ok / w_ok (the address holds a readable /
    writable register) describe the address of the previous cycle."""

    def __init__(self, addr_width: int):
        self.addr_width = addr_width
        super().__init__({
            "addr": Out(addr_width),
            "r_stb": Out(1),
            "r_data": In(DATA_WIDTH),
            "r_ok": In(1),
            "w_stb": Out(1),
            "w_data": Out(DATA_WIDTH),
            "w_ok": In(1),
        })


def field_signature(csr_map: CsrMap) -> wiring.Signature:
    """Register fields as seen from the bank: rw/w1c values out, ro values and w1c set bits in."""
    members = {}
    for r in csr_map.registers:
        if r.access in ("rw", "w1c"):
            members[r.name] = Out(r.width, init=r.reg.reset)
        if r.access == "w1c":
            members[f"{r.name}_set"] = In(r.width)
        if r.access == "ro" and not r.reg.const:
            members[r.name] = In(r.width)
    return wiring.Signature(members)


class CsrBank(wiring.Component):
    """Registers of `csr_map` behind a CsrBus. Writes to read-only or unmapped addresses are ignored
    (the bus master checks w_ok first and reports the error); reads of unmapped addresses give 0."""

    def __init__(self, csr_map: CsrMap):
        self.map = csr_map
        super().__init__({"bus": In(CsrBus(csr_map.addr_width)), "regs": Out(field_signature(csr_map))})

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        # timing: the address is decoded into registered one-hot selects (and r_ok / w_ok), so a
        # read is an AND-OR of the selected register, not an address decode followed by a mux
        regs = self.map.registers
        sel = Signal(len(regs))
        m.d.sync += [sel[i].eq(bus.addr == r.addr) for i, r in enumerate(regs)]

        def lookup(addrs):
            # a constant table per 16 addresses (one LUT4 each), then a mux over the chunks
            lo = bus.addr[:4]
            out = Signal()
            with m.Switch(bus.addr[4:]):
                for hi in range(1 << max(0, len(bus.addr) - 4)):
                    tab = sum(1 << (a & 15) for a in addrs if a >> 4 == hi)
                    if tab:
                        with m.Case(hi):
                            m.d.comb += out.eq(Const(tab, 16).bit_select(lo, 1))
            return out
        m.d.sync += [bus.r_ok.eq(lookup([r.addr for r in regs])),
                     bus.w_ok.eq(lookup([r.addr for r in regs if r.access != "ro"]))]
        terms = []
        for i, r in enumerate(regs):
            value = r.reg.reset if r.reg.const else getattr(self.regs, r.name)
            if not (isinstance(value, int) and value == 0):
                terms.append(sel[i].replicate(DATA_WIDTH) & value)
        # two stages: OR of groups of 8 registers, registered at the strobe, then the OR of the groups
        groups = []
        for k in range(0, len(terms), 8):
            g = Signal(DATA_WIDTH, name=f"r_part{k // 8}")
            v = terms[k]
            for t in terms[k + 1:k + 8]:
                v = v | t
            with m.If(bus.r_stb):
                m.d.sync += g.eq(v)
            groups.append(g)
        r_stb_d = Signal()
        m.d.sync += r_stb_d.eq(bus.r_stb)
        r_value = Const(0, DATA_WIDTH)
        for g in groups:
            r_value = r_value | g
        with m.If(r_stb_d):
            m.d.sync += bus.r_data.eq(r_value)
        for i, r in enumerate(regs):
            f = getattr(self.regs, r.name, None)
            hit = bus.w_stb & sel[i]
            if r.access == "rw":
                with m.If(hit):
                    m.d.sync += f.eq(bus.w_data[:r.width])
            elif r.access == "w1c":
                s = getattr(self.regs, f"{r.name}_set")
                with m.If(hit):
                    m.d.sync += f.eq((f & ~bus.w_data[:r.width]) | s)
                with m.Else():
                    m.d.sync += f.eq(f | s)
        return m


def default_instances():
    regs = [Register("scratch"), Register("id", access="ro", const=True, reset=0x4D), Register("level", access="ro"),
            Register("events", access="w1c", width=8)]
    return {"csr_bank": CsrBank(build_map([Block("demo", regs)]))}
