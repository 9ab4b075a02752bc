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

Device presets are refused for K > 1: their transfer and hybrid training are sequential stages that
program the board, and the inference shards would have to start from the board state they leave.
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
              pgo: bool = False) -> dict:
    """On a worker: one Verilator session on test images [start, stop); its report (with the
    `shard` sums). A failed check still returns the report (with its "error"). pgo: sim_top.run's."""
    from golden import weights as wfile
    from sw.cluster import pin_threads
    from tb.cosim import sim_top
    pin_threads()
    w = wfile.load(weights)
    with tempfile.TemporaryDirectory() as td:
        rep = Path(td) / "report.json"
        params = sim_top.session_params(weights, data, stop, rep, progress=False, device=device, seed=seed,
                                        shard=[start, stop])
        try:
            sim_top.run(w, params, pgo=pgo)
        except AssertionError:
            if not rep.exists():
                raise
        return json.loads(rep.read_text())


def run(w, weights, data, n: int, workers: int | None = None, scheduler: str | None = None,
        device: str = "ideal", seed: int = 0, keep_results: bool = False, progress: bool = False,
        pgo: bool = False) -> dict:
    """Co-simulate test images [0, n) in shards over the Dask workers (`workers` of a LocalCluster,
    or of the cluster at `scheduler`, where `workers` None means one shard per worker) -> the merged
    report, with "wall_seconds" from the first submission to the last shard's report."""
    from distributed import as_completed
    from tqdm import tqdm

    from sw.cluster import client
    if device != "ideal":
        raise ValueError("sharded co-simulation runs on ideal cells only")
    with _repo_on_path(), client(scheduler, workers) as c:
        have = len(c.scheduler_info()["workers"])
        if scheduler and not have:          # tasks would wait for a worker forever
            from golden.fileio import InputError
            raise InputError(f"--scheduler {scheduler}: no workers connected (start `dask worker {scheduler}`)")
        k = workers or have
        parts = shards(n, k)
        t0 = time.perf_counter()
        futs = [c.submit(run_shard, str(Path(weights).resolve()), str(Path(data).resolve()), lo, hi, device, seed,
                         pgo, pure=False) for lo, hi in parts]
        reps = []
        with tqdm(total=n, desc=f"inference (RTL, {len(parts)} shards)", unit="img", disable=not progress) as bar:
            for f in as_completed(futs):
                reps.append(f.result())
                bar.update(reps[-1]["images"])
        wall = time.perf_counter() - t0
    r = merge(reps, w, keep_results=keep_results)
    r["wall_seconds"] = round(wall, 2)
    return r


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


def merge(reports: list[dict], w, keep_results: bool = False) -> dict:
    """One report from the shards' reports (any order): the single session's keys, from the
    shards' counts and raw sums; plus "workers" and "shards" (each one's images and images/s)."""
    reps = sorted(reports, key=lambda r: r["shard"]["start"])
    sh = [r["shard"] for r in reps]
    edge = 0
    for s in sh:
        if s["start"] != edge or s["stop"] <= s["start"]:
            raise ValueError(f"shards not contiguous from 0: {[(s['start'], s['stop']) for s in sh]}")
        edge = s["stop"]
    n, first = edge, reps[0]
    out = {"images": n, "device": first["device"], "dataset": first.get("dataset"), "stages": {}}
    errors = [f"images {s['start']}..{s['stop'] - 1}: {r['error']}" for r, s in zip(reps, sh) if "error" in r]
    if all("correct_rtl" in s for s in sh):
        _merge_inference(out, reps, sh, n, w)
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


def _merge_inference(out, reps, sh, n, w):
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
        out["counters"] = {k: sum(r["counters"][k] for r in reps) for k in first["counters"]}
        out["counters"]["overrun"] = max(r["counters"]["overrun"] for r in reps)
        act = {lay: {k: np.array([v / n]) for k, v in d.items()} for lay, d in sums.items()}
        _energy(out, w, None, act)
