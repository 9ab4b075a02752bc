"""`mcnn sweep SPEC`: run a sweep spec (golden/sweep.py) on Dask, one task per (point, seed).

Output directory (--out, default sweeps/<spec stem>):
  journal.jsonl    a header line (spec hash) then one line per finished task, appended, flushed and
                   fsynced as each task finishes: an interrupted sweep resumes from it, a failed
                   task is a line with status "failed" and its error, retried by the next run
  results.parquet  the tidy table, one row per (point, seed): every parameter, every metric
  results.csv      the same table as CSV (lists as JSON)
  plot_<y>_vs_<x>[_by_<by>].png   with --plot
The tables and plots in a directory whose journal belongs to this spec are the sweep's own and are
rewritten; a journal of another spec, or tables without a journal, are refused without --force.
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

from golden.fileio import InputError, check_outputs, write_atomic
from sw.argtypes import int_range

JOURNAL, TABLE, CSV = "journal.jsonl", "results.parquet", "results.csv"
FIXED_COLUMNS = ("key", "seed", "status", "error")


# ------------------------------------------------------------------------------------- worker side

def run_task(point: dict, seed: int, stages, data: str) -> dict:
    """One (point, seed) on a Dask worker: metrics, or the error (one line) that stopped it."""
    from sw.cluster import pin_threads
    pin_threads()
    t0 = time.perf_counter()
    try:
        from golden.sweep import run_point
        m = run_point(point, seed, tuple(stages), data)
        return {"status": "ok", "metrics": m, "seconds": time.perf_counter() - t0, "worker": os.getpid()}
    except Exception as e:                            # any failure of this point; the others go on
        msg = " ".join(str(e).split()) or type(e).__name__
        return {"status": "failed", "error": f"{type(e).__name__}: {msg}"[:2000], "worker": os.getpid()}


# ------------------------------------------------------------------------------------- journal

class Journal:
    """JSON lines: header {"spec_hash", "spec"} then rows {"key", "seed", "point", "status", ...}."""

    def __init__(self, path: Path, spec, force: bool):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}           # key -> latest row
        self.ok_counts: dict[str, int] = {}
        header = {"spec_hash": spec.hash, "spec": spec.path, "stages": list(spec.stages)}
        if self.path.exists() and not force:
            self._load(spec)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(header) + "\n", force=True)

    def _load(self, spec):
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):           # a line cut by a kill: drop it
            raw = raw[:raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(raw))
        lines = raw.decode().splitlines()
        try:
            head = json.loads(lines[0])
        except (IndexError, ValueError):
            raise InputError(f"{self.path}: not a sweep journal (pass --force to start over)") from None
        if head.get("spec_hash") != spec.hash:
            raise InputError(f"{self.path}: holds another sweep (spec {head.get('spec')}, hash "
                             f"{head.get('spec_hash')}; this spec {spec.hash}): pass --force to start over "
                             "or choose another --out")
        for ln in lines[1:]:
            try:
                r = json.loads(ln)
            except ValueError:
                continue
            self.rows[r["key"]] = r
            if r.get("status") == "ok":
                self.ok_counts[r["key"]] = self.ok_counts.get(r["key"], 0) + 1

    def done(self, key: str) -> bool:
        return self.rows.get(key, {}).get("status") == "ok"

    def append(self, row: dict):
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[row["key"]] = row


def _jsonable(o):
    return o.tolist() if hasattr(o, "tolist") else str(o)


# ------------------------------------------------------------------------------------- driver

def tasks_of(spec) -> list[tuple[str, dict, int]]:
    from golden.sweep import point_key
    return [(point_key(p, s, spec.stages), p, s) for p in spec.points for s in spec.seeds]


def check_inputs(spec):
    """What can be checked on this machine before anything runs: the data and weights files."""
    from golden import weights as wmod
    from golden.idx import load_dataset
    load_dataset(spec.data)
    for w in sorted({p.get("weights", "") for p in spec.points} - {""}):
        for f in wmod.paths(w):
            if not Path(f).is_file():
                raise InputError(f"{spec.path}: 'weights' {w!r}: {f} missing")


def run(spec, out: Path, workers=None, scheduler=None, force=False, progress=True, log=print) -> tuple[int, int]:
    """Run the tasks the journal does not hold as finished; (finished ok, failed) over the whole sweep."""
    from sw import cluster
    if not (out / JOURNAL).exists():
        check_outputs([out / TABLE, out / CSV], force)
    journal = Journal(out / JOURNAL, spec, force)
    todo = [t for t in tasks_of(spec) if not journal.done(t[0])]
    total = len(spec.points) * len(spec.seeds)
    log(f"sweep {spec.path}: {len(spec.points)} points x {len(spec.seeds)} seeds = {total} tasks, "
        f"{total - len(todo)} already done, {len(todo)} to run; output {out}")
    if todo:
        data = str(Path(spec.data).resolve())
        with cluster.client(scheduler=scheduler, workers=workers) as c:
            _execute(c, todo, spec, data, journal, total - len(todo), total, progress, log)
    write_table(spec, journal, out)
    ok = sum(journal.done(k) for k, _, _ in tasks_of(spec))
    return ok, total - ok


def _execute(c, todo, spec, data, journal, done0, total, progress, log):
    from distributed import as_completed
    from tqdm import tqdm
    by_key = {}
    futs = []
    for key, point, seed in todo:
        pt = dict(point)
        if "weights" in pt:
            pt["weights"] = str(Path(pt["weights"]).resolve())
        f = c.submit(run_task, pt, seed, list(spec.stages), data, key=f"sweep-{key}-{uuid.uuid4().hex[:8]}",
                     pure=False)
        by_key[f.key] = (key, point, seed)
        futs.append(f)
    bar = tqdm(total=total, initial=done0, disable=not progress, unit="task", file=sys.stderr, dynamic_ncols=True)
    try:
        for f in as_completed(futs):
            key, point, seed = by_key[f.key]
            try:
                r = f.result()
            except Exception as e:                       # the worker died (KilledWorker) or similar
                r = {"status": "failed", "error": f"{type(e).__name__}: {' '.join(str(e).split())}"[:2000]}
            row = {"key": key, "seed": seed, "point": point, **r}
            journal.append(row)
            if r["status"] != "ok":
                (bar.write if progress else log)(f"mcnn sweep: task failed: seed {seed}, "
                                                 f"point {json.dumps(point, sort_keys=True)}: {r['error']}")
            bar.update(1)
    finally:
        bar.close()


# ------------------------------------------------------------------------------------- table

def table_rows(spec, journal) -> list[dict]:
    """One dict per (point, seed) with a journal row, in spec order: every parameter and metric."""
    from golden.sweep import resolve
    rows = []
    for key, point, seed in tasks_of(spec):
        r = journal.rows.get(key)
        if r is None:
            continue
        row = {"key": key, "seed": seed, "status": r["status"], "error": r.get("error"),
               "stages": ",".join(spec.stages)}
        row.update(resolve(point, spec.stages))
        row.update(r.get("metrics") or {})
        row["seconds_task"] = r.get("seconds")
        rows.append(row)
    return rows


def write_table(spec, journal, out: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = table_rows(spec, journal)
    cols = list(dict.fromkeys(k for r in rows for k in r)) or list(FIXED_COLUMNS)
    data = {c: [r.get(c) for r in rows] for c in cols}
    for c, v in data.items():                # ints and floats in one column: floats
        if any(isinstance(x, float) for x in v) and any(isinstance(x, int) and not isinstance(x, bool) for x in v):
            data[c] = [None if x is None else float(x) for x in v]
    t = pa.table(data)
    write_atomic(out / TABLE, lambda f: pq.write_table(t, f), force=True)
    write_atomic(out / CSV, _csv_text(cols, rows), force=True)


def _csv_text(cols, rows) -> str:
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else json.dumps(r[c]) if isinstance(r[c], (list, dict)) else r[c]
                    for c in cols])
    return buf.getvalue()


# ------------------------------------------------------------------------------------- plot

def read_table(out: Path) -> dict:
    import pyarrow.parquet as pq
    p = Path(out) / TABLE
    if not p.is_file():
        raise InputError(f"{p}: no sweep table here (run `mcnn sweep SPEC --out {out}` first)")
    return pq.read_table(p).to_pydict()


def plot(out: Path, x: str, y: str, by: str | None = None) -> Path:
    """y against x: mean over the rows (seeds, and any other parameter) at each x, s.d. as a band,
    one line per value of `by`; y may name several metrics ("acc_transfer,acc_hybrid"), one line each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = read_table(out)
    ys = [m.strip() for m in y.split(",") if m.strip()]
    for name, what in [(x, "x"), (by, "by")] + [(m, "y") for m in ys]:
        if name is not None and name not in t:
            raise InputError(f"plot {what} {name!r}: not a column of {Path(out) / TABLE} "
                             f"(columns: {', '.join(c for c in t if not c.startswith('seconds'))})")
    fig, ax = plt.subplots(figsize=(6, 4))
    seeds = set()
    for m in ys:
        ok = [i for i, s in enumerate(t["status"]) if s == "ok" and t[m][i] is not None]
        seeds |= {t["seed"][i] for i in ok}
        for lv in (sorted({t[by][i] for i in ok}, key=str) if by else [None]):
            idx = [i for i in ok if by is None or t[by][i] == lv]
            label = " ".join(s for s in (m if len(ys) > 1 else "", "" if by is None else f"{by} = {lv}") if s)
            _line(ax, [t[x][i] for i in idx], [t[m][i] for i in idx], label or None)
    ax.set_xlabel(x)
    ax.set_ylabel(", ".join(ys))
    ax.set_title(f"{', '.join(ys)} vs {x}: mean and s.d. over {len(seeds)} seed(s)", fontsize=10)
    if by or len(ys) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"plot_{'+'.join(ys)}_vs_{x}" + (f"_by_{by}" if by else "") + ".png"
    p = write_atomic(Path(out) / name, lambda f: fig.savefig(f, format="png", dpi=110), force=True)
    plt.close(fig)
    return p


def _line(ax, xv: list, yv: list, label):
    """One line: the mean of yv at each distinct x, a band of one s.d."""
    import numpy as np
    xs = sorted(set(xv), key=lambda v: (isinstance(v, str), v))
    groups = [np.array([b for a, b in zip(xv, yv) if a == v], dtype=float) for v in xs]
    m = np.array([g.mean() for g in groups])
    s = np.array([g.std(ddof=1) if len(g) > 1 else 0.0 for g in groups])
    cat = any(isinstance(v, str) for v in xs)
    xp = np.arange(len(xs)) if cat else np.array(xs, dtype=float)
    line, = ax.plot(xp, m, marker="o", label=label)
    ax.fill_between(xp, m - s, m + s, color=line.get_color(), alpha=0.2)
    if cat:
        ax.set_xticks(xp, [str(v) for v in xs])


# ------------------------------------------------------------------------------------- CLI

def cmd_sweep(args):
    from golden.sweep import load_spec
    if args.spec == "plot":                          # mcnn sweep plot OUT
        if args.dir is None:
            raise InputError("usage: mcnn sweep plot OUT --x PARAM --y METRIC [--by PARAM]")
        return _plot_cmd(Path(args.dir), args, {})
    if args.dir is not None:
        raise InputError(f"unexpected argument {args.dir!r} (the output directory is --out DIR)")
    if args.scheduler:
        from sw.cluster import check_scheduler
        check_scheduler(args.scheduler)
    spec = load_spec(args.spec)
    check_inputs(spec)
    out = args.out or Path("sweeps") / Path(args.spec).stem
    if args.dry_run:
        print(f"{spec.path}: {len(spec.points)} points x {len(spec.seeds)} seeds, stages {', '.join(spec.stages)}")
        return 0
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    ok, failed = run(spec, out, workers=args.workers, scheduler=args.scheduler, force=args.force,
                     progress=not args.quiet and sys.stderr.isatty(), log=log)
    log(f"{ok} task(s) done, {failed} failed or missing; {time.perf_counter() - t0:.1f} s; "
        f"wrote {out / TABLE} and {out / CSV}")
    if args.plot:
        _plot_cmd(out, args, spec.plot)
    if failed:
        log(f"mcnn sweep: {failed} task(s) failed: re-run the same command to retry them")
        return 1
    return 0


def _plot_cmd(out, args, default: dict):
    x, y, by = args.x or default.get("x"), args.y or default.get("y"), args.by or default.get("by")
    if not x or not y:
        raise InputError("plot: name the parameter (--x, or x in the spec's [plot]) and the metric (--y, or y)")
    p = plot(out, x, y, by)
    print(f"wrote {p}", file=sys.stderr)
    return 0


def add_parser(sub):
    p = sub.add_parser("sweep", help="parameter sweep of a TOML spec on Dask (tidy Parquet/CSV table, plots); "
                                     "`mcnn sweep plot OUT --x P --y M` plots a finished one")
    p.add_argument("spec", help="the sweep spec (TOML; docs/sweeps.md), or 'plot'")
    p.add_argument("dir", nargs="?", default=None, help="with 'plot': the sweep's output directory")
    p.add_argument("--out", type=Path, default=None, help="output directory (default sweeps/<spec stem>)")
    p.add_argument("--workers", type=int_range(1, 1024), default=None,
                   help="worker processes of the local cluster (default: one per core)")
    p.add_argument("--scheduler", default=None,
                   help="tcp://HOST:PORT of a running `dask scheduler` (its workers need mcnn and the files)")
    p.add_argument("--force", action="store_true",
                   help="start over in an output directory holding another sweep's journal or tables")
    p.add_argument("--plot", action="store_true", help="after the sweep, plot (x, y, by of the spec's [plot])")
    p.add_argument("--x", default=None, help="plot: the parameter on the x axis")
    p.add_argument("--y", default=None, help="plot: the metric (e.g. acc_transfer, acc_hybrid)")
    p.add_argument("--by", default=None, help="plot: one line per value of this parameter")
    p.add_argument("--dry-run", action="store_true", help="check the spec, print the number of tasks, run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_sweep)
