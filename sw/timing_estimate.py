"""A quick static-timing estimate of a synth_ecp5 netlist, per block and per path group.

`make synth` runs nextpnr-ecp5 (minutes) and reports one critical path; while working on timing one
wants every failing endpoint, grouped by block, from the synthesised netlist alone (`synth_ecp5`
takes ~1-2 minutes). This model walks the netlist's combinational cells from every register,
block-RAM or I/O output to every register / RAM input and adds fixed delays: ECP5 figures as
nextpnr-ecp5 reports them for this design (flip-flop clock-to-q 0.52 ns, LUT4 0.24 ns, a routed net
~0.85 ns plus a little per doubling of fan-out, carry 0.07 ns per CCU2C, DP16KD clock-to-out 5.7 ns
without its output register, MULT18X18D ~4 ns). There is no placement, so it is a *relative*
figure: on this design it ran ~10 % below nextpnr's routed critical path (19.0 ns against 21.6 ns
before issue 7's third round), and ~20 % below once routing dominated (8.4 ns against 10.8 ns
after round 4): then `--routed` is the view to use. Use it to find and rank paths; quote
nextpnr's Fmax.

    python -m sw.timing_estimate [NETLIST.json] [--budget NS] [--groups N] [--paths]
    python -m sw.timing_estimate --routed [REPORT.json] [--budget NS] [--groups N]

NETLIST defaults to the board core of the last `make synth` (build/synth/mcnn_board_core.ecp5/).
`--routed` lists the same per-block / per-group figures from nextpnr's routed timing instead:
`make synth` runs nextpnr with `--detailed-timing-report`, whose report gives the arrival time of
every register input after routing (not its path: the group is the endpoint register and the net
into it). That is the measured picture after a run; the estimate is the quick one before it.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "build" / "synth" / "mcnn_board_core.ecp5" / "mcnn_board_core.ecp5.json"
DEFAULT_REPORT = DEFAULT.with_name("report.json")
LSR_SETUP = 0.42        # nextpnr-ecp5's setup of a slice's LSR (clock enable and data: 0)

CLK_TO_Q = 0.52
SETUP = 0.1
NET_BASE, NET_PER_FANOUT_DOUBLING = 0.85, 0.12
CELL_DELAY = {"LUT4": 0.24, "CCU2C": 0.45, "PFUMX": 0.2, "L6MUX21": 0.2, "MULT18X18D": 4.0,
              "TRELLIS_DPR16X4": 0.3, "ALU54B": 3.0}
CARRY_COUT, CARRY_SUM = 0.07, 0.3        # from CIN
BRAM_CLK_TO_OUT = {"NOREG": 5.7, "OUTREG": 1.2}
ENDPOINTS = ("TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4", "MULT18X18D")
CLOCK_PINS = {"CLK", "CLKA", "CLKB", "WCK"}


def net_delay(fanout: int) -> float:
    return NET_BASE + NET_PER_FANOUT_DOUBLING * math.log2(max(1, fanout))


class Netlist:
    def __init__(self, doc: dict, top: str | None = None):
        mods = doc["modules"]
        if top is None:
            tops = [k for k, v in mods.items() if v.get("attributes", {}).get("top")]
            if len(tops) != 1:
                raise ValueError(f"netlist: expected one top module, found {tops or 'none'}; pass top=")
            top = tops[0]
        self.cells = mods[top]["cells"]
        self.driver, self.fanout = {}, collections.Counter()
        for name, c in self.cells.items():
            for pin, bits in c["connections"].items():
                out = c["port_directions"].get(pin) == "output"
                for b in bits:
                    if isinstance(b, str):
                        continue
                    if out:
                        self.driver[b] = (name, pin)
                    else:
                        self.fanout[b] += 1
        self._memo: dict = {}

    def arrival(self, bit) -> tuple[float, object]:
        """Arrival time at the driver pin of `bit`, and the input bit it came from."""
        if bit in self._memo:
            return self._memo[bit]
        if isinstance(bit, str) or bit not in self.driver:
            return 0.0, None
        name, pin = self.driver[bit]
        c = self.cells[name]
        t = c["type"]
        if t == "TRELLIS_FF":
            r = (CLK_TO_Q, None)
        elif t == "DP16KD":
            r = (BRAM_CLK_TO_OUT.get(c["parameters"].get("REGMODE_A", "NOREG"), 5.7), None)
        elif t in CELL_DELAY:
            self._memo[bit] = (0.0, None)      # a combinational loop ends here
            best = (1.0, None) if t == "TRELLIS_DPR16X4" else (0.0, None)   # stored data
            for q, bits in c["connections"].items():
                if c["port_directions"].get(q) != "input" or q in CLOCK_PINS:
                    continue
                if t == "TRELLIS_DPR16X4" and q != "RAD":
                    continue
                for b in bits:
                    if isinstance(b, str):
                        continue
                    a = self.arrival(b)[0]
                    if q == "CIN":
                        a += CARRY_COUT if pin == "COUT" else CARRY_SUM
                    else:
                        a += net_delay(self.fanout[b]) + CELL_DELAY[t]
                    if a > best[0]:
                        best = (a, b)
            r = best
        else:
            r = (0.0, None)                    # I/O, constants
        self._memo[bit] = r
        return r

    def endpoints(self) -> list[tuple[float, str, str, object]]:
        """(arrival ns, cell, pin, bit) of the worst input of every register / RAM, worst first."""
        out = []
        for name, c in self.cells.items():
            t = c["type"]
            if t not in ENDPOINTS or (t == "MULT18X18D" and not _registered_mult(c)):
                continue
            worst = (0.0, "", None)
            for q, bits in c["connections"].items():
                if c["port_directions"].get(q) != "input" or q in CLOCK_PINS:
                    continue
                if t == "TRELLIS_DPR16X4" and q == "RAD":
                    continue
                for b in bits:
                    if isinstance(b, str):
                        continue
                    a = self.arrival(b)[0] + net_delay(self.fanout[b]) + SETUP
                    if a > worst[0]:
                        worst = (a, q, b)
            out.append((worst[0], name, worst[1], worst[2]))
        return sorted(out, key=lambda e: -e[0])

    def path(self, bit) -> list[tuple[float, str, str]]:
        """(arrival, cell type, cell) from the path's start to the cell driving `bit`."""
        steps = []
        while bit is not None and not isinstance(bit, str) and bit in self.driver:
            a, prev = self.arrival(bit)
            name = self.driver[bit][0]
            steps.append((a, self.cells[name]["type"], name))
            bit = prev
        return steps[::-1]


def _registered_mult(c) -> bool:
    return any(c["parameters"].get(p, "NONE") not in ("NONE", "0") for p in ("REG_INPUTA_CLK", "REG_OUTPUT_CLK"))


def register_name(cell: str) -> str:
    """The Amaranth signal behind a mapped cell name (drops yosys' mapping suffixes)."""
    return re.sub(r"(_TRELLIS_FF_Q|\$DPRAM|_DO\d*_|_LUT4).*$", "", cell)


def block_of(cell: str) -> str:
    parts = cell.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def summary(nl: Netlist, budget: float) -> dict:
    ends = nl.endpoints()
    blocks = collections.Counter(block_of(n) for a, n, _, _ in ends if a > budget)
    groups: dict = {}
    for a, n, _pin, b in ends:
        if a <= budget:
            break
        p = nl.path(b)
        start = register_name(p[0][2]) if p else "?"
        key = f"{start} -> {register_name(n)}"
        g = groups.setdefault(key, {"ns": round(a, 2), "endpoints": 0, "path": p})
        g["endpoints"] += 1
    return {"endpoints": len(ends), "over_budget": sum(blocks.values()), "budget_ns": budget,
            "worst_ns": round(ends[0][0], 2) if ends else 0.0, "blocks": dict(blocks.most_common()),
            "groups": groups}


def routed_summary(report: dict, budget: float) -> dict:
    """The routed arrival (+ setup) of every register input in a nextpnr --detailed-timing-report
    JSON, worst per (cell, pin); endpoints above `budget` per block and per (register, pin, net)."""
    if "detailed_net_timings" not in report:
        raise ValueError("report: no detailed_net_timings; run nextpnr with --detailed-timing-report")
    eps: dict = {}
    for net in report["detailed_net_timings"]:
        for e in net.get("endpoints", []):
            a = max(e["delay"]) + (LSR_SETUP if e["port"] == "LSR" else 0.0)
            k = (e["cell"], e["port"])
            if a > eps.get(k, (0.0,))[0]:
                eps[k] = (a, net["net"])
    over = sorted(((a, c, pin, n) for (c, pin), (a, n) in eps.items() if a > budget), key=lambda x: -x[0])
    blocks = collections.Counter(block_of(c) for _, c, _, _ in over)
    groups: dict = {}
    for a, c, pin, n in over:
        g = groups.setdefault(f"{register_name(c)}.{pin} <- {n}", {"ns": round(a, 2), "endpoints": 0})
        g["endpoints"] += 1
    return {"endpoints": len(eps), "over_budget": len(over), "budget_ns": budget,
            "worst_ns": round(max((v[0] for v in eps.values()), default=0.0), 2),
            "blocks": dict(blocks.most_common()), "groups": groups}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sw.timing_estimate", description=__doc__.split("\n\n")[0])
    p.add_argument("netlist", nargs="?", type=Path, default=DEFAULT)
    p.add_argument("--budget", type=float, default=8.5, help="ns; endpoints above it are listed (default 8.5)")
    p.add_argument("--groups", type=int, default=30, help="path groups to list (default 30)")
    p.add_argument("--paths", action="store_true", help="print each group's worst path")
    p.add_argument("--routed", nargs="?", type=Path, const=DEFAULT_REPORT, metavar="REPORT",
                   help="list nextpnr's routed arrivals from its --detailed-timing-report JSON instead "
                        f"(default {DEFAULT_REPORT.relative_to(ROOT)})")
    a = p.parse_args(argv)
    if a.routed is not None:
        if not a.routed.exists():
            print(f"{a.routed}: no such report; run `make synth` first or name a nextpnr report", file=sys.stderr)
            return 2
        try:
            s = routed_summary(json.loads(a.routed.read_text()), a.budget)
        except ValueError as e:
            print(f"{a.routed}: {e}", file=sys.stderr)
            return 2
        _print(s, "routed endpoints", a.budget, a.groups, paths=False)
        return 0
    if not a.netlist.exists():
        print(f"{a.netlist}: no such netlist; run `make synth` first or name a synth_ecp5 JSON", file=sys.stderr)
        return 2
    _print(summary(Netlist(json.loads(a.netlist.read_text())), a.budget), "endpoints", a.budget, a.groups, a.paths)
    return 0


def _print(s: dict, what: str, budget: float, groups: int, paths: bool):
    print(f"{s['endpoints']} {what}, {s['over_budget']} above {budget} ns, worst {s['worst_ns']} ns")
    for b, n in s["blocks"].items():
        print(f"  {b:40s} {n:6d}")
    for key, g in list(s["groups"].items())[:groups]:
        print(f"{g['ns']:6.2f} ns x{g['endpoints']:4d}  {key}")
        if paths:
            for t, typ, name in g["path"]:
                print(f"          {t:6.2f} {typ:15s} {name}")


if __name__ == "__main__":
    sys.exit(main())
