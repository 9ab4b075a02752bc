"""The board file of an in-situ trained network: `mcnn train-insitu --save-board FILE`, read back by
`mcnn sim --network li2018 --board FILE` (issue 15: the trained network on the RTL).

One .npz (no pickle: np.load(allow_pickle=False) reads it), everything needed to rebuild the golden
InsituTrainer exactly:
  meta      JSON text: format + version, network, device preset name, the DeviceParams used (all
            fields, so a later change of the preset does not change a saved board), board seed and
            shape, InsituConfig (eta, mode, shifts, ...), iterations done, the softmax (M, sh) and
            scales (checked on load: the code that rebuilds must derive the same), the board's time,
            counters, the programming (prog) and read random streams' states and the noise buffer
            position, the PairProgrammer's blocked cells and statistics
  arrays    the per-cell state of golden.crossbar.Crossbar: g (uS), g_init, t_prog and the fresh
            array's per-cell parameters (lo, hi, k, stuck, nu_na, tail), the buffered normal draws

`load_board` gives an InsituTrainer whose forward (and further training) equals the saved one's.
Bad files raise golden.fileio.InputError (one line: which file, what is wrong).
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .fileio import InputError, write_atomic

FORMAT = "mcnn-insitu-board"
VERSION = 1
CELL_ARRAYS = ("g", "g_init", "t_prog", "lo", "hi", "k", "stuck", "nu_na", "tail")


def _meta(t, extra) -> dict:
    xb = t.xb
    return {"format": FORMAT, "version": VERSION, "network": t.net.name, "device": xb.p.name,
            "device_params": dataclasses.asdict(xb.p), "seed": xb.seed, "shape": list(xb.shape),
            "config": dataclasses.asdict(t.cfg), "iterations": int(t.it),
            "softmax": [int(t.sm_m), int(t.sm_sh)], "threshold": int(t.th),
            "t_s": float(xb.t_s), "counters": dict(xb.counters), "buf_pos": int(xb._pos),
            "rng_prog": xb._prog_rng.bit_generator.state, "rng_read": xb._read_rng.bit_generator.state,
            "blocked": sorted([list(map(int, c)) for c in t.prog.blocked]),
            "prog_stats": t.prog.stats.as_dict(), "info": extra or {}}


def save_board(t, path, force: bool = False, info: dict | None = None) -> Path:
    """InsituTrainer t's board, network and configuration -> path (.npz, written atomically; an
    existing file only with force). info: free JSON-able notes (e.g. the run's test accuracy)."""
    xb = t.xb
    arrays = {k: np.asarray(getattr(xb, k)) for k in CELL_ARRAYS}
    arrays["buf"] = np.asarray(xb._buf, dtype=np.float64)
    meta = json.dumps(_meta(t, info), default=_json_default)

    def write(f):
        np.savez_compressed(f, meta=np.array(meta), **arrays)
    return write_atomic(path, write, force)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def _read(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such board file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a board file (.npz)") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise InputError(f"{path}: not a board file of `mcnn train-insitu --save-board` ({e})") from None
    if "meta" not in data:
        raise InputError(f"{path}: not a board file of `mcnn train-insitu --save-board` (no meta)")
    try:
        meta = json.loads(str(data.pop("meta")))
    except ValueError as e:
        raise InputError(f"{path}: board file's meta is not JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a board file of `mcnn train-insitu --save-board` (format)")
    if meta.get("version") != VERSION:
        raise InputError(f"{path}: board file version {meta.get('version')!r}, this mcnn reads {VERSION}")
    missing = [k for k in CELL_ARRAYS + ("buf",) if k not in data]
    if missing:
        raise InputError(f"{path}: board file lacks {', '.join(missing)}")
    return meta, data


def _params(path, d: dict):
    from .devices import DeviceParams
    d = dict(d)
    for k in ("g_stuck_mid_us", "init_us", "window_us"):
        if isinstance(d.get(k), list):
            d[k] = tuple(d[k])
    try:
        return DeviceParams(**d)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: board file's device parameters: {e}") from None


def _crossbar(path, meta, data):
    from .crossbar import Crossbar
    p = _params(path, meta["device_params"])
    shape = tuple(int(s) for s in meta["shape"])
    xb = Crossbar(p, seed=int(meta["seed"]), n_pe=shape[0], n_rows=shape[1], n_bl=shape[2])
    for k in CELL_ARRAYS:
        a = data[k]
        ref = getattr(xb, k)
        if a.shape != ref.shape or a.dtype != ref.dtype:
            raise InputError(f"{path}: board array {k} is {a.dtype}{list(a.shape)}, expected "
                             f"{ref.dtype}{list(ref.shape)}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InputError(f"{path}: board array {k} holds non-finite values")
        setattr(xb, k, a.copy())
    xb.t_s, xb.counters = float(meta["t_s"]), dict(meta["counters"])
    xb._prog_rng.bit_generator.state = meta["rng_prog"]
    xb._read_rng.bit_generator.state = meta["rng_read"]
    xb._buf, xb._pos = data["buf"].tolist(), int(meta["buf_pos"])
    xb._cur = xb._exact = None
    return xb


def load_board(path):
    """A board file -> golden.insitu.InsituTrainer on the rebuilt Crossbar (its state, random
    streams, configuration and iteration count as saved). Raises InputError on a bad file."""
    from .hybrid import PairStats
    from .insitu import InsituConfig, InsituTrainer
    from .networks import NETWORKS
    path = Path(path)
    meta, data = _read(path)
    try:
        if meta["network"] not in NETWORKS:
            raise InputError(f"{path}: board file's network {meta['network']!r} is unknown to this mcnn")
        xb = _crossbar(path, meta, data)
        t = InsituTrainer(xb, meta["network"], InsituConfig(**meta["config"]))
        t.it = int(meta["iterations"])
        t.prog.blocked = {tuple(c) for c in meta["blocked"]}
        t.prog.stats = PairStats(**meta["prog_stats"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: board file's meta is incomplete or malformed ({type(e).__name__}: {e})") from None
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: board file does not rebuild: {e}") from None
    if [t.sm_m, t.sm_sh] != meta["softmax"] or t.th != meta["threshold"]:
        raise InputError(f"{path}: this mcnn derives softmax {t.sm_m, t.sm_sh} / threshold {t.th} from the board's "
                         f"configuration, the file says {tuple(meta['softmax'])} / {meta['threshold']}")
    t.board_info = meta.get("info", {})
    return t

