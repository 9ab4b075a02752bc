"""Hybrid training (Yao 2020, Fig. 3 and Methods, equations 1-2): after the transfer, only the FC
layer is trained in situ, through the device model.

One iteration, batch of 100 training images (from the training split, golden.idx.split_sizes; MNIST the first 55,000):
  V      FC inputs (u8, 192) of the batch: the S4 outputs of the golden integer datapath run through
         the transferred board (conv layers on the crossbar, ADC, integer blocks)
  logits FC layer through the crossbar + ADC + golden integer datapath (layer_accumulate)
  p      golden fixed-point softmax (Q1.15), delta = p - onehot (golden.datapath.delta)
  dI     golden.update: accumulate -> weight_update (eta as (M, sh)) -> threshold (Th = 1.5 uS = 15
         codes) -> commands, row by row (PE, SL row, BL)
  each command is carried out on the pair (G+, G-) by PairProgrammer (rule below).

Pair rule (d = ProgramCommand.d_code, the desired change of I+ - I- in 20 nA verify codes). Both
devices are read once (verify reads c+, c-). The device whose move *lowers* its conductance goes
first: for d > 0 lower G-, for d < 0 lower G+, by at most its room above the window floor
(2.5 uS = 25 codes); the remainder raises the other device, by at most its room below the window
top (20 uS = 200 codes). So a pair stays in the 2.5-20 uS window and keeps one device near the
floor when it can (the canonical form of the transferred weights, lowest read current). A part too
small for the programming scheme to resolve (<= the verify margin in closed loop, < half a nominal
pulse in open loop) is given to the other device if it has room, else dropped; whatever exceeds
both rooms is dropped (counted as saturated). Cells that once failed to verify are blocked: they get
no room and are never programmed again (they are listed in the failures, with the iteration).

Modes: "closed" - closed-loop write-verify (golden.write_verify through Crossbar.program_cell) to
c - a (lowered device) and c + b (raised device); "open" - open loop: the number of identical
pulses that the nominal device model (no noise, no device-to-device spread, starting from the read
state) needs to get closest to the target, then no verify.

Speed: C1/C3 never change during hybrid training, so without read noise the FC inputs of every
image are computed once per transferred board (`fc_inputs`) and reused; only the FC layer is
evaluated per iteration. With read noise (device option read_noise_rel > 0) a cached FC input
would hide the noise of the conv reads, so `FeatureSource` recomputes the conv layers through the
crossbar every time features are asked for (slower, exact).

eta: chosen per run by `choose_step` on the training/validation split of the dataset
(golden.idx.split_sizes; MNIST: train on images 0..54,999, score validation images 55,000..): every
candidate of a grid trains a copy of the run's own transferred board, reseeded (programming noise
and batch order disjoint from the run's), for the run's iterations; the lowest validation error
wins. `mcnn eval`, `mcnn sim`, `mcnn board` and energy estimates all use it; never the test set.
`select_eta` is the older, expensive study (3 seeds, one epoch each; docs/devices.md has its table).

Guard (`Guard`, host side on the board): the running batch training error (the forward pass of each
training batch, which the board reports anyway) is watched; when the mean of the last `window`
batches exceeds the lowest such mean so far by `margin` points, the step is halved (eta_sh + 1:
exact; the host rewrites the learning CSR before that batch's update, FINISH) and the window and
the reference restart with the next batch. At most `max_decays` halvings.

Replicated convolver groups (golden/replicate.py) share the FC: `replicated_batches` sends batch i
to group i mod 3; by default equation 1 is summed over a round (one batch per group) before the
threshold and one programming pass, with update clipping (`clip_update`, 30 codes) - per-batch
steps let the groups' conflicting needs drive the shared FC into oscillation (docs/devices.md).
Their step is the board's chosen main step (golden.report.StageOptions.rep_eta None) unless given.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import cnn, update
from .datapath import Datapath, DatapathConfig, argmax, delta, layer_accumulate, softmax_fixed, softmax_params
from .devices import NA_PER_US, RESET, SET, step
from .mapping import Mapping
from .replicate import conv_layers
from .write_verify import VERIFY_LSB_NA

STEP_GRID = tuple(2 ** (k / 2) for k in range(-4, 4))   # choose_step's grid, x sqrt(2): 1/4 .. 2.83 x threshold_step
REP_CLIP_CODE = 2 * update.TH_CODE   # replicated groups: update clipping at 30 codes (1.2 weight steps)
N_TRAIN = 55_000            # MNIST's training split (golden.idx.split_sizes(60,000)): HybridConfig's default only
VAL_SUBSET = 1000           # choose_step scores on at most this many validation images
STEP_SEED = 1_000_033       # choose_step's batch order and programming noise: seed + this (disjoint)


# ------------------------------------------------------------------ features and FC evaluation

def _sub_mapping(mapping: Mapping, names) -> Mapping:
    return Mapping({k: v for k, v in mapping.groups.items() if k in names}, mapping.n_pe, mapping.n_rows, mapping.n_bl)


def fc_inputs(array, int_w: dict, q, mapping: Mapping, x_u8, layers=cnn.YAO2020,
              cfg: DatapathConfig | None = None, batch: int = 250) -> np.ndarray:
    """FC inputs (N, fan_in) u8: the golden integer datapath of the conv/pool layers through `array`."""
    convs = conv_layers(layers)
    names = {L.name for L in cnn.weight_layers(convs)}
    dp = Datapath(int_w, q, convs, _sub_mapping(mapping, names), cfg or DatapathConfig(), array=array)
    out = []
    for i in range(0, len(x_u8), 5000):
        out.append(cnn.flatten_chw(dp.run(x_u8[i:i + 5000], batch=batch).logits).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, 0), np.uint8)


def fc_logits(array, fc_groups, v, cfg: DatapathConfig | None = None, chunk: int = 10000) -> np.ndarray:
    """Integer FC logits (N, n_out) of FC inputs v through the array (golden layer_accumulate)."""
    cfg = cfg or DatapathConfig()
    v = np.asarray(v)
    adc = cfg.adc(fc_groups[0].layer)
    return np.concatenate([layer_accumulate(array, fc_groups, v[i:i + chunk].astype(np.int64), cfg.input_bits, adc)
                           for i in range(0, len(v), chunk)])


def error_pct(array, fc_groups, v, labels, cfg=None) -> float:
    return float((argmax(fc_logits(array, fc_groups, v, cfg)) != np.asarray(labels)).mean() * 100)


class FeatureSource:
    """FC inputs of images for one conv group: cached (no read noise) or recomputed per request.
    Cached: the images of cache_idx (default all) are computed at once, any other image when first
    asked for (its features do not depend on when they are computed)."""

    def __init__(self, xb, int_w, q, mapping, images, layers=cnn.YAO2020, cfg=None, cache_idx=None):
        self.xb, self.int_w, self.q, self.mapping = xb, int_w, q, mapping
        self.images, self.layers, self.cfg = images, layers, cfg
        self.cached = xb.p.read_noise_rel <= 0
        self._rows = {}
        self._feat = None
        if self.cached:
            idx = np.arange(len(images)) if cache_idx is None else np.unique(np.asarray(cache_idx))
            self._feat = fc_inputs(xb, int_w, q, mapping, images[idx], layers, cfg)
            self._rows = np.full(len(images), -1, dtype=np.int64)
            self._rows[idx] = np.arange(len(idx))

    def __call__(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        if self.cached:
            r = self._rows[idx]
            if (r < 0).any():
                new = np.unique(idx[r < 0])
                f = fc_inputs(self.xb, self.int_w, self.q, self.mapping, self.images[new], self.layers, self.cfg)
                self._rows[new] = len(self._feat) + np.arange(len(new))
                self._feat = np.concatenate([self._feat, f]) if len(self._feat) else f
                r = self._rows[idx]
            return self._feat[r]
        return fc_inputs(self.xb, self.int_w, self.q, self.mapping, self.images[idx], self.layers, self.cfg)


# ------------------------------------------------------------------ the pair rule

def nominal_pulses(p, g_from: float, g_to: float, max_pulses: int) -> int:
    """Pulses the nominal device model needs from g_from to get closest to g_to (open loop)."""
    direction = SET if g_to > g_from else RESET
    k = p.nominal_k()
    g, best, best_n = g_from, abs(g_to - g_from), 0
    for n in range(1, max_pulses + 1):
        g1 = step(p, g, direction, p.g_lo_us, p.g_hi_us, k, 1.0)
        if abs(g_to - g1) < best:
            best, best_n = abs(g_to - g1), n
        if g1 == g or (g1 - g_to) * (g - g_to) <= 0:
            break
        g = g1
    return best_n


@dataclass
class PairStats:
    commands: int = 0
    cells: int = 0          # programming operations (one device, one target)
    pulses: int = 0
    saturated: int = 0      # commands not fully applied (window or blocked cells)
    dropped_codes: int = 0  # sum of |d| not applied
    failed: int = 0

    def as_dict(self):
        return dict(self.__dict__)


def pair_plan(d: int, pos, neg, cp: int, cn: int, lo: int, hi: int, blocked, resolution):
    """The pair rule (module docstring) for one command: d = ProgramCommand.d_code, the verify
    codes cp of G+ (cell `pos`) and cn of G- (cell `neg`), the window [lo, hi] in codes, the
    blocked cells, and resolution(code, direction) -> the largest part too small to program
    (closed loop: the verify margin; `PairProgrammer._resolution`).
    Returns (need, applied, writes): |d|, the codes applied (a + b), and the write operations
    [(cell, code_now, target, direction)], the lowered device first (rtl/pair_programmer.py's
    write-verify targets in closed loop)."""
    if d > 0:
        down, up, cd, cu = neg, pos, cn, cp
    else:
        down, up, cd, cu = pos, neg, cp, cn
    need = abs(d)
    room_d = 0 if down in blocked else max(cd - lo, 0)
    room_u = 0 if up in blocked else max(hi - cu, 0)
    a = min(need, room_d)
    b = min(need - a, room_u)
    res_d, res_u = resolution(cd, RESET), resolution(cu, SET)
    if 0 < a <= res_d and a + b <= room_u:
        a, b = 0, a + b
    if 0 < b <= res_u and a + b <= room_d:
        a, b = a + b, 0
    if a <= res_d:
        a = 0
    if b <= res_u:
        b = 0
    writes = ([(down, cd, cd - a, RESET)] if a else []) + ([(up, cu, cu + b, SET)] if b else [])
    return need, a + b, writes


class PairProgrammer:
    """Carries out golden.update.ProgramCommand's on the differential pairs of a crossbar."""

    def __init__(self, xb, mode: str = "closed"):
        if mode not in ("closed", "open"):
            raise ValueError(f"programming mode must be 'closed' or 'open', got {mode!r}")
        self.xb, self.mode = xb, mode
        lo_us, hi_us = xb.p.window_us
        self.lo = int(round(lo_us * NA_PER_US / VERIFY_LSB_NA))
        self.hi = int(round(hi_us * NA_PER_US / VERIFY_LSB_NA))
        self.blocked: set = set()
        self.failures: list = []
        self.stats = PairStats()
        self.programmed: list = []   # (pe, row, bl) of every programming operation (tests)

    def _resolution(self, code: int, direction: int) -> float:
        if self.mode == "closed":
            return self.xb.margin_code
        g = code * VERIFY_LSB_NA / NA_PER_US
        return 0.5 * self.xb.p.mean_step_us(g, direction) * NA_PER_US / VERIFY_LSB_NA

    def apply(self, cmd: update.ProgramCommand, iteration: int = -1):
        xb = self.xb
        pos, neg = (cmd.pe, cmd.row_pos, cmd.bl), (cmd.pe, cmd.row_pos + 1, cmd.bl)
        cp, cn = xb.verify_read(*pos), xb.verify_read(*neg)
        need, applied, writes = pair_plan(int(cmd.d_code), pos, neg, cp, cn, self.lo, self.hi, self.blocked,
                                          self._resolution)
        self.stats.commands += 1
        if applied < need:
            self.stats.saturated += 1
            self.stats.dropped_codes += need - applied
        for cell, code_now, target, direction in writes:
            self._program(cell, code_now, target, direction, iteration)

    def _program(self, cell, code_now, target, direction, iteration):
        xb = self.xb
        self.stats.cells += 1
        self.programmed.append(cell)
        if self.mode == "closed":
            r = xb.program_cell(*cell, int(target))
            self.stats.pulses += r.pulses
            if not r.ok:
                self.stats.failed += 1
                self.blocked.add(cell)
                self.failures.append({"iteration": iteration, "pe": cell[0], "row": cell[1], "bl": cell[2],
                                      "target_code": int(target), "final_code": int(r.final_code),
                                      "pulses": int(r.pulses)})
        else:
            g0 = code_now * VERIFY_LSB_NA / NA_PER_US
            g1 = target * VERIFY_LSB_NA / NA_PER_US
            n = nominal_pulses(xb.p, g0, g1, xb.max_pulses)
            if n:
                self.stats.pulses += xb.open_loop(*cell, direction, n)


# ------------------------------------------------------------------ training

def clip_update(d, clip_code: int):
    """Update clipping: if the largest |dI| exceeds clip_code, scale the whole update by
    clip_code / max|dI| (integer, truncated towards zero) - before the threshold rule, so a step
    never moves a pair by more than clip_code and small entries of a huge update drop out."""
    d = np.asarray(d, dtype=np.int64)
    mx = int(np.abs(d).max()) if d.size else 0
    if mx <= clip_code:
        return d
    return np.sign(d) * ((np.abs(d) * int(clip_code)) // mx)


@dataclass
class Guard:
    """Divergence guard on the running batch error (module docstring). `observe(err)` is called with
    each batch's training error (%), measured before that batch's update; returns True when the step
    must be halved before that update."""
    window: int = 2
    margin: float = 5.0          # percentage points above the best running mean
    max_decays: int = 4
    errors: list = field(default_factory=list)
    best: float | None = None
    decays: list = field(default_factory=list)    # iterations (0-based) at which the step was halved

    def observe(self, err: float) -> bool:
        self.errors.append(float(err))
        since = self.decays[-1] + 1 if self.decays else 0      # the window restarts after a halving
        mean = float(np.mean(self.errors[max(since, len(self.errors) - self.window):]))
        if self.best is None or mean < self.best:
            self.best = mean
            return False
        if mean > self.best + self.margin and len(self.decays) < self.max_decays:
            self.decays.append(len(self.errors) - 1)
            self.best = None
            return True
        return False

    def as_dict(self):
        return {"window": self.window, "margin": self.margin, "max_decays": self.max_decays,
                "decays_at": list(self.decays), "batch_errors": list(self.errors)}


@dataclass
class HybridConfig:
    eta: float | None = None             # the step: choose_step (no default: it depends on the data)
    th_code: int = update.TH_CODE
    batch: int = 100
    iterations: int = N_TRAIN // 100     # one epoch: 550
    mode: str = "closed"
    record_every: int = 50
    clip_code: int | None = None         # update clipping (replicated groups: REP_CLIP_CODE)
    guard: bool = False                  # Guard on the running batch error (single batches only)


@dataclass
class Trace:
    iterations: list = field(default_factory=list)
    test_error: list = field(default_factory=list)
    train_error: list = field(default_factory=list)
    commands: list = field(default_factory=list)    # per iteration
    pulses: list = field(default_factory=list)      # per iteration
    seconds_train: float = 0.0                      # iterations only (no recording)
    seconds_record: float = 0.0

    def as_dict(self):
        return dict(self.__dict__)


class HybridTrainer:
    def __init__(self, xb, mapping: Mapping, q, cfg: HybridConfig | None = None, layer: str = "FC",
                 dcfg: DatapathConfig | None = None):
        self.xb, self.q = xb, q
        self.cfg = cfg or HybridConfig()
        if self.cfg.eta is None:
            raise ValueError("HybridConfig.eta: no step given (choose one with golden.hybrid.choose_step)")
        self.dcfg = dcfg or DatapathConfig()
        self.fc_groups = mapping.groups[layer]
        self.mapping, self.layer = mapping, layer
        self.m, self.sh = update.eta_params(self.cfg.eta, q, layer)
        self.sm_m, self.sm_sh = softmax_params(q.logit_scale)
        self.prog = PairProgrammer(xb, self.cfg.mode)
        self.guard = Guard() if self.cfg.guard else None
        self.it = 0

    def step(self, v, labels=None):
        """One programming step: forward through the crossbar, golden update, programming.
        `v, labels` is one batch; or pass a list of (v, labels) batches as `v` (the replicated
        groups' round): equation 1 is then summed over all of them (each batch's delta from the
        same FC state) before the threshold and one programming pass."""
        parts = [(v, labels)] if labels is not None else list(v)
        acc = None
        for vb, yb in parts:
            logits = fc_logits(self.xb, self.fc_groups, vb, self.dcfg)
            if self.guard is not None and self.guard.observe(float((argmax(logits) != np.asarray(yb)).mean() * 100)):
                self.sh += 1            # halve the step (the host: ctrl_eta_sh + 1 before FINISH)
            dl = delta(softmax_fixed(logits, self.sm_m, self.sm_sh), yb)
            a = update.accumulate(vb, dl)
            acc = a if acc is None else acc + a
        d = update.weight_update(acc, self.m, self.sh)
        if self.cfg.clip_code:
            d = clip_update(d, self.cfg.clip_code)
        d = update.threshold(d, self.cfg.th_code)
        cmds = update.commands(d, self.mapping, self.layer)
        p0 = self.prog.stats.pulses
        for c in cmds:
            self.prog.apply(c, self.it)
        self.it += 1
        return len(cmds), self.prog.stats.pulses - p0

    def error(self, v, labels) -> float:
        return error_pct(self.xb, self.fc_groups, v, labels, self.dcfg)

    def run(self, batches, record=None) -> Trace:
        """batches: iterable of (v, labels) (or of lists of them, see `step`); record(trainer) ->
        (test_error, train_error or None),
        called before the first iteration, every cfg.record_every iterations and after the last."""
        tr = Trace()

        def rec(i):
            if record is None:
                return
            t0 = time.perf_counter()
            te, trn = record(self)
            tr.iterations.append(i)
            tr.test_error.append(te)
            tr.train_error.append(trn)
            tr.seconds_record += time.perf_counter() - t0

        rec(0)
        i = 0
        for b in batches:
            t0 = time.perf_counter()
            n, p = self.step(*b) if isinstance(b, tuple) else self.step(b)
            tr.seconds_train += time.perf_counter() - t0
            tr.commands.append(n)
            tr.pulses.append(p)
            i += 1
            if self.cfg.record_every and i % self.cfg.record_every == 0:
                rec(i)
        if not tr.iterations or tr.iterations[-1] != i:
            rec(i)
        return tr


def batch_order(n_images: int, batch: int, iterations: int, seed: int) -> np.ndarray:
    """(iterations, batch) image indices: seeded permutations of range(n_images), epoch after epoch."""
    rng = np.random.default_rng(seed)
    need = iterations * batch
    perms = [rng.permutation(n_images) for _ in range(-(-need // n_images))]
    if not perms:                     # no iterations (a sweep's transfer-only stage)
        return np.zeros((0, batch), dtype=np.int64)
    return np.concatenate(perms)[:need].reshape(iterations, batch)


def replicated_schedule(order: np.ndarray, groups) -> list:
    """Batch i of `order` goes to group i mod 3 (Yao 2020, Fig. 4: three batches per round)."""
    return [groups[i % len(groups)] for i in range(len(order))]


def replicated_batches(sources: dict, labels, order, groups, update_mode: str = "round"):
    """Batches of the replicated-convolver training: batch i through group i mod len(groups).
    update_mode "batch": one programming step per batch (Yao's sequential pipeline);
    "round": one programming step per round, equation 1 summed over the round's batches (one per
    group), so each step serves all groups (docs/devices.md: per-batch steps make the shared FC
    oscillate between the groups)."""
    if update_mode not in ("round", "batch"):
        raise ValueError(f"replicated update mode must be 'round' or 'batch', got {update_mode!r}")
    sched = replicated_schedule(order, groups)
    if update_mode == "batch":
        for g, ix in zip(sched, order):
            yield sources[g](ix), labels[ix]
        return
    k = len(groups)
    for r in range(0, len(order), k):
        yield [(sources[g](ix), labels[ix]) for g, ix in zip(sched[r:r + k], order[r:r + k])]


# ------------------------------------------------------------------ eta selection

def threshold_step(xb, fc_groups, q, batches, th_code: int = update.TH_CODE, dcfg=None, layer: str = "FC") -> float:
    """The data's own scale of eta: the median over `batches` ((v, labels) on the transferred board)
    of the eta at which the batch's largest update |dI| just reaches the threshold th_code, i.e.
    th_code / (max|acc| * dI-per-acc-per-eta) (golden.update.eta_params is linear in eta)."""
    m, sh = update.eta_params(1e-3, q, layer)
    per_eta = m / 2.0 ** sh / 1e-3
    sm_m, sm_sh = softmax_params(q.logit_scale)
    mx = [np.abs(update.accumulate(v, delta(softmax_fixed(fc_logits(xb, fc_groups, v, dcfg), sm_m, sm_sh), y))).max()
          for v, y in batches]
    return float(th_code / (max(float(np.median(mx)), 1.0) * per_eta))


def choose_step(xb, mapping: Mapping, q, feats, labels, train_idx, val_idx, iterations: int, seed: int,
                candidates=None, batch: int = 100, mode: str = "closed", guard: bool = False,
                dcfg: DatapathConfig | None = None, layer: str = "FC", orders: int = 2) -> dict:
    """The hybrid-training step of one run, chosen on the data (the one rule every command uses).

    xb: the run's transferred board (not changed); feats(idx) -> FC inputs of images idx (e.g. a
    FeatureSource over the training file); labels over the same images; train_idx: the images that
    train, val_idx: the validation images scored (a subset of at most VAL_SUBSET is enough).
    candidates: the etas tried; default STEP_GRID x `threshold_step` of the first (at most 10)
    batches, so the grid follows the data's scale (no dataset's eta built in).
    Every candidate trains `orders` copies of xb, copy k reseeded with seed + STEP_SEED + 7919 k
    (programming noise and batch order disjoint from the run's and from each other), for
    `iterations` batches drawn from train_idx; its score is the worst validation error of its
    copies (a step at the edge of divergence loses: one bad trial is enough); lowest score wins,
    ties to the smaller step. -> {"eta", "candidates", "validation_error" (per candidate: the
    score), "validation_error_trials", "validation_error_before", "iterations", "validation_images",
    "seed", "threshold_step"}."""
    train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
    labels = np.asarray(labels).astype(np.int64)
    fcg = mapping.groups[layer]
    s = int(seed) + STEP_SEED
    seeds = [s + 7919 * k for k in range(orders)]
    olist = [train_idx[batch_order(len(train_idx), batch, iterations, seed=sk)] for sk in seeds]
    before = error_pct(xb, fcg, feats(val_idx), labels[val_idx], dcfg)
    unit = None
    if candidates is None:
        unit = threshold_step(xb, fcg, q, [(feats(ix), labels[ix]) for ix in olist[0][:10]], dcfg=dcfg, layer=layer)
        candidates = tuple(float(f"{unit * g:.3g}") for g in STEP_GRID)
    trials = {e: [] for e in candidates}
    for e in candidates:
        for sk, order in zip(seeds, olist):
            b = xb.copy()
            b.reseed(sk)
            if hasattr(feats, "xb") and not getattr(feats, "cached", True):
                feats.xb = b            # read noise: features are read through the board being trained
            t = HybridTrainer(b, mapping, q, HybridConfig(eta=e, iterations=iterations, batch=batch, mode=mode,
                                                          record_every=0, guard=guard), layer, dcfg)
            t.run((feats(ix), labels[ix]) for ix in order)
            trials[e].append(error_pct(b, fcg, feats(val_idx), labels[val_idx], dcfg))
    if hasattr(feats, "xb") and not getattr(feats, "cached", True):
        feats.xb = xb
    scores = {e: max(v) for e, v in trials.items()}
    best = min(candidates, key=lambda e: (scores[e], e))
    return {"eta": float(best), "candidates": [float(e) for e in candidates],
            "validation_error": {str(e): scores[e] for e in candidates},
            "validation_error_trials": {str(e): v for e, v in trials.items()}, "validation_error_before": before,
            "iterations": int(iterations), "validation_images": int(len(val_idx)), "seed": s, "guard": guard,
            "threshold_step": unit}


def model_board_step(w, ds, device: str = "yao2020", board_seed: int = 0, iterations: int = 1,
                     batch: int = 100, seed: int = 0) -> dict:
    """choose_step for a board the host cannot copy (`mcnn board`): a golden model of it - a
    Crossbar of its device preset and seed, the weights transferred by golden write-verify."""
    from .crossbar import Crossbar
    from .mapping import build_mapping
    from .transfer import transfer
    mapping = build_mapping()
    xb = Crossbar(device, seed=board_seed)
    transfer(xb, mapping, w.int_w)
    val = validation_subset(len(ds.train_images))
    src = FeatureSource(xb, w.int_w, w.q, mapping, ds.train_images, cache_idx=val)
    r = choose_step(xb, mapping, w.q, src, ds.train_labels, np.arange(ds.split[0]), val, iterations, seed,
                    batch=batch)
    return {**r, "chosen": True, "board_model": {"device": device, "seed": board_seed}}


def validation_subset(n_images: int, n: int = VAL_SUBSET) -> np.ndarray:
    """Indices of the validation images choose_step scores: the first min(n, n_val) of the validation
    split of a training file of n_images (golden.idx.split_sizes)."""
    from .idx import split_sizes
    n_fit, n_val = split_sizes(n_images)
    return np.arange(n_fit, n_fit + min(n, n_val))


def select_eta(w, ds, candidates=(0.005, 0.007, 0.01, 0.014, 0.02), seeds=(1001, 1002, 1003), device="yao2020",
               iterations: int | None = None, replicated: bool = False, update_mode: str = "round",
               orders: int = 1, clip_code: int | None = None, log=print) -> dict:
    """The expensive study behind the docs' table (choose_step is what runs use). Pick eta on the
    training/validation split (ds.split). Per device seed (disjoint from the evaluation
    seeds 0..) one board is transferred; every candidate trains the FC layer from that same
    transferred state on images 0..54,999 and is scored by the error on the validation images
    55,000..59,999 (replicated: the mean over the groups). Lowest mean over seeds wins.
    Main experiment: G1 alone, 550 iterations of one batch. replicated=True: the three groups,
    300 batches in turn (`replicated_batches`, update_mode). orders > 1: every candidate is also
    trained with that many batch orders per seed (the score averages them: rare divergent runs count)."""
    from .crossbar import Crossbar
    from .replicate import group_mappings
    from .transfer import transfer

    n_fit, n_val = ds.split
    iterations = iterations or (300 if replicated else max(1, n_fit // 100))
    maps = group_mappings() if replicated else {"G1": group_mappings(groups=("G1",))["G1"]}
    groups = list(maps)
    fcg = maps["G1"].groups["FC"]
    x_all, y_all = ds.train_images[:n_fit + n_val], ds.train_labels[:n_fit + n_val].astype(np.int64)
    val = np.arange(n_fit, n_fit + n_val)
    scores = {e: [] for e in candidates}
    detail = {e: [] for e in candidates}
    before = []
    for s in seeds:
        xb = Crossbar(device, seed=s)
        transfer(xb, maps, w.int_w)
        base = s + (1_000_003 if replicated else 0)
        olist = [batch_order(n_fit, 100, iterations, seed=base + 7919 * k) for k in range(orders)]
        src = {}
        for g in groups:
            idx = [val]
            for order in olist:
                sched = replicated_schedule(order, groups)
                idx.append(order[[i for i, h in enumerate(sched) if h == g]].ravel())
            src[g] = FeatureSource(xb, w.int_w, w.q, maps[g], x_all, cache_idx=np.concatenate(idx))
        b0 = [error_pct(xb, fcg, src[g](val), y_all[val]) for g in groups]
        before.append(b0)
        for e in candidates:
            for k, order in enumerate(olist):
                b = xb.copy()
                for g in groups:
                    src[g].xb = b   # read-noise mode recomputes through the board being trained
                t = HybridTrainer(b, maps["G1"], w.q, HybridConfig(eta=e, iterations=iterations, record_every=0,
                                                                   clip_code=clip_code))
                if replicated:
                    t.run(replicated_batches(src, y_all, order, groups, update_mode))
                else:
                    t.run((src["G1"](ix), y_all[ix]) for ix in order)
                a = [error_pct(b, fcg, src[g](val), y_all[val]) for g in groups]
                detail[e].append(a)
                scores[e].append(float(np.mean(a)))
                log(f"seed {s} order {k} eta {e:g}: validation error {'/'.join(f'{x:.2f}' for x in b0)} % -> "
                    f"{'/'.join(f'{x:.2f}' for x in a)} %")
    mean = {e: float(np.mean(v)) for e, v in scores.items()}
    best = min(mean, key=mean.get)
    return {"candidates": list(candidates), "seeds": list(seeds), "replicated": replicated,
            "update_mode": update_mode if replicated else "batch", "iterations": iterations, "orders": orders,
            "clip_code": clip_code,
            "validation_error_before": before, "validation_error": {str(e): v for e, v in detail.items()},
            "mean": {str(e): m for e, m in mean.items()}, "best": best}


def main(argv=None):
    """`python -m golden.hybrid --select-eta`: rerun the eta selection (prints JSON)."""
    import argparse
    import json

    from . import weights
    from .idx import default_data_dir, load_dataset
    ap = argparse.ArgumentParser(prog="python -m golden.hybrid")
    ap.add_argument("--select-eta", action="store_true", required=True)
    ap.add_argument("--candidates", type=float, nargs="+", default=[0.005, 0.007, 0.01, 0.014, 0.02])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1001, 1002, 1003])
    ap.add_argument("--device", default="yao2020")
    ap.add_argument("--replicated", action="store_true", help="select eta of the replicated-groups training")
    ap.add_argument("--update-mode", choices=("round", "batch"), default="round")
    ap.add_argument("--orders", type=int, default=1, help="batch orders per seed")
    ap.add_argument("--clip", type=int, default=None, help="update clipping, codes (replicated: 30)")
    args = ap.parse_args(argv)
    from .blas import limit_blas_threads
    limit_blas_threads(1)
    w = weights.load()
    ds = load_dataset(default_data_dir())
    r = select_eta(w, ds, tuple(args.candidates), tuple(args.seeds), args.device, replicated=args.replicated,
                   update_mode=args.update_mode, orders=args.orders, clip_code=args.clip,
                   log=lambda s: print(s, flush=True))
    print(json.dumps(r))


if __name__ == "__main__":
    main()
