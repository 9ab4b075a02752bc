"""Object cache for Verilator's run-time library: verilated.mk's `$(OBJCACHE)` compiler prefix.

Every Verilator build compiles the same run-time files (verilated.cpp, verilated_vpi.cpp,
verilated_threads.cpp, verilated_dpi.cpp, ...: ~10 s of CPU per build at -Os, more at -O2) although
they depend only on the installed Verilator and the compile flags; ccache would share them, but no
PyPI wheel ships it. This prefix does that one job: a compile of a source file under
$VERILATOR_ROOT/include is looked up in `sim_build/.objcache/` by the hash of its command line
(output path left out), the source's bytes and the compiler's identity; a hit copies the object and
its dependency file, a miss compiles and stores them (atomically: parallel builds may race, the
last writer wins with identical content). Any other compile (the model's own files, cocotb's main,
which includes the model's header) runs unchanged. Usage: verilated.mk runs `$(OBJCACHE) $(CXX) ...`;
tb/harness.verilator_env sets OBJCACHE to this file.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / "sim_build" / ".objcache"


def _cacheable_source(argv: list[str]) -> Path | None:
    """The run-time library source this command compiles to an object, or None."""
    root = os.environ.get("VERILATOR_ROOT")
    if not root or "-c" not in argv or "-o" not in argv or any("-fprofile" in a for a in argv):
        return None     # (a profile-guided compile also reads the build's own *.gcda)
    srcs = [a for a in argv[1:] if a.endswith((".cpp", ".cc")) and not a.startswith("-")]
    if len(srcs) != 1:
        return None
    src = Path(srcs[0]).resolve()
    inc = (Path(root) / "include").resolve()
    return src if inc in src.parents else None


def _key(argv: list[str], src: Path) -> str:
    out = argv.index("-o")
    cmd = argv[:out] + argv[out + 2:] + [Path(argv[out + 1]).name]
    cxx = shutil.which(argv[0]) or argv[0]
    st = os.stat(cxx)
    h = hashlib.sha256("\0".join(cmd + [cxx, str(st.st_size), str(st.st_mtime_ns)]).encode())
    h.update(src.read_bytes())
    return h.hexdigest()[:24]


def main(argv: list[str]) -> int:
    src = _cacheable_source(argv)
    if src is None:
        return subprocess.call(argv)
    obj = Path(argv[argv.index("-o") + 1])
    dep = obj.with_suffix(".d")
    key = _key(argv, src)
    c_obj, c_dep = CACHE / f"{key}.o", CACHE / f"{key}.d"
    if c_obj.exists() and c_dep.exists():
        shutil.copyfile(c_obj, obj)
        shutil.copyfile(c_dep, dep)
        return 0
    rc = subprocess.call(argv)
    if rc == 0 and obj.exists() and dep.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        for a, b in ((dep, c_dep), (obj, c_obj)):       # the object last: its presence marks a full entry
            tmp = b.with_name(f"{b.name}.{os.getpid()}.tmp")
            shutil.copyfile(a, tmp)
            os.replace(tmp, b)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
