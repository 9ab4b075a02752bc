"""Thread limit of NumPy's OpenBLAS (the golden model's stage runs use many small matrices)."""
from __future__ import annotations

import ctypes
import glob
from pathlib import Path


def limit_blas_threads(n: int = 1) -> bool:
    """Limit OpenBLAS threads of the running NumPy (small matrices; threads only contend on a
    loaded 2-core machine). Best effort: returns False if the library is not found."""
    import numpy
    base = Path(numpy.__file__).resolve().parent.parent
    for lib in glob.glob(str(base / "numpy.libs" / "libscipy_openblas*.so*")) + \
            glob.glob(str(base / "numpy" / ".libs" / "libscipy_openblas*.so*")):
        try:
            h = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                    "openblas_set_num_threads64_", "openblas_set_num_threads"):
            f = getattr(h, sym, None)
            if f is not None:
                f(int(n))
                return True
    return False
