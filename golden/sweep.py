"""Parameter sweeps, the model side: the parameter registry, the TOML spec, its points, one point's metrics.

The driver that runs the points on Dask and writes the table is sw/sweep.py (`mcnn sweep SPEC`);
docs/sweeps.md describes the spec. Every name a spec may set comes from the dataclasses, not from a
hand-kept list:
  device     every field of golden/devices.py DeviceParams (over the preset named by `device`)
  periphery  golden/datapath.py DatapathConfig: input_bits, adc_bits, adc_full_scale_ua.<layer>
  stage      golden/report.py StageOptions: device, mode, eta, iterations, n_train, n_test, ...
  run        weights (a weights stem)
A spec:
  [sweep]  stages = ["transfer", "hybrid"]   seeds = [0, 1, 2]  (or {start = 0, num = 5})
           data = "data/mnist"  weights = "weights/yao2020"
  [fixed]  name = value                       (every point)
  [params] name = [values] | {start, stop, num} | {start, stop, step}
                | {dist = "uniform"|"loguniform", low, high, n, seed} | {dist = "normal", mean, sd, n, seed}
           (the [params] are crossed)
  [zip.GROUP] name = [values] ...            (varied together, equal lengths; crossed with the rest)
  [plot]   x = "levels"  y = "acc_transfer"  by = "device"
Every value is checked (type, range; DeviceParams.__post_init__ on every point's device) before
anything runs; a bad one is an InputError naming the file, the section and the key.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import cnn
from .datapath import DatapathConfig
from .devices import PRESETS, DeviceParams, preset
from .fileio import InputError
from .report import StageOptions

STAGES = ("ideal", "transfer", "hybrid", "replicated", "elm", "mlp-sign")
BENNETT = ("elm", "mlp-sign")          # golden/elm.py, golden/signmlp.py: the device is the point's device
LAYERS = tuple(L.name for L in cnn.weight_layers())
MAX_POINTS = 100_000


@dataclass(frozen=True)
class Param:
    name: str
    group: str                    # device | periphery | stage | run
    kind: str                     # int | float | bool | str | pair | path
    default: object = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple | None = None

    def check(self, v):
        """The value as the model takes it, or ValueError saying what was expected."""
        if self.kind == "pair":
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(x) for x in v)):
                raise ValueError(f"expected a pair of numbers [a, b], got {v!r}")
            return tuple(float(x) for x in v)
        if self.kind == "bool":
            if not isinstance(v, bool):
                raise ValueError(f"expected true or false, got {v!r}")
            return v
        if self.kind in ("str", "path"):
            if not isinstance(v, str):
                raise ValueError(f"expected a string, got {v!r}")
            if self.choices and v not in self.choices:
                raise ValueError(f"expected one of {', '.join(self.choices)}, got {v!r}")
            return v
        if self.kind == "int" and not (isinstance(v, int) and not isinstance(v, bool)):
            if not (_is_num(v) and float(v).is_integer()):
                raise ValueError(f"expected an integer, got {v!r}")
            v = int(v)
        if not _is_num(v) or not math.isfinite(v):
            raise ValueError(f"expected a number, got {v!r}")
        bad = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        bad = bad or (self.hi is not None and v > self.hi)
        if bad:
            raise ValueError(f"expected {self.range_text()}, got {v!r}")
        return int(v) if self.kind == "int" else float(v)

    def range_text(self) -> str:
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi is None else f"<= {self.hi:g}"
        return f"{'an integer' if self.kind == 'int' else 'a number'} {' and '.join(x for x in (lo, hi) if x)}"


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# hand-kept: only what a type cannot say (choices, ranges beyond "not negative")
_SPECIAL = {
    "model": dict(choices=("yao2020", "linear", "nonlinear")),
    "g_lo_us": dict(lo=0.0, lo_open=True), "g_hi_us": dict(lo=0.0, lo_open=True),
    "levels": dict(lo=2), "drift_t0_s": dict(lo=0.0, lo_open=True),
    "device": dict(choices=tuple(PRESETS)), "mode": dict(choices=("closed", "open")),
    "rep_update": dict(choices=("round", "batch")),
    "eta": dict(lo=0.0, lo_open=True), "rep_eta": dict(lo=0.0, lo_open=True),
    "rep_clip": dict(lo=0, hi=255), "n_train": dict(lo=1, hi=60_000), "n_test": dict(lo=1, hi=10_000),
    "adc_bits": dict(lo=1, hi=16), "input_bits": dict(lo=8, hi=16),      # the images are 8-bit
}
_STAGE_SKIP = {"overrides", "keep_arrays", "groups", "adc_bits", "input_bits", "adc_full_scale_ua"}


def _kind(f) -> str:
    t = str(f.type)
    return ("pair" if t.startswith("tuple") else "bool" if t == "bool" else "float" if "float" in t
            else "int" if "int" in t else "str")


def _param(name, group, kind, default) -> Param:
    sp = _SPECIAL.get(name, {})
    if kind in ("int", "float") and "lo" not in sp:
        sp = dict(sp, lo=0)
    if kind in ("int", "float") and (name.startswith("p_") or name.endswith("_frac")):
        sp = dict(sp, hi=1.0)                          # probabilities, fractions
    return Param(name, group, kind, default, **sp)


def _registry() -> dict[str, Param]:
    reg = {}
    base = PRESETS["yao2020"]
    for f in fields(DeviceParams):
        if f.name not in ("name", "notes"):
            reg[f.name] = _param(f.name, "device", _kind(f), getattr(base, f.name))
    dc = DatapathConfig()
    for f in fields(DatapathConfig):
        if f.name == "adc_full_scale_ua":              # one full scale per weight layer (uA)
            for L in LAYERS:
                reg[f"{f.name}.{L}"] = Param(f"{f.name}.{L}", "periphery", "float", None, lo=0.0, lo_open=True)
        else:
            reg[f.name] = _param(f.name, "periphery", _kind(f), getattr(dc, f.name))
    so = StageOptions()
    for f in fields(StageOptions):
        if f.name not in _STAGE_SKIP:
            reg[f.name] = _param(f.name, "stage", _kind(f), getattr(so, f.name))
    for name, kind, sp in (("hidden", "int", dict(lo=1)), ("epochs", "int", dict(lo=1)),
                           ("activation", "str", dict(choices=("tanh", "relu")))):
        reg[name] = Param(name, "bennett", kind, None, **sp)     # elm / mlp-sign; None: the network's default
    from .weights import DEFAULT_WEIGHTS
    reg["weights"] = Param("weights", "run", "path", str(DEFAULT_WEIGHTS))
    return reg


REGISTRY = _registry()


def device_of(point: dict) -> DeviceParams:
    """The point's device: its preset with its device fields overridden (DeviceParams checks them)."""
    over = {k: v for k, v in point.items() if REGISTRY[k].group == "device"}
    return preset(point.get("device", REGISTRY["device"].default), **over)


def resolve(point: dict, stages=STAGES) -> dict:
    """Every registry name with its value at this point as the stages run it (defaults, the
    preset's fields, the stage options of these stages filled in)."""
    dev = asdict(device_of(point))
    opt = asdict(stage_options(point, stages))
    out = {}
    for name, p in REGISTRY.items():
        v = dev[name] if p.group == "device" else opt[name] if name in opt else point.get(name, p.default)
        if name.startswith("adc_full_scale_ua."):
            v = opt["adc_full_scale_ua"].get(name.split(".", 1)[1])
        out[name] = list(v) if isinstance(v, tuple) else v
    return out


# ------------------------------------------------------------------------------------- spec


@dataclass
class Spec:
    path: str
    stages: tuple
    seeds: tuple
    data: str
    points: list                   # dicts of the names the spec sets
    plot: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        doc = {"stages": self.stages, "seeds": self.seeds, "data": self.data, "points": self.points}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def point_key(point: dict, seed: int, stages) -> str:
    """The journal's key of one task: a hash of the point, the seed and the stages."""
    doc = {"point": point, "seed": seed, "stages": list(stages)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _known() -> str:
    return ", ".join(REGISTRY)


def _values(where: str, name: str, v) -> list:
    """A spec entry's values: a list, a range, a random distribution or one value; each checked."""
    if name not in REGISTRY:
        raise InputError(f"{where} {name!r}: unknown parameter (known: {_known()})")
    p = REGISTRY[name]
    try:
        if isinstance(v, dict):
            vals = _expand(v, p.kind == "int")
        elif isinstance(v, list) and not (p.kind == "pair" and v and _is_num(v[0])):
            vals = v
        else:
            vals = [v]
        if not vals:
            raise ValueError("no values")
        return [p.check(x) for x in vals]
    except ValueError as e:
        raise InputError(f"{where} {name!r}: {e}") from None


def _expand(d: dict, integer: bool) -> list:
    keys = set(d)
    num = lambda k: _num(d, k)  # noqa: E731
    if "dist" in d:
        n = int(num("n"))
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(int(d.get("seed", 0)))
        dist = d["dist"]
        need = {"uniform": {"low", "high"}, "loguniform": {"low", "high"}, "normal": {"mean", "sd"}}
        if dist not in need:
            raise ValueError(f"dist must be uniform, loguniform or normal, got {dist!r}")
        extra = keys - need[dist] - {"dist", "n", "seed"}
        if extra or need[dist] - keys:
            raise ValueError(f"{dist} takes {', '.join(sorted(need[dist]))}, n, seed (got {', '.join(sorted(keys))})")
        if dist == "normal":
            x = rng.normal(num("mean"), num("sd"), n)
        elif dist == "uniform":
            x = rng.uniform(num("low"), num("high"), n)
        else:
            if not 0 < num("low") <= num("high"):
                raise ValueError("loguniform needs 0 < low <= high")
            x = np.exp(rng.uniform(math.log(num("low")), math.log(num("high")), n))
        return [round(float(t)) if integer else float(t) for t in x]
    if keys == {"start", "stop", "num"}:
        n = int(num("num"))
        if n < 1:
            raise ValueError(f"num must be >= 1, got {n}")
        x = np.linspace(num("start"), num("stop"), n)
    elif keys == {"start", "stop", "step"}:
        if num("step") == 0 or (num("stop") - num("start")) / num("step") < 0:
            raise ValueError("step must be non-zero and go from start towards stop")
        n = int(math.floor((num("stop") - num("start")) / num("step") + 1e-9)) + 1
        if n > MAX_POINTS:
            raise ValueError(f"{n} values, more than {MAX_POINTS}")
        x = num("start") + num("step") * np.arange(n)           # stop included when on the grid
    else:
        raise ValueError("a range is {start, stop, num} or {start, stop, step}; a distribution has dist, n, seed")
    return [round(float(t), 12) if not integer else float(t) for t in x]


def _num(d, k) -> float:
    if k not in d:
        raise ValueError(f"missing {k!r}")
    if not _is_num(d[k]):
        raise ValueError(f"{k} must be a number, got {d[k]!r}")
    return float(d[k])


def _seeds(where, v) -> tuple:
    if isinstance(v, dict):
        if set(v) == {"start", "num"}:
            v = list(range(int(_num(v, "start")), int(_num(v, "start")) + int(_num(v, "num"))))
        else:
            raise InputError(f"{where} 'seeds': expected a list of integers or {{start, num}}")
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not (isinstance(v, list) and v and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 32
                                              for s in v)):
        raise InputError(f"{where} 'seeds': expected a non-empty list of integers in 0..2**32-1, got {v!r}")
    if len(set(v)) != len(v):
        raise InputError(f"{where} 'seeds': repeated seeds {v!r}")
    return tuple(v)


def load_spec(path) -> Spec:
    """Read and check a TOML sweep spec; nothing runs before this passes."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse_spec(doc, str(path))


def parse_spec(doc: dict, path: str = "spec") -> Spec:
    extra = set(doc) - {"sweep", "fixed", "params", "zip", "plot"}
    if extra:
        raise InputError(f"{path}: unknown section [{sorted(extra)[0]}] (known: sweep, fixed, params, zip, plot)")
    sw = doc.get("sweep", {})
    bad = set(sw) - {"stages", "seeds", "data", "weights"}
    if bad:
        raise InputError(f"{path}: [sweep] {sorted(bad)[0]!r}: unknown key (known: stages, seeds, data, weights)")
    stages = sw.get("stages", ["transfer"])
    stages = [stages] if isinstance(stages, str) else stages
    if not (isinstance(stages, list) and stages and all(s in STAGES for s in stages)):
        raise InputError(f"{path}: [sweep] 'stages': expected a list from {', '.join(STAGES)}, got {stages!r}")
    seeds = _seeds(f"{path}: [sweep]", sw.get("seeds", [0]))
    from .idx import default_data_dir
    data = sw.get("data", str(default_data_dir()))
    if not isinstance(data, str):
        raise InputError(f"{path}: [sweep] 'data': expected a directory name, got {data!r}")
    fixed = {}
    for k, v in doc.get("fixed", {}).items():
        vals = _values(f"{path}: [fixed]", k, v)
        if len(vals) != 1:
            raise InputError(f"{path}: [fixed] {k!r}: one value expected (vary it in [params])")
        fixed[k] = vals[0]
    if "weights" in sw:
        fixed.setdefault("weights", _values(f"{path}: [sweep]", "weights", sw["weights"])[0])
    axes, seen = _axes(doc, path, set(fixed))
    n = math.prod(len(a) for a in axes) if axes else 1
    if n * len(seeds) > MAX_POINTS:
        raise InputError(f"{path}: {n} points x {len(seeds)} seeds is more than {MAX_POINTS} tasks")
    points = [dict(fixed, **{k: v for part in combo for k, v in part.items()}) for combo in itertools.product(*axes)]
    for pt in points:
        _check_point(path, pt, seen | set(fixed))
    return Spec(path, tuple(stages), seeds, data, points, _plot(doc.get("plot", {}), path, points))


def _axes(doc, path, taken: set) -> tuple[list, set]:
    axes, seen = [], set()

    def claim(where, k):
        if k in taken or k in seen:
            raise InputError(f"{where} {k!r}: set more than once (in [fixed], [params] or a [zip.*] group)")
        seen.add(k)

    for k, v in doc.get("params", {}).items():
        vals = _values(f"{path}: [params]", k, v)
        claim(f"{path}: [params]", k)
        axes.append([{k: x} for x in vals])
    zips = doc.get("zip", {})
    if not isinstance(zips, dict) or not all(isinstance(g, dict) for g in zips.values()):
        raise InputError(f"{path}: [zip]: expected groups [zip.NAME] of parameters")
    for g, group in zips.items():
        where = f"{path}: [zip.{g}]"
        cols = {k: _values(where, k, v) for k, v in group.items()}
        for k in cols:
            claim(where, k)
        lens = {len(v) for v in cols.values()}
        if len(lens) > 1:
            raise InputError(f"{where}: the zipped parameters have different lengths "
                             f"({', '.join(f'{k} {len(v)}' for k, v in cols.items())})")
        if cols:
            axes.append([dict(zip(cols, t)) for t in zip(*cols.values())])
    return axes, seen


def _check_point(path, pt: dict, names: set):
    """What only a whole point can say: DeviceParams' own checks on the point's device."""
    try:
        device_of(pt)
    except ValueError as e:
        keys = sorted(k for k in names if REGISTRY[k].group == "device" or k == "device")
        raise InputError(f"{path}: [params] {', '.join(map(repr, keys)) or 'device'}: {e} "
                         f"(at {json.dumps(pt, sort_keys=True)})") from None


def _plot(d: dict, path, points) -> dict:
    bad = set(d) - {"x", "y", "by"}
    if bad:
        raise InputError(f"{path}: [plot] {sorted(bad)[0]!r}: unknown key (known: x, y, by)")
    for k in ("x", "by"):
        if k in d and d[k] not in REGISTRY:
            raise InputError(f"{path}: [plot] {k!r}: {d[k]!r} is not a parameter (known: {_known()})")
    return dict(d)


# ------------------------------------------------------------------------------------- one point

_INPUTS: dict = {}


def _inputs(weights: str, data: str):
    """Weights and dataset of this process, loaded once (a worker runs many points)."""
    from . import weights as wmod
    from .idx import load_dataset
    key = (str(weights), str(data))
    if key not in _INPUTS:
        _INPUTS.clear()
        ds = load_dataset(data, image_shape=cnn.INPUT_SHAPE[:2], n_classes=cnn.weight_layers()[-1].n_out)
        _INPUTS[key] = (wmod.load(weights), ds)
    return _INPUTS[key]


def stage_options(point: dict, stages) -> StageOptions:
    """StageOptions of a point: the stage fields it sets, its device overrides and its periphery."""
    r = {k: v for k, v in point.items() if REGISTRY[k].group in ("stage", "periphery")}
    fs = {L: r.pop(f"adc_full_scale_ua.{L}") for L in LAYERS if f"adc_full_scale_ua.{L}" in r}
    opt = StageOptions(**r, adc_full_scale_ua=fs, keep_arrays=False,
                       overrides={k: v for k, v in point.items() if REGISTRY[k].group == "device"})
    if "rep_clip" in r:
        opt.rep_clip = r["rep_clip"] or None          # 0: no clipping (as mcnn eval --rep-clip 0)
    if "hybrid" not in stages:
        opt.iterations = 0
    if "replicated" not in stages:
        opt.groups, opt.rep_iterations = ("G1",), 0
    if "n_train" in r and "iterations" not in r and "hybrid" in stages:
        opt.iterations = max(1, opt.n_train // 100)   # one epoch of n_train, as mcnn eval
    return opt


def run_point(point: dict, seed: int, stages=("transfer",), data: str = "data/mnist") -> dict:
    """Metrics of one (point, seed): accuracies (%) of each stage asked for, transfer and
    programming counts. The device stages are golden/report.py run_seed's."""
    w, ds = _inputs(point.get("weights", REGISTRY["weights"].default), data)
    n_test = point.get("n_test")
    out = {}
    if "ideal" in stages:
        from .evaluate import evaluate
        dcfg = DatapathConfig(input_bits=point.get("input_bits", 8), adc_bits=point.get("adc_bits", 8),
                              adc_full_scale_ua={L: point[f"adc_full_scale_ua.{L}"] for L in LAYERS
                                                 if f"adc_full_scale_ua.{L}" in point})
        r = evaluate(w, ds, n_test, cfg=dcfg)
        out.update(acc_float=r["float"], acc_quantized=r["quantized"], acc_integer=r["integer"])
    if set(stages) & {"transfer", "hybrid", "replicated"}:
        from .report import run_seed
        opt = stage_options(point, stages)
        if opt.n_train > len(ds.train_images) or (n_test or 0) > len(ds.test_images):
            raise InputError(f"n_train {opt.n_train} / n_test {n_test}: the dataset has {len(ds.train_images)} "
                             f"training and {len(ds.test_images)} test images")
        out.update(device_metrics(run_seed(seed, w, ds, opt), stages))
    if set(stages) & set(BENNETT):
        out.update(bennett_metrics(point, seed, stages, data))
    return out


def bennett_metrics(point: dict, seed: int, stages, data: str) -> dict:
    """Bennett 2019 in-situ learners at this point's device (golden/elm.py, golden/signmlp.py)."""
    import dataclasses

    from .elm import run_elm
    from .idx import load_dataset
    from .signmlp import run_mlp
    key = ("bennett", str(data))
    if key not in _INPUTS:
        _INPUTS[key] = load_dataset(data)
    ds = _INPUTS[key]
    n_train, n_test = point.get("n_train"), point.get("n_test")
    ds = dataclasses.replace(ds, train_images=ds.train_images[:n_train], train_labels=ds.train_labels[:n_train],
                             test_images=ds.test_images[:n_test], test_labels=ds.test_labels[:n_test])
    p, out = device_of(point), {}
    if "elm" in stages:
        r = run_elm(ds, p, point.get("hidden") or 3000, point.get("epochs") or 3, seed)
        out.update(acc_elm=100 * r["acc_insitu"], acc_elm_ridge=100 * r["acc_ridge"], elm_pulses=r["pulses"],
                   seconds_elm_epoch=r["s_per_epoch"])
    if "mlp-sign" in stages:
        kind = point.get("activation") or "tanh"
        m = point.get("hidden") or (300 if kind == "tanh" else 800)
        r = run_mlp(ds, p, m, kind, point.get("epochs") or 8, seed)
        out.update(acc_mlp_sign=100 * r["acc"], mlp_sign_pulses=r["pulses"], seconds_mlp_sign_epoch=r["s_per_epoch"])
    return out


def device_metrics(r: dict, stages) -> dict:
    """The flat metrics of one run_seed result."""
    t, hs = r["transfer"], r["hybrid_stats"]
    out = {"acc_transfer": r["transferred"], "transfer_cells": t["cells"], "transfer_failed": t["failed"],
           "transfer_pulses_total": t["pulses_total"], "transfer_pulses_mean": t["pulses_mean"],
           "transfer_pulses_max": t["pulses_max"], "seconds_transfer": t["seconds"]}
    for k, v in r["transfer_error"].items():
        out[f"transfer_weight_error_sd_na.{k}"] = v["sd_na"]
    for k, v in r["device_error"].items():
        out[f"transfer_device_error_sd_na.{k}"] = v["sd_na"]
    if "hybrid" in stages:
        m = hs["main"]
        out.update(acc_hybrid=r["hybrid"], train_error_before=r["train_error_before"],
                   train_error_after=r["train_error_after"], hybrid_pulses=m["pulses"], hybrid_program_ops=m["cells"],
                   hybrid_failed=m["failed"], hybrid_saturated=m["saturated"],
                   seconds_hybrid=r["seconds_hybrid_epoch"])
        if r["hybrid_aged"] is not None:
            out["acc_hybrid_aged"] = r["hybrid_aged"]
    if "replicated" in stages:
        m = hs["replicated"]
        for i, (b, a) in enumerate(zip(r["groups_before"], r["groups_after"])):
            out[f"acc_group_before.G{i + 1}"], out[f"acc_group_after.G{i + 1}"] = 100 - b, 100 - a
        out.update(acc_split_before=r["split_before"], acc_split_after=r["split_after"],
                   replicated_pulses=m["pulses"], replicated_failed=m["failed"])
    out["seconds_point"] = r["seconds_seed"]
    return out
