"""Layer specs, the CNN of Yao et al. 2020 (REFERENCE.md section 1) as data, NumPy ops.

A network is a list of layer specs (golden/networks.py names them). Everything downstream
(training, quantisation, the mapping onto PEs, the integer datapath) walks this list, so any
stack of the same layer kinds (valid/padded 3x3-style convolutions, non-overlapping max-pools,
dense layers) goes through the same code: every weight layer but the last is followed by ReLU
(+ 8-bit requantisation in the quantised model), the last weight layer, dense, gives the logits.

Tensors are NHWC inside; a dense layer's input is flattened channel-major (c, h, w), the order
its rows are grouped in (docs/datapath.md); a hidden dense layer's output is a 1x1 map.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class Conv:
    name: str
    in_ch: int
    out_ch: int
    k: int
    pad: int = 0

    @property
    def fan_in(self) -> int:
        return self.in_ch * self.k * self.k


@dataclass(frozen=True)
class Pool:
    name: str
    size: int  # kernel = stride (non-overlapping); rows/columns that do not fill a window are dropped


@dataclass(frozen=True)
class Dense:
    name: str
    n_in: int
    n_out: int

    @property
    def fan_in(self) -> int:
        return self.n_in


# Yao 2020, Fig. 2 / REFERENCE.md section 1: C1 8x1x3x3 valid, S2 3x3/3, C3 12x8x3x3 pad 1, S4 2x2/2, FC 192x10.
YAO2020 = (
    Conv("C1", 1, 8, 3, 0),
    Pool("S2", 3),
    Conv("C3", 8, 12, 3, 1),
    Pool("S4", 2),
    Dense("FC", 192, 10),
)

INPUT_SHAPE = (28, 28, 1)


def weight_layers(layers=YAO2020):
    return [L for L in layers if isinstance(L, (Conv, Dense))]


def weight_shape(L) -> tuple[int, ...]:
    if isinstance(L, Conv):
        return (L.out_ch, L.in_ch, L.k, L.k)
    return (L.n_in, L.n_out)


def shapes(layers=YAO2020, input_shape=INPUT_SHAPE):
    """Output shape (H, W, C) of every layer; checks the chain is consistent."""
    h, w, c = input_shape
    out = []
    for L in layers:
        if isinstance(L, Conv):
            if L.in_ch != c:
                raise ValueError(f"{L.name}: in_ch {L.in_ch}, expected {c} from the previous layer")
            h, w, c = h + 2 * L.pad - L.k + 1, w + 2 * L.pad - L.k + 1, L.out_ch
        elif isinstance(L, Pool):
            h, w = h // L.size, w // L.size
        else:
            if L.n_in != h * w * c:
                raise ValueError(f"{L.name}: n_in {L.n_in}, expected {h * w * c} = {h}x{w}x{c}")
            h, w, c = 1, 1, L.n_out
        out.append((h, w, c))
    return out


# ---------------------------------------------------------------- ops (NHWC)

def im2col(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    """(N,H,W,C) -> (N,Ho,Wo,C*k*k) patches, patch order (c, kh, kw) like the weight rows."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    p = sliding_window_view(x, (k, k), axis=(1, 2))  # (N,Ho,Wo,C,k,k)
    n, ho, wo = p.shape[:3]
    return p.reshape(n, ho, wo, -1)


def conv_forward(x, w, pad):
    """x (N,H,W,C), w (O,C,k,k) -> (N,Ho,Wo,O), patches."""
    k = w.shape[-1]
    cols = im2col(x, k, pad)
    return cols @ w.reshape(w.shape[0], -1).T, cols


def conv_backward(dout, cols, w, pad, x_shape, need_dx=True):
    o, c, k, _ = w.shape
    d2 = dout.reshape(-1, o)
    dw = (d2.T @ cols.reshape(-1, c * k * k)).reshape(w.shape)
    if not need_dx:
        return dw, None
    n, h, wd, _ = x_shape
    ho, wo = dout.shape[1:3]
    dcols = (d2 @ w.reshape(o, -1)).reshape(n, ho, wo, c, k, k)
    dxp = np.zeros((n, h + 2 * pad, wd + 2 * pad, c), dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, i:i + ho, j:j + wo, :] += dcols[..., i, j]
    return dw, dxp[:, pad:pad + h, pad:pad + wd, :] if pad else dxp


def pool_windows(x, p):
    """(N,H,W,C) -> (N,Ho,Wo,C,p*p) non-overlapping windows (row-major inside a window)."""
    n, h, w, c = x.shape
    ho, wo = h // p, w // p
    xc = x[:, :ho * p, :wo * p, :].reshape(n, ho, p, wo, p, c)
    return xc.transpose(0, 1, 3, 5, 2, 4).reshape(n, ho, wo, c, p * p)


def maxpool_forward(x, p):
    win = pool_windows(x, p)
    idx = win.argmax(axis=-1)
    return np.take_along_axis(win, idx[..., None], -1)[..., 0], idx


def maxpool_backward(dout, idx, p, x_shape):
    n, h, w, c = x_shape
    ho, wo = dout.shape[1:3]
    dwin = np.zeros((n, ho, wo, c, p * p), dtype=dout.dtype)
    np.put_along_axis(dwin, idx[..., None], dout[..., None], -1)
    dx = np.zeros(x_shape, dtype=dout.dtype)
    dx[:, :ho * p, :wo * p, :] = dwin.reshape(n, ho, wo, c, p, p).transpose(0, 1, 4, 2, 5, 3).reshape(
        n, ho * p, wo * p, c)
    return dx


def flatten_chw(x):
    """(N,H,W,C) -> (N, C*H*W) in channel-major order."""
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)


def unflatten_chw(d, shape):
    n, h, w, c = shape
    return d.reshape(n, c, h, w).transpose(0, 2, 3, 1)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
