"""Forward and backward of a network (golden/cnn.py layers) in two modes: float, and the 15-level quantised model.

Quantised mode works in integer units: inputs are the 8-bit pixel codes, weights the
integers -7..7 (G+ - G- in units of one 2.5 uS conductance step), every ReLU output is
requantised to an 8-bit code by the ratio r = M / 2**shift, exactly as the integer
datapath does (golden/datapath.py). Gradients use the straight-through estimator, so the
same code does quantisation-aware fine-tuning.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import cnn
from .cnn import Conv, Pool

W_LEVELS = 7      # weights are integers in [-7, 7]: 15 levels (Yao 2020, 8 levels per device)
ACT_MAX = 255     # 8-bit unsigned activations / inputs
X_SCALE = 1.0 / 255.0  # float value of one input code


@dataclass
class QuantConfig:
    """Per-layer quantisation: weight scale s_w (float per weight unit) and requant (M, shift)."""
    w_scale: dict[str, float]
    requant: dict[str, tuple[int, int]] = field(default_factory=dict)  # every weight layer but the last
    logit_scale: float = 1.0  # float value of one unit of the last layer's integer output (the logits)

    def ratio(self, name: str) -> float:
        m, sh = self.requant[name]
        return m / float(1 << sh)

    def to_json(self):
        return {"w_scale": self.w_scale, "requant": {k: list(v) for k, v in self.requant.items()},
                "logit_scale": self.logit_scale}

    @classmethod
    def from_json(cls, d):
        return cls({k: float(v) for k, v in d["w_scale"].items()},
                   {k: (int(v[0]), int(v[1])) for k, v in d["requant"].items()},
                   float(d["logit_scale"]))


def requant_params(r: float, m_bits: int = 16) -> tuple[int, int]:
    """Integer (M, shift) with M < 2**m_bits and M / 2**shift closest to r."""
    if not r > 0:
        raise ValueError(f"requant ratio must be > 0, got {r}")
    sh = int(np.floor(np.log2((2 ** m_bits - 1) / r)))
    m = int(round(r * 2.0 ** sh))
    while m >= 2 ** m_bits:
        sh -= 1
        m = int(round(r * 2.0 ** sh))
    if sh < 1:
        raise ValueError(f"requant ratio {r} too large for a {m_bits}-bit multiplier")
    return m, sh


def quantize_weights(w: np.ndarray, s: float) -> np.ndarray:
    return np.clip(np.floor(w / s + 0.5), -W_LEVELS, W_LEVELS)


def requantize(z, m: int, sh: int):
    """ReLU + requantisation to 8 bits: clip(floor(z*M/2**sh + 1/2), 0, 255) (exact in float64)."""
    return np.clip(np.floor((z * m + (1 << (sh - 1))) / float(1 << sh)), 0, ACT_MAX)


def init_params(layers=cnn.YAO2020, seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for L in cnn.weight_layers(layers):
        std = np.sqrt(2.0 / L.fan_in)
        params[L.name] = (rng.standard_normal(cnn.weight_shape(L)) * std).astype(np.float32)
    return params


def _noisy(wq, noise):
    """noise = (sigma, rng): the integer weights plus N(0, sigma^2) per weight (programming error);
    noise = (m, rng) with m.perturb(wq, rng) (golden.train.DeviceNoise): the weights m returns."""
    if noise is None:
        return wq
    if hasattr(noise[0], "perturb"):
        return noise[0].perturb(wq, noise[1]).astype(wq.dtype)
    if noise[0] <= 0:
        return wq
    return wq + (noise[1].standard_normal(wq.shape) * noise[0]).astype(wq.dtype)


def forward(params, x_u8, layers=cnn.YAO2020, q: QuantConfig | None = None, train=False,
            dtype=np.float32, noise=None):
    """x_u8 (N,H,W) uint8 codes -> logits (N, n_out) [float units], cache for backward.

    Every weight layer but the last (conv or dense) is followed by ReLU (float) or ReLU + 8-bit
    requantisation (quantised); the last one gives the logits.

    q=None: float model (input x/255). q given: quantised model, integer-valued tensors;
    logits are multiplied by q.logit_scale so the loss sees float-scale values.
    noise=(sigma, rng) with q: every integer weight gets a fresh N(0, sigma^2) error per call (the
    device's programming error, noise-aware training: golden/train.py); noise=(DeviceNoise, rng): a
    fresh draw of the preset's measured per-level error per call; gradients go through.
    """
    x = x_u8.astype(dtype)
    x = x[..., None] if x.ndim == 3 else x
    if q is None:
        x = x * dtype(X_SCALE)
    cache = []
    last = cnn.weight_layers(layers)[-1].name       # the logits layer: no ReLU, no requant
    for L in layers:
        if isinstance(L, Pool):
            y, idx = cnn.maxpool_forward(x, L.size)
            if train:
                cache.append(("pool", L, x.shape, idx))
            x = y
            continue
        w = params[L.name]
        wq = _noisy(quantize_weights(w, q.w_scale[L.name]).astype(dtype), noise) if q else w
        if isinstance(L, Conv):
            z, cols = cnn.conv_forward(x, wq, L.pad)
        else:
            cols = cnn.flatten_chw(x)
            z = cols @ wq
        if L.name == last:
            if train:
                cache.append(("dense", L, x.shape, cols, wq, None))
            x = z * dtype(q.logit_scale) if q else z
            continue
        a, grad = _activation(z, q.requant[L.name] if q else None, dtype)
        if train:
            cache.append(("conv" if isinstance(L, Conv) else "dense", L, x.shape, cols, wq, grad))
        x = a if isinstance(L, Conv) else a[:, None, None, :]     # a hidden dense layer: a 1x1 map
    return x, cache


def _activation(z, requant, dtype):
    """ReLU (float) or ReLU + 8-bit requantisation (requant = (M, shift)), and its gradient
    (straight-through inside the clipping range)."""
    if requant is None:
        return np.maximum(z, 0), (z > 0)
    m, sh = requant
    a = requantize(z.astype(np.float64), m, sh).astype(dtype)
    u = z * dtype(m / 2.0 ** sh)
    return a, ((u > 0) & (u < ACT_MAX + 0.5)) * dtype(m / 2.0 ** sh)


def backward(dlogits, cache, q: QuantConfig | None = None):
    grads = {}
    d = dlogits
    for i in range(len(cache) - 1, -1, -1):
        kind, L = cache[i][:2]
        if kind == "dense":
            _, _, xshape, v, wq, grad = cache[i]
            d = d.reshape(len(v), -1)
            if grad is None:
                d = d * q.logit_scale if q else d
            else:
                d = d * grad
            grads[L.name] = v.T @ d
            d = cnn.unflatten_chw(d @ wq.T, xshape) if i > 0 else None
        elif kind == "pool":
            _, _, xshape, idx = cache[i]
            d = cnn.maxpool_backward(d, idx, L.size, xshape)
        else:
            _, _, xshape, cols, wq, grad = cache[i]
            d = d * grad
            gw, d = cnn.conv_backward(d, cols, wq, L.pad, xshape, need_dx=i > 0)
            grads[L.name] = gw
    # In quantised mode these are gradients w.r.t. the integer weights; the straight-through
    # estimator hands them to the float master weights unchanged (Adam is scale invariant).
    return grads


def cross_entropy(logits, labels):
    p = cnn.softmax(logits.astype(np.float64))
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels] + 1e-12).mean()
    d = p.copy()
    d[np.arange(n), labels] -= 1
    return loss, (d / n).astype(logits.dtype)


def predict(params, x_u8, layers=cnn.YAO2020, q=None, batch=2000, noise=None):
    out = []
    for i in range(0, len(x_u8), batch):
        logits, _ = forward(params, x_u8[i:i + batch], layers, q,
                            dtype=np.float64 if q else np.float32, noise=noise)
        out.append(logits)
    return np.concatenate(out)


def accuracy(params, x_u8, labels, layers=cnn.YAO2020, q=None, noise=None):
    return float((predict(params, x_u8, layers, q, noise=noise).argmax(1) == labels).mean() * 100)
