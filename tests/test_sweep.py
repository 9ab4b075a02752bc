"""`mcnn sweep` (golden/sweep.py, sw/sweep.py) on a real dask.distributed cluster over TCP on localhost:
a separately started `dask scheduler` + 2 `dask worker` processes (as a user would start them) and a
LocalCluster of 2 worker processes; bad specs refused before anything runs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from golden.fileio import InputError
from golden.sweep import parse_spec
from golden.weights import DEFAULT_WEIGHTS
from sw.cli import main

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def _spec(tmp_path, text, name="s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------- the spec

@pytest.mark.parametrize("body, key, what", [
    ("[params]\nstuck_frac = [0.1]", "'stuck_frac'", "unknown parameter"),
    ("[params]\np_stuck_off = [0.5, 1.5]", "'p_stuck_off'", "<= 1"),
    ("[fixed]\nlevels = 1", "'levels'", ">= 2"),
    ("[params]\ndevice = ['yao2020', 'nosuch']", "'device'", "one of"),
    ("[params]\nlevels = {start = 2, stop = 10, num = 4}", "'levels'", "integer"),
    ("[params]\neta = [0.0]", "'eta'", "> 0"),
    ("[params]\ng_lo_us = [30.0]", "'g_lo_us'", "bounds"),           # DeviceParams.__post_init__
    ("[params]\nrelax_na = {dist = 'uniform', low = 0, n = 3}", "'relax_na'", "high"),
    ("[zip.a]\neta = [0.1, 0.2]\niterations = [1]", "[zip.a]", "different lengths"),
    ("[fixed]\neta = 0.1\n[params]\neta = [0.2]", "'eta'", "more than once"),
    ("[sweep]\nseeds = []", "'seeds'", "non-empty"),
    ("[sweep]\nstages = ['transfer', 'fly']", "'stages'", "ideal"),
    ("[sweep]\nworkers = 2", "'workers'", "unknown key"),
    ("[params\nlevels = [8]", "not valid TOML", ""),
    ("[plot]\nx = 'nosuch'", "'x'", "not a parameter"),
    ("[params]\nguard = ['no']", "'guard'", "true or false"),
])
def test_bad_spec_refused_naming_the_key(tmp_path, capsys, body, key, what):
    spec = _spec(tmp_path, body)
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mcnn sweep: error: ") and str(spec) in err, err
    assert key in err and what in err, err
    assert not out.exists()                  # refused before anything ran or was written


def test_points_ranges_zip_random():
    s = parse_spec({"sweep": {"seeds": {"start": 3, "num": 2}},
                    "fixed": {"n_test": 20},
                    "params": {"levels": {"start": 8, "stop": 32, "step": 8},
                               "relax_rel": {"start": 0.0, "stop": 0.1, "num": 3}},
                    "zip": {"lr": {"eta": [0.01, 0.02], "mode": ["closed", "open"]}}})
    assert s.seeds == (3, 4)
    assert len(s.points) == 4 * 3 * 2
    assert sorted({p["levels"] for p in s.points}) == [8, 16, 24, 32]          # stop on the grid: included
    assert sorted({p["relax_rel"] for p in s.points}) == [0.0, 0.05, 0.1]
    assert {(p["eta"], p["mode"]) for p in s.points} == {(0.01, "closed"), (0.02, "open")}     # zipped, not crossed
    assert all(p["n_test"] == 20 for p in s.points)
    assert len({json.dumps(p, sort_keys=True) for p in s.points}) == len(s.points)
    r = {"params": {"relax_na": {"dist": "loguniform", "low": 10.0, "high": 1000.0, "n": 50, "seed": 7}}}
    a = [p["relax_na"] for p in parse_spec(r).points]
    assert a == [p["relax_na"] for p in parse_spec(r).points] and len(set(a)) == 50     # seeded
    assert 10.0 <= min(a) and max(a) <= 1000.0 and min(a) < 50 and max(a) > 200       # spread over the decades
    assert parse_spec(r).hash != parse_spec({"params": {"relax_na": [1.0]}}).hash
    assert [p["guard"] for p in parse_spec({"params": {"guard": [True, False]}}).points] == [True, False]


# ------------------------------------------------------------------------------------- on Dask

@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes, started as a user would."""
    d = tmp_path_factory.mktemp("dask")
    sf = d / "scheduler.json"
    py = [sys.executable, "-m"]
    procs = [subprocess.Popen(py + ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                                    "--no-dashboard", "--scheduler-file", str(sf)], cwd=d, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        t0 = time.monotonic()
        while not sf.exists() and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        addr = json.loads(sf.read_text())["address"]
        for _ in range(2):
            procs.append(subprocess.Popen(py + ["distributed.cli.dask_worker", addr, "--nthreads", "1",
                                                "--no-dashboard", "--local-directory", str(d)], cwd=d, env=ENV,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client
        with Client(addr, timeout=60) as c:
            c.wait_for_workers(2, timeout=120)
        yield addr
    finally:
        for p in procs:                       # ours; nothing to keep
            p.kill()
            p.wait()


def _cli(*args) -> list:
    return [sys.executable, "-m", "sw.cli", "sweep", *map(str, args), "--quiet"]


def _journal(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "journal.jsonl").read_text().splitlines()[1:]]


TRANSFER = """
[sweep]
stages = ["transfer"]
seeds = [0, 1, 2, 3]
[fixed]
device = "bennett2019-linear"
n_test = 30
n_train = 100
[params]
levels = [8, 16, 32, 64]
"""


def test_killed_sweep_resumes_without_recomputing(tmp_path, scheduler, capsys):
    spec, out = _spec(tmp_path, TRANSFER), tmp_path / "out"
    p = subprocess.Popen(_cli(spec, "--out", out, "--scheduler", scheduler), cwd=ROOT, env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120 and p.poll() is None:
        if (out / "journal.jsonl").exists() and len(_journal(out)) >= 3:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)            # mid-sweep, no chance to clean up
    p.wait()
    first = (out / "journal.jsonl").read_text()
    n1 = len(_journal(out))
    assert 3 <= n1 < 16, f"the kill did not land mid-sweep ({n1} rows)"
    r = subprocess.run(_cli(spec, "--out", out, "--scheduler", scheduler), cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{n1} already done, {16 - n1} to run" in r.stderr
    final = (out / "journal.jsonl").read_text()
    assert final.startswith(first)                                   # the first run's rows kept as they were
    rows = _journal(out)
    keys = [x["key"] for x in rows]
    assert len(keys) == len(set(keys)) == 16                         # no finished point computed twice
    assert all(x["status"] == "ok" for x in rows)
    import pyarrow.parquet as pq
    t = pq.read_table(out / "results.parquet").to_pydict()
    assert sorted(zip(t["levels"], t["seed"])) == [(g, s) for g in (8, 16, 32, 64) for s in range(4)]
    assert all(0 <= a <= 100 for a in t["acc_transfer"]) and set(t["device"]) == {"bennett2019-linear"}
    csv = (out / "results.csv").read_text().splitlines()
    assert len(csv) == 17 and csv[0].startswith("key,seed,status")
    # fewer levels: coarser steps, the write-verify needs fewer pulses per cell
    pulses = {g: sum(m for m, lv in zip(t["transfer_pulses_mean"], t["levels"]) if lv == g) for g in (8, 64)}
    assert pulses[8] < pulses[64]
    # another spec into the same output: refused
    other = _spec(tmp_path, TRANSFER.replace("[8, 16, 32, 64]", "[8, 16]"), "other.toml")
    assert main(["sweep", str(other), "--out", str(out), "--scheduler", scheduler]) == 2
    err = capsys.readouterr().err
    assert "holds another sweep" in err and "--force" in err, err
    assert (out / "journal.jsonl").read_text() == final


def test_failed_point_reported_others_finish_retry(tmp_path, scheduler, capsys):
    bad = tmp_path / "bad"
    for ext in (".npz", ".json"):
        (tmp_path / f"bad{ext}").write_text("not weights")
    spec = _spec(tmp_path, f"""
[sweep]
stages = ["transfer"]
seeds = [0, 1]
[fixed]
device = "ideal"
n_test = 30
n_train = 100
[params]
weights = ["{DEFAULT_WEIGHTS}", "{bad}"]
""")
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--scheduler", scheduler, "--quiet"]) == 1
    err = capsys.readouterr().err
    failed = [ln for ln in err.splitlines() if "task failed" in ln]
    assert len(failed) == 2 and all(str(bad) in ln and "seed" in ln for ln in failed), err
    import pyarrow.parquet as pq
    t = pq.read_table(out / "results.parquet").to_pydict()
    st = dict(zip(zip(t["weights"], t["seed"]), t["status"]))
    assert st == {(str(DEFAULT_WEIGHTS), 0): "ok", (str(DEFAULT_WEIGHTS), 1): "ok",
                  (str(bad), 0): "failed", (str(bad), 1): "failed"}
    for ext in (".npz", ".json"):                     # repair the file: the re-run retries the failed ones only
        shutil.copy(f"{DEFAULT_WEIGHTS}{ext}", f"{bad}{ext}")
    assert main(["sweep", str(spec), "--out", str(out), "--scheduler", scheduler, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "2 already done, 2 to run" in err, err
    t = pq.read_table(out / "results.parquet").to_pydict()
    assert t["status"] == ["ok"] * 4
    acc = dict(zip(zip(t["weights"], t["seed"]), t["acc_transfer"]))
    assert acc[(str(bad), 0)] == acc[(str(DEFAULT_WEIGHTS), 0)]      # same weights now, same seed


def test_local_cluster_hybrid_parameters_reach_the_model(tmp_path, capsys):
    spec = _spec(tmp_path, """
[sweep]
stages = ["ideal", "transfer", "hybrid"]
seeds = [5]
[fixed]
device = "ideal"
n_test = 40
n_train = 200
iterations = 2
[params]
p_stuck_off = [0.0, 0.3]
[plot]
x = "p_stuck_off"
y = "acc_transfer"
""")
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "2", "--plot", "--quiet"]) == 0
    import pyarrow.parquet as pq
    t = pq.read_table(out / "results.parquet").to_pydict()
    assert t["p_stuck_off"] == [0.0, 0.3] and t["seed"] == [5, 5] and t["iterations"] == [2, 2]
    clean, stuck = 0, 1
    # ideal cells land exactly on their levels: the transfer is the integer datapath
    assert t["acc_transfer"][clean] == t["acc_integer"][clean] and t["transfer_failed"][clean] == 0
    # 30 % of the cells stuck at G_lo: they fail to verify, accuracy falls
    assert t["transfer_failed"][stuck] > 0.05 * t["transfer_cells"][stuck]
    assert t["acc_transfer"][stuck] < t["acc_transfer"][clean] - 10
    assert all(a is not None for a in t["acc_hybrid"]) and t["hybrid_program_ops"][stuck] > 0
    assert (out / "plot_acc_transfer_vs_p_stuck_off.png").stat().st_size > 1000
    # the tables of a finished sweep are its own; a directory holding a user's table is refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.csv").write_text("mine")
    assert main(["sweep", str(spec), "--out", str(other), "--workers", "1"]) == 2
    assert "exists" in capsys.readouterr().err and (other / "results.csv").read_text() == "mine"


def test_spec_errors_raise_input_error():
    with pytest.raises(InputError, match="'levels'"):
        parse_spec({"params": {"levels": ["many"]}})


def test_journal_drops_a_line_cut_by_a_kill(tmp_path):
    from sw.sweep import Journal
    spec = parse_spec({"params": {"levels": [8, 16]}})
    j = Journal(tmp_path / "j.jsonl", spec, force=False)
    j.append({"key": "a", "seed": 0, "status": "ok", "metrics": {"acc_transfer": 90.0}})
    j.append({"key": "b", "seed": 0, "status": "failed", "error": "boom"})
    with open(tmp_path / "j.jsonl", "a") as f:
        f.write('{"key": "c", "seed": 0, "sta')            # the kill came mid-write
    j2 = Journal(tmp_path / "j.jsonl", spec, force=False)
    assert set(j2.rows) == {"a", "b"} and j2.done("a") and not j2.done("b")      # failed: to be retried
    j2.append({"key": "c", "seed": 0, "status": "ok"})
    assert Journal(tmp_path / "j.jsonl", spec, force=False).done("c")         # the next line is whole
    with pytest.raises(InputError, match="another sweep"):
        Journal(tmp_path / "j.jsonl", parse_spec({"params": {"levels": [8]}}), force=False)
