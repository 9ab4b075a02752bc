"""Sharded co-simulation: `mcnn sim --workers K` and `mcnn bench --workers K`.

The first n test images are split into K contiguous shards; each shard is one Dask task
(`run_shard`, on a worker process of sw/cluster.py's client) that runs its own Verilator session of
tb/cosim/sim_main.py on its images, checked bit-exact against golden there, as in one process. The
host merges the shards' reports into one (`merge`, the one definition): counts and sums add up,
image indices become global, means are taken over all images from the shards' raw sums
(sim_main._shard_sums), latency and energy are recomputed from the merged figures exactly as the
single session computes them.

All shards use the same cached Verilator build: harness.run_block builds under an exclusive lock on
the build directory (the first builds, the others wait and find it current) and gives every session
its own test directory (run-<params hash>-<pid>, with its results.xml and test.log).

A device preset's ordered stages (transfer; with --iterations N the hybrid training) run first, once,
in one session (`run_stages`, sim_main's `stage_dir`), checked against golden as always; it returns
golden's copy of the board after each stage (pickled, checked equal to the RTL's conductances). Each
shard then runs its test images on those boards in turn (sim_main's `boards`): the inference before
and after the hybrid stage, as the single session runs them (inference does not change a board
without read noise). merge takes the stages, the programming activity and counters from the stage
session. Presets with read noise are refused: every read draws from the board's random stream, so
the draws would depend on the split.
Workers of a --scheduler need this checkout importable (PYTHONPATH) and the same --weights / --data paths.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


def shards(n: int, k: int) -> list[tuple[int, int]]:
    """[start, stop) of k contiguous shards of n images (k capped at n), sizes differing by <= 1."""
    if n < 1 or k < 1:
        raise ValueError(f"shards of {n} images over {k} workers")
    k = min(k, n)
    q, extra = divmod(n, k)
    out, lo = [], 0
    for i in range(k):
        hi = lo + q + (i < extra)
        out.append((lo, hi))
        lo = hi
    return out


def run_shard(weights: str, data: str, start: int, stop: int, device: str = "ideal", seed: int = 0,
              boards: list[bytes] | None = None, name: str | None = None, pgo: bool = False) -> dict:
    """On a worker: one Verilator session on test images [start, stop); its report (with the
    `shard` sums). boards: a staged run's pickled boards (run_stages), the images run on each in
    turn. A failed check still returns the report (with its "error"). pgo: sim_top.run's."""
    with tempfile.TemporaryDirectory() as td:
        paths = []
        for i, b in enumerate(boards or ()):
            paths.append(Path(td) / f"board{i}.pkl")
            paths[-1].write_bytes(b)
        kw = {"boards": [str(q) for q in paths]} if boards else {}
        return _session(weights, data, stop, Path(td), device=device, seed=seed, shard=[start, stop],
                        pgo=pgo, **({"name": name} if name else {}), **kw)[0]


def run_stages(weights: str, data: str, device: str, seed: int = 0, **kw) -> tuple[dict, list[bytes]]:
    """On a worker: a device preset's ordered stages in one session, without test-image inference
    (kw: iterations, guard, name) -> (its report, the pickled golden boards after the transfer
    and after the hybrid stage, if any). A failed check returns the report with its "error"."""
    with tempfile.TemporaryDirectory() as td:
        rep, _ = _session(weights, data, 1, Path(td), device=device, seed=seed, stage_dir=td, **kw)
        boards = [(Path(td) / f"{s}.pkl").read_bytes() for s in ("transfer", "hybrid")
                  if (Path(td) / f"{s}.pkl").exists() and "error" not in rep]
        return rep, boards


def _session(weights, data, n, td: Path, pgo: bool = False, **kw):
    """One sim_main session in td, its report (also when a check failed) and the weights."""
    from golden import weights as wfile
    from sw.cluster import pin_threads
    from tb.cosim import sim_top
    pin_threads()
    w = wfile.load(weights)
    rep = td / "report.json"
    try:
        sim_top.run(w, sim_top.session_params(weights, data, n, rep, progress=False, **kw), pgo=pgo)
    except AssertionError:
        if not rep.exists():
            raise
    return json.loads(rep.read_text()), w


def run(w, weights, data, n: int, workers: int | None = None, scheduler: str | None = None,
        device: str = "ideal", seed: int = 0, keep_results: bool = False, progress: bool = False,
        iterations: int = 0, guard: bool = True, name: str | None = None, eta: float | None = None,
        pgo: bool = False) -> dict:
    """Co-simulate test images [0, n) in shards over the Dask workers (`workers` of a LocalCluster,
    or of the cluster at `scheduler`, where `workers` None means one shard per worker) -> the merged
    report, with "wall_seconds" from the first submission to the last shard's report. A device
    preset's ordered stages (transfer, `iterations` of hybrid training at step `eta`, else the
    chosen one) run first in one task."""
    from distributed import as_completed
    from tqdm import tqdm

    from sw.cluster import client
    check_device(device)
    weights, data = str(Path(weights).resolve()), str(Path(data).resolve())
    with _repo_on_path(), client(scheduler, workers) as c:
        have = len(c.scheduler_info()["workers"])
        if scheduler and not have:          # tasks would wait for a worker forever
            from golden.fileio import InputError
            raise InputError(f"--scheduler {scheduler}: no workers connected (start `dask worker {scheduler}`)")
        parts = shards(n, workers or have)
        t0 = time.perf_counter()
        stages, boards = None, None
        if device != "ideal":
            kw = {"iterations": iterations, "guard": guard} | ({"name": name} if name else {}) | (
                {"eta": eta} if eta else {})
            stages, boards = c.submit(run_stages, weights, data, device, seed, pure=False, pgo=pgo, **kw).result()
            if "error" in stages:
                return {**stages, "workers": len(parts), "wall_seconds": round(time.perf_counter() - t0, 2)}
        futs = [c.submit(run_shard, weights, data, lo, hi, device, seed, boards, name, pgo, pure=False)
                for lo, hi in parts]
        reps = []
        with tqdm(total=n, desc=f"inference (RTL, {len(parts)} shards)", unit="img", disable=not progress) as bar:
            for f in as_completed(futs):
                reps.append(f.result())
                bar.update(reps[-1]["images"])
        wall = time.perf_counter() - t0
    r = merge(reps, w, keep_results=keep_results, stages=stages, board=_unpickle(boards[-1]) if stages else None)
    r["wall_seconds"] = round(wall, 2)
    return r


def check_device(device: str):
    """Refuse a preset with read noise (one line): its reads draw from the board's random stream in
    order, so sharded reads would draw differently from the single session's."""
    from golden.devices import preset
    from golden.fileio import InputError
    if device != "ideal" and preset(device).read_noise_rel > 0:
        raise InputError(f"--device {device} has read noise (read_noise_rel {preset(device).read_noise_rel}): every "
                         "read draws from the board's random stream, so it needs --workers 1")


def _unpickle(b):
    import pickle
    return pickle.loads(b)


@contextmanager
def _repo_on_path():
    """This checkout first on PYTHONPATH while a LocalCluster spawns its workers (they inherit the
    environment): they run the same tb/ and rtl/ as this process, hence the same Verilator build."""
    root, old = str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + ([old] if old else []))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def merge(reports: list[dict], w, keep_results: bool = False, stages: dict | None = None, board=None) -> dict:
    """One report from the shards' reports (any order): the single session's keys, from the
    shards' counts and raw sums; plus "workers" and "shards" (each one's images and images/s).
    A staged run (device preset): `stages` the stage session's report (transfer, hybrid, their
    programming activity and counters), `board` the final golden board (the energy's conductances)."""
    reps = sorted(reports, key=lambda r: r["shard"]["start"])
    sh = [r["shard"] for r in reps]
    edge = 0
    for s in sh:
        if s["start"] != edge or s["stop"] <= s["start"]:
            raise ValueError(f"shards not contiguous from 0: {[(s['start'], s['stop']) for s in sh]}")
        edge = s["stop"]
    n, first = edge, reps[0]
    out = {"images": n, "device": first["device"], "stages": {}, "dataset": first.get("dataset")}
    if stages:
        out["activity_programming"] = stages["activity_programming"]
    errors = [f"images {s['start']}..{s['stop'] - 1}: {r['error']}" for r, s in zip(reps, sh) if "error" in r]
    if all("correct_rtl" in s for s in sh):
        _merge_inference(out, reps, sh, n, w, stages, board)
    if stages:
        _merge_stages(out, sh, n, stages)
    out["workers"] = len(reps)
    t0 = min((s["t_start"] for s in sh if "t_start" in s), default=0.0)
    out["shards"] = [{"start": s["start"], "stop": s["stop"]} | ({
        "cosim_images_per_s": round((s["stop"] - s["start"]) / (s["t_end"] - s["t_start"]), 2),
        "inference_from_s": round(s["t_start"] - t0, 2), "inference_to_s": round(s["t_end"] - t0, 2),
        "cpu_images_per_s": round((s["stop"] - s["start"]) / s["cpu_seconds"], 2) if s.get("cpu_seconds") else None}
        if "t_end" in s else {}) for s in sh]
    if keep_results and all("classes" in s for s in sh):
        out["results"] = {"classes": [c for s in sh for c in s["classes"]],
                          "logits": [v for s in sh for v in s["logits"]]}
    if errors:
        out["error"] = "; ".join(errors)
    return out


def _merge_stages(out, sh, n, stages):
    """A staged run: the stage session's stages in the single session's order, the inference after
    the hybrid stage from the shards' sums (its images counted in the bit-exact totals, as there)."""
    st = {"transfer": stages["stages"]["transfer"], "inference": out["stages"].get("inference")}
    if "hybrid" in stages["stages"]:
        st["hybrid"] = stages["stages"]["hybrid"]
        if all("after_hybrid" in s for s in sh):
            a = [s["after_hybrid"] for s in sh]
            mism = sum(len(x["mismatched"]) for x in a)
            st["inference_after_hybrid"] = {
                "accuracy_rtl": float(sum(x["correct_rtl"] for x in a) / n * 100),
                "accuracy_golden": float(sum(x["correct_golden"] for x in a) / n * 100),
                "bitexact_images": n - mism, "mismatched_images": mism}
            if "bitexact_images" in out:
                out["bitexact_images"] += n - mism
                out["mismatched_images"] += mism
    out["stages"] = {k: v for k, v in st.items() if v is not None}
    out["activity_equal_golden"] = bool(out.get("activity_equal_golden", True) and all(
        v["equal"] for v in stages["activity_programming"].values()))


def _merge_inference(out, reps, sh, n, w, stages=None, board=None):
    """The inference stage's keys (sim_main._inference, _activity, _latency, _counters, _energy)."""
    import numpy as np

    from tb.cosim import sim_top
    from tb.cosim.sim_main import _energy, _latency
    first = reps[0]
    mism = [s["start"] + i for s in sh for i in s["mismatched"]]
    acc_rtl = float(sum(s["correct_rtl"] for s in sh) / n * 100)     # as the session's (cls == y).mean() * 100
    acc_golden = float(sum(s["correct_golden"] for s in sh) / n * 100)
    out["stages"]["inference"] = {"accuracy_rtl": acc_rtl, "accuracy_golden": acc_golden,
                                  "bitexact_images": n - len(mism), "mismatched_images": len(mism)}
    intervals = sum(s["intervals"] for s in sh)
    period = sum(s["span_cycles"] for s in sh) / intervals if intervals else float(first["cycles_first_image"])
    bound = first["bound_cycles_per_image"]
    out.update({
        "accuracy_rtl": acc_rtl, "accuracy_golden": acc_golden, "bitexact_images": n - len(mism),
        "mismatched_images": len(mism), "mismatched_indices": mism[:20], "cycles_per_image": round(period, 1),
        "cycles_first_image": first["cycles_first_image"], "bound_cycles_per_image": bound,
        "bound_per_layer": first["bound_per_layer"], "measured_over_bound": round(period / bound, 4),
        # the inference loops run side by side: all images over the time from the first start to the last end
        "cosim_images_per_s": round(n / (max(s["t_end"] for s in sh) - min(s["t_start"] for s in sh)), 2),
        "cosim_images_per_cpu_s": round(n / sum(s["cpu_seconds"] for s in sh), 2),   # all shards' CPU seconds
        "golden_images_per_s": round(n / sum(s["seconds_golden"] for s in sh), 1)})
    sums = {lay: {k: sum(s["activity_sums"][lay][k] for s in sh) for k in d}
            for lay, d in first["shard"]["activity_sums"].items()}
    mean = {lay: {k: round(v / n, 2) for k, v in d.items() if v} for lay, d in sums.items()}
    bad = [dict(m, image=s["start"] + m["image"]) for r, s in zip(reps, sh) for m in r["activity"]["mismatches"]]
    out["activity"] = {"per_image_mean": mean.pop("total"), "per_layer_mean": mean,
                       "images_equal_golden": sum(r["activity"]["images_equal_golden"] for r in reps),
                       "mismatches": bad[:10]}
    out["activity_equal_golden"] = all(r.get("activity_equal_golden", False) for r in reps)
    req = [sum(s["req_cycles"][k] for s in sh) / n for k in range(len(first["shard"]["req_cycles"]))]
    out.update(_latency(sim_top.build_controller(w), period, req))
    if all("counters" in r for r in reps):
        # the stage session's counters (its programming and training batches) + the shards' inference
        cs = [r["counters"] for r in reps] + ([stages["counters"]] if stages else [])
        out["counters"] = {k: sum(c[k] for c in cs) for k in first["counters"]}
        out["counters"]["overrun"] = max(c["overrun"] for c in cs)
        if stages:      # the golden crossbar's own counts and their check: the stage session's
            out["counters"].update({k: v for k, v in stages["counters"].items() if k not in out["counters"]})
        act = {lay: {k: np.array([v / n]) for k, v in d.items()} for lay, d in sums.items()}
        _energy(out, w, board, act)
