"""Ex-situ training (NumPy only), calibration to 15 weight levels, quantisation-aware fine-tune.

Reproducible: one seed drives initialisation, shuffling and augmentation. Training uses the
first n_train training images, the rest are the validation set used for every choice (scale
search, best epoch): golden.idx.split_sizes, MNIST's 55,000 + 5,000. The test set is only ever
evaluated, never used to choose.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import cnn, model
from .fileio import InputError
from .idx import Dataset, split_sizes
from .model import QuantConfig



@dataclass
class TrainConfig:
    seed: int = 2020
    epochs: int = 24
    batch: int = 64
    lr: float = 3e-3
    shift: int = 2            # random-shift augmentation, pixels
    qat_epochs: int = 3
    qat_lr: float = 2e-4
    act_percentile: float = 99.99
    n_train: int | None = None    # images [0, n_train) train, [n_train, N) validate (None: split_sizes)
    n_calib: int = 5000       # training images used to calibrate activation ranges
    device: str | None = None # noise-aware QAT: this preset's programming error on every weight (None: plain)
    noise_model: str = "levels"   # with device: "levels" (DeviceNoise, measured per level) | "gaussian"


def programming_sigma(device: str, n_cells: int = 512, seed: int = 20_191) -> dict:
    """The programming error of a device preset, measured on its model: closed-loop write-verify
    (golden.crossbar) of n_cells cells of a fresh board to random levels 0..7, read back after
    relaxation; cells that fail to verify (stuck) are left out. A weight is a pair (G+ - G-), both
    devices programmed independently, so its error is sqrt(2) x the device's, in weight steps
    (update.CODES_PER_STEP verify codes). -> {"device", "sd_na", "sigma_weight", "cells"}."""
    from .crossbar import Crossbar
    from .devices import NA_PER_US
    from .update import CODES_PER_STEP
    from .write_verify import VERIFY_LSB_NA, level_target_code
    xb = Crossbar(device, seed=seed, n_pe=1, n_rows=32, n_bl=-(-n_cells // 32))
    levels = np.random.default_rng(seed).integers(0, 8, xb.shape)
    err = []
    for (pe, row, bl), lv in np.ndenumerate(levels):
        t = level_target_code(int(lv))
        if xb.program_cell(pe, row, bl, t).ok:
            err.append(xb.current_na(pe, row, bl) - t * VERIFY_LSB_NA)
    sd = float(np.std(err)) if err else 0.0
    assert NA_PER_US > 0
    return {"device": device, "sd_na": sd, "sigma_weight": float(np.sqrt(2) * sd / (CODES_PER_STEP * VERIFY_LSB_NA)),
            "cells": len(err)}


class DeviceNoise:
    """The programming error of a device preset, measured per target level on its model, as a
    sampler of weight errors (noise-aware QAT: model.forward(noise=(DeviceNoise, rng))).

    Measurement: `per_level` cells of a fresh board of the preset per level 0..7 written by golden
    write-verify (Crossbar.program_cell, the transfer's path), read back after relaxation: the device
    error (read current - target current) in weight steps (500 nA), per level; cells that failed to
    verify stay in (their error is what the transfer leaves), stuck cells are left out of the pool
    and drawn instead at the preset's rates (p_stuck_on/off/mid: the device then reads its stuck
    conductance, nominal G_hi, G_lo or the mid value). A weight w is the pair (G+ at level max(w, 0),
    G- at level max(-w, 0)) as golden.cell.weight_to_levels maps it, both devices drawn
    independently: error = e(G+) - e(G-). What the transfer measurements showed matters (issue 19,
    docs/devices.md): the device error by level, including its bias (level 0 reads ~+20 nA high on
    yao2020), and the floor device's own error; the ADC rounding of noisy slot sums did not.
    """

    def __init__(self, device: str, per_level: int = 512, seed: int = 20_191, **overrides):
        from .cell import I_UNIT_UA, N_LEVELS, level_conductance_us
        from .crossbar import Crossbar
        from .devices import NA_PER_US
        from .write_verify import VERIFY_LSB_NA, level_target_code
        xb = Crossbar(device, seed=seed, n_pe=1, n_rows=N_LEVELS * -(-per_level // 16), n_bl=16, **overrides)
        unit_na = I_UNIT_UA * 1000.0
        self.device, self.p = device, xb.p
        self.pool = [np.empty(0)] * N_LEVELS
        failed = 0
        for lv in range(N_LEVELS):
            t = level_target_code(lv)
            err = []
            for c in range(per_level):
                row, bl = lv * -(-per_level // 16) + c // 16, c % 16
                ok = xb.program_cell(0, row, bl, t).ok
                failed += not ok
                if not xb.stuck[0, row, bl]:
                    err.append((xb.current_na(0, row, bl) - t * VERIFY_LSB_NA) / unit_na)
            self.pool[lv] = np.array(err)
        self.failed, self.cells = failed, N_LEVELS * per_level
        n = max(len(e) for e in self.pool)
        self._pool = np.array([np.pad(e, (0, n - len(e))) for e in self.pool])     # level k: [:_count[k]]
        self._count = np.array([len(e) for e in self.pool])
        # stuck devices: probability and read current (steps) of each kind; the error is I - target
        tgt = level_conductance_us(np.arange(N_LEVELS)) * NA_PER_US / unit_na
        p = self.p
        mid = p.g_stuck_mid_us[0] * NA_PER_US / unit_na
        self.stuck = [(p.p_stuck_on, p.g_hi_us * NA_PER_US / unit_na - tgt),
                      (p.p_stuck_off, p.g_lo_us * NA_PER_US / unit_na - tgt),
                      (p.p_stuck_mid, mid - tgt)]

    def device_errors(self, levels: np.ndarray, rng) -> np.ndarray:
        """One error (weight steps) per device at `levels` (ints 0..7): a draw from the level's
        measured pool, replaced by the stuck error at the preset's rates."""
        idx = (rng.random(levels.shape) * self._count[levels]).astype(np.int64)
        e = self._pool[levels, np.minimum(idx, self._count[levels] - 1)]
        u = rng.random(levels.shape)
        lo = 0.0
        for prob, err in self.stuck:
            if prob > 0:
                hit = (u >= lo) & (u < lo + prob)
                e = np.where(hit, err[levels], e)
            lo += prob
        return e

    def perturb(self, wq, rng):
        """Integer-valued weights (any float array) -> the weights a board of the preset reads."""
        w = np.rint(wq).astype(np.int64)
        lp, ln = np.clip(w, 0, 7), np.clip(-w, 0, 7)
        return wq + (self.device_errors(lp, rng) - self.device_errors(ln, rng))

    def summary(self) -> dict:
        """What the weights' meta records (meta.noise_aware)."""
        allerr = np.concatenate(self.pool) * 500.0
        return {"device": self.device, "model": "measured per-level device error + stuck cells",
                "cells": self.cells, "failed": self.failed, "sd_na": round(float(allerr.std()), 1),
                "sd_na_per_level": [round(float(e.std() * 500), 1) for e in self.pool],
                "mean_na_per_level": [round(float(e.mean() * 500), 1) for e in self.pool],
                "p_stuck": [s[0] for s in self.stuck],
                "sigma_weight": float(np.sqrt(2) * allerr.std() / 500.0)}


class Adam:
    def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] -= (lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)).astype(params[k].dtype)


def data_hash(ds: Dataset) -> str:
    h = hashlib.sha256()
    for a in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def random_shift(x, rng, s):
    """Shift each image by an integer offset in [-s, s]^2 (zero fill)."""
    if s == 0:
        return x
    n = len(x)
    xp = np.pad(x, ((0, 0), (s, s), (s, s)))
    win = sliding_window_view(xp, x.shape[1:], axis=(1, 2))  # (N, 2s+1, 2s+1, H, W)
    dy, dx = rng.integers(0, 2 * s + 1, n), rng.integers(0, 2 * s + 1, n)
    return win[np.arange(n), dy, dx]


def _val_accuracy(params, xv, yv, layers, q, noise):
    """Validation accuracy; noise-aware (noise: a sigma > 0 or a DeviceNoise): the mean over 3 fixed
    draws of the weight error."""
    if not noise:
        return model.accuracy(params, xv, yv, layers, q)
    rng = np.random.default_rng(4242)
    return float(np.mean([model.accuracy(params, xv, yv, layers, q, noise=(noise, rng)) for _ in range(3)]))


def _epochs(params, x, y, rng, epochs, batch, lr, shift, layers, q=None, log=None, xv=None, yv=None, noise=None):
    """Adam with a cosine learning rate; keeps the parameters of the best validation epoch.
    noise (with q; a sigma > 0 or a DeviceNoise): every forward pass draws a programming error per
    weight (noise-aware)."""
    opt = Adam(params, lr)
    steps = epochs * (len(x) // batch)
    step = 0
    best = (-1.0, {k: v.copy() for k, v in params.items()})
    for ep in range(epochs):
        order = rng.permutation(len(x))
        t0, tot = time.time(), 0.0
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            xb = random_shift(x[idx], rng, shift)
            logits, cache = model.forward(params, xb, layers, q, train=True, noise=(noise, rng) if noise else None)
            loss, d = model.cross_entropy(logits, y[idx])
            grads = model.backward(d, cache, q)
            opt.step(params, grads, lr * 0.5 * (1 + np.cos(np.pi * step / steps)))
            step += 1
            tot += loss
        va = _val_accuracy(params, xv, yv, layers, q, noise)
        if log:
            log(f"  epoch {ep + 1}/{epochs}: loss {tot / (i + 1):.4f}, val {va:.2f} %, {time.time() - t0:.1f} s")
        if va >= best[0]:
            best = (va, {k: v.copy() for k, v in params.items()})
    params.update(best[1])
    return best[0]


def calibrate(params, x_cal, layers, w_factor: dict[str, float], percentile: float) -> QuantConfig:
    """Weight scales s = factor * max|W| / 7; requant ratios from activation percentiles.

    Activations are measured on the model with quantised weights, layer by layer, so each
    layer's ratio accounts for the quantisation of the layers before it.
    """
    wl = cnn.weight_layers(layers)
    q = QuantConfig({L.name: float(w_factor[L.name] * np.abs(params[L.name]).max() / model.W_LEVELS)
                     for L in wl})
    in_scale = model.X_SCALE  # float value of one unit of the current layer's input code
    x = x_cal.astype(np.float64)[..., None]
    last = wl[-1].name
    for L in layers:
        if isinstance(L, cnn.Pool):
            x, _ = cnn.maxpool_forward(x, L.size)
            continue
        if L.name == last:
            q.logit_scale = float(in_scale * q.w_scale[L.name])
            break
        wq = model.quantize_weights(params[L.name], q.w_scale[L.name])
        if isinstance(L, cnn.Conv):
            z, _ = cnn.conv_forward(x, wq, L.pad)
        else:                      # a hidden dense layer: ReLU + requant as a conv layer
            z = (cnn.flatten_chw(x) @ wq)[:, None, None, :]
        zf = z * in_scale * q.w_scale[L.name]  # float pre-activation
        pos = zf[zf > 0]
        act_scale = float(np.percentile(pos, percentile)) / model.ACT_MAX if pos.size else 1.0
        m, sh = model.requant_params(in_scale * q.w_scale[L.name] / act_scale)
        q.requant[L.name] = (m, sh)
        x = model.requantize(z, m, sh)
        in_scale = in_scale * q.w_scale[L.name] / (m / 2.0 ** sh)
    return q


def scale_search(params, x_cal, xv, yv, layers, percentile, log=None):
    """Coordinate search of the weight-scale factors (and the activation percentile) on validation."""
    names = [L.name for L in cnn.weight_layers(layers)]
    fac = {n: 1.0 for n in names}
    grid = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    pct = percentile

    def score(f, p):
        q = calibrate(params, x_cal, layers, f, p)
        return model.accuracy(params, xv, yv, layers, q)

    best = score(fac, pct)
    for _ in range(2):
        for n in names:
            for g in grid:
                f = dict(fac, **{n: g})
                s = score(f, pct)
                if s > best:
                    best, fac = s, f
        for p in (99.9, 99.99, 99.999, 100.0):
            s = score(fac, p)
            if s > best:
                best, pct = s, p
    if log:
        log(f"  scale search: factors {fac}, activation percentile {pct}: val {best:.2f} %")
    return calibrate(params, x_cal, layers, fac, pct), fac, pct


def _noise(cfg: TrainConfig, log):
    """The noise of noise-aware QAT and what the meta records: (None, None) for plain training;
    "levels": a DeviceNoise of cfg.device; "gaussian": sigma of programming_sigma (the first model)."""
    if not cfg.device:
        return None, None
    if cfg.noise_model == "gaussian":
        info = dict(programming_sigma(cfg.device), model="gaussian")
        log(f"noise-aware QAT: {cfg.device} programming error s.d. {info['sd_na']:.0f} nA per device "
            f"({info['cells']} cells written on its model) = {info['sigma_weight']:.3f} weight steps per pair")
        return info["sigma_weight"], info
    if cfg.noise_model != "levels":
        raise InputError(f"noise model {cfg.noise_model!r}: expected 'levels' or 'gaussian'")
    dn = DeviceNoise(cfg.device)
    info = dict(dn.summary(), model="levels")
    log(f"noise-aware QAT: {cfg.device} device error measured per level on {dn.cells} cells of its model: "
        f"s.d. {info['sd_na_per_level']} nA, mean {info['mean_na_per_level']} nA; stuck at the preset's rates")
    return dn, info


NOISE_SCALE_GRID = (1.0, 0.9, 0.8, 0.7, 0.6)


def noise_scale(params, x_cal, xv, yv, layers, fac, pct, noise, log=None, draws: int = 4):
    """Noise-aware: every weight-scale factor times a common m from NOISE_SCALE_GRID, the m with the
    best validation accuracy under the noise (mean of `draws` fixed draws) wins. A smaller scale puts
    the weights on more of the 15 levels: the programming error, fixed in steps, costs less, at the
    price of clipping the largest weights. -> (QuantConfig, factors, {m: accuracy})."""
    scores = {}
    for m in NOISE_SCALE_GRID:
        f = {k: v * m for k, v in fac.items()}
        q = calibrate(params, x_cal, layers, f, pct)
        rng = np.random.default_rng(4243)
        scores[m] = float(np.mean([model.accuracy(params, xv, yv, layers, q, noise=(noise, rng))
                                   for _ in range(draws)]))
    best = max(scores, key=lambda m: (scores[m], m))
    if log:
        log(f"  noise-aware scale: factors x {best} (validation under the noise: "
            + ", ".join(f"x{m}: {a:.2f} %" for m, a in scores.items()) + ")")
    f = {k: v * best for k, v in fac.items()}
    return calibrate(params, x_cal, layers, f, pct), f, scores


def train(ds: Dataset, cfg: TrainConfig = TrainConfig(), layers=cnn.YAO2020, log=print, init=None):
    """Float training, calibration, QAT. Returns (float_params, int_weights, QuantConfig, meta).
    init: float parameters to start from (cfg.epochs more float epochs, 0 allowed: only calibration
    and QAT, e.g. a noise-aware fine-tune of trained weights). cfg.device: noise-aware QAT."""
    t_start = time.time()
    rng = np.random.default_rng(cfg.seed)
    if cfg.n_train is None:
        cfg = replace(cfg, n_train=split_sizes(len(ds.train_images))[0])
    if not cfg.batch <= cfg.n_train < len(ds.train_images):
        raise InputError(f"{ds.directory}: {len(ds.train_images)} training images; training takes the first "
                         f"n_train={cfg.n_train} (at least a batch of {cfg.batch}) and validates on the rest, "
                         f"so it needs more than {max(cfg.n_train, cfg.batch)}")
    x, y = ds.train_images[:cfg.n_train], ds.train_labels[:cfg.n_train].astype(np.int64)
    xv, yv = ds.train_images[cfg.n_train:], ds.train_labels[cfg.n_train:].astype(np.int64)
    params = model.init_params(layers, cfg.seed) if init is None else {k: np.array(v, np.float32)
                                                                        for k, v in init.items()}
    noise, info = _noise(cfg, log)
    log(f"float training: {cfg.epochs} epochs, batch {cfg.batch}, Adam lr {cfg.lr} (cosine), shift +/-{cfg.shift}")
    val_float = (_epochs(params, x, y, rng, cfg.epochs, cfg.batch, cfg.lr, cfg.shift, layers, log=log, xv=xv, yv=yv)
                 if cfg.epochs else model.accuracy(params, xv, yv, layers))
    float_params = {k: v.copy() for k, v in params.items()}
    t_float = time.time() - t_start

    x_cal = x[rng.choice(len(x), min(cfg.n_calib, len(x)), replace=False)]
    q, fac, pct = scale_search(params, x_cal, xv, yv, layers, cfg.act_percentile, log)
    if noise:
        q, fac, info["scale_scores"] = noise_scale(params, x_cal, xv, yv, layers, fac, pct, noise, log)
    val_ptq = _val_accuracy(params, xv, yv, layers, q, noise)
    log(f"quantisation-aware fine-tune: {cfg.qat_epochs} epochs, lr {cfg.qat_lr}")
    val_qat = _epochs(params, x, y, rng, cfg.qat_epochs, cfg.batch, cfg.qat_lr, cfg.shift, layers, q,
                      log=log, xv=xv, yv=yv, noise=noise)
    if val_qat < val_ptq:  # fine-tune must not make it worse; fall back to the calibrated weights
        params = {k: v.copy() for k, v in float_params.items()}
    int_w = {L.name: model.quantize_weights(params[L.name], q.w_scale[L.name]).astype(np.int8)
             for L in cnn.weight_layers(layers)}
    meta = {
        "seed": cfg.seed, "epochs": cfg.epochs, "batch": cfg.batch, "lr": cfg.lr, "shift": cfg.shift,
        "qat_epochs": cfg.qat_epochs, "qat_lr": cfg.qat_lr, "weight_scale_factors": fac,
        "act_percentile": pct, "data_hash": data_hash(ds), "n_train": cfg.n_train,
        "val_float": val_float, "val_ptq": val_ptq, "val_qat": val_qat,
        "seconds_float": round(t_float, 1), "seconds_total": round(time.time() - t_start, 1),
        "layers": [type(L).__name__ + ":" + L.name for L in layers],
        "ex_situ": "noise-aware" if info else "plain", "noise_aware": info, "init": init is not None,
    }
    return float_params, int_w, q, meta
