"""Sign-backprop MLP on NVM synapses and its float twin, Bennett et al. 2019 (issue 16, golden side).

Network (paper section II.B.3, Fig. 2b): inputs of eq. 5 plus a bias input (golden.synapse.encode); a
hidden layer of M units, tanh or a rectifier (slope alpha above 0, beta below; ReLU = 1, 0); a
softmax output with cross-entropy; a constant hidden unit +1 as the output bias. Both weight layers
are differential pairs (golden/synapse.py); the effective weight is w = a W with W = G+ - G- (uS) and
a = gain / (w_max sqrt(fan_in)) (the paper's normalising gains gf and gamma: a fixed scale from the
array's current to the neuron's input).
Learning: mini-batches of b = 100; the batch gradient of each weight is accumulated and one
programming cycle applies dW = dG sign(-grad) to every weight whose gradient is non-zero (the sign
rule sign(delta_k x_j) in both layers; the device's own step is the learning rate).
The float comparison (`train_float`) is the same network with float64 weights trained by ordinary
mini-batch SGD with a constant learning rate (the paper's TensorFlow comparison).
"""
from __future__ import annotations

import time

import numpy as np

from .devices import DeviceParams
from .synapse import DiffArray, encode

ACTS = ("tanh", "relu")
GAINS = (2.5, 2.5)      # layer gains: initial pre-activations of s.d. ~1; 94.73 % after 2 epochs (tanh 300, g 256)
                        # against 92.26 % with (1, 1) (full MNIST; on a 10k subset (1, 1) looked better)


def act(kind: str, z: np.ndarray, alpha: float = 1.0, beta: float = 0.0):
    """(activation, derivative) of the hidden layer."""
    if kind == "tanh":
        a = np.tanh(z)
        return a, 1.0 - a * a
    pos = z > 0
    return np.where(pos, alpha * z, beta * z), np.where(pos, alpha, beta)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def forward(x, w1, w2, kind, alpha=1.0, beta=0.0):
    """(hidden with bias unit, its derivative, output probabilities) for effective weights w1, w2."""
    h, dh = act(kind, x @ w1, alpha, beta)
    hb = np.hstack([h, np.ones((len(h), 1))])
    return hb, dh, softmax(hb @ w2)


def grads(x, y1hot, w1, w2, kind, alpha=1.0, beta=0.0):
    """Batch-summed cross-entropy gradients of w1, w2."""
    hb, dh, prob = forward(x, w1, w2, kind, alpha, beta)
    d2 = prob - y1hot
    d1 = (d2 @ w2[:-1].T) * dh
    return x.T @ d1, hb.T @ d2


def test_acc(x, labels, w1, w2, kind, alpha=1.0, beta=0.0) -> float:
    return float(np.mean(np.argmax(forward(x, w1, w2, kind, alpha, beta)[2], axis=1) == labels))


class SignMLP:
    """Two layers of differential pairs with their gains."""

    def __init__(self, p: DeviceParams, n_in: int, m: int, n_out: int, rng, kind: str = "tanh",
                 gains=GAINS, alpha: float = 1.0, beta: float = 0.0, p2: DeviceParams | None = None):
        if kind not in ACTS:
            raise ValueError(f"unknown activation {kind!r} (known: {', '.join(ACTS)})")
        self.kind, self.alpha, self.beta = kind, alpha, beta
        self.l1 = DiffArray(p, (n_in, m), rng)
        self.l2 = DiffArray(p2 or p, (m + 1, n_out), rng)
        self.a1 = gains[0] / (self.l1.w_max * np.sqrt(n_in))
        self.a2 = gains[1] / (self.l2.w_max * np.sqrt(m + 1))

    def weights(self):
        return self.a1 * self.l1.w, self.a2 * self.l2.w

    def batch(self, x, y1hot) -> int:
        g1, g2 = grads(x, y1hot, *self.weights(), self.kind, self.alpha, self.beta)
        return self.l1.program(-np.sign(g1).astype(np.int8)) + self.l2.program(-np.sign(g2).astype(np.int8))

    def acc(self, x, labels) -> float:
        return test_acc(x, labels, *self.weights(), self.kind, self.alpha, self.beta)


CODINGS = ("eq5", "unipolar")


def inputs(images: np.ndarray, coding: str = "eq5") -> np.ndarray:
    """(N, H, W) uint8 -> (N, H*W + 1) float64 with the bias input +1: eq. 5's voltages in [-1, 1]
    ("eq5", the paper's), or x / 255 in [0, 1] ("unipolar": a blank pixel applies no voltage; a
    diagnostic outside the paper, not the default)."""
    if coding == "eq5":
        return encode(images).astype(np.float64)
    if coding != "unipolar":
        raise ValueError(f"unknown input coding {coding!r} (known: {', '.join(CODINGS)})")
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return np.hstack([x, np.ones((len(x), 1))])


def _batches(n, b, rng):
    order = rng.permutation(n)
    return [order[a:a + b] for a in range(0, n, b)]


def run_mlp(data, p: DeviceParams | None, m: int = 300, kind: str = "tanh", epochs: int = 8, seed: int = 0,
            batch: int = 100, lr: float = 0.1, gains=GAINS, alpha: float = 1.0, beta: float = 0.0,
            log=None, coding: str = "eq5") -> dict:
    """One MLP on a dataset: in situ with sign backprop on device p, or (p None) float SGD with a
    constant learning rate lr (on the batch-mean gradient). Test accuracy after every epoch."""
    rng = np.random.default_rng(seed)
    x, xt = inputs(data.train_images, coding), inputs(data.test_images, coding)
    y = np.eye(data.n_classes)[data.train_labels]
    net, w = None, None
    if p is None:                                     # Glorot-uniform float weights
        s1, s2 = np.sqrt(6 / (x.shape[1] + m)), np.sqrt(6 / (m + 1 + data.n_classes))
        w = [rng.uniform(-s1, s1, (x.shape[1], m)), rng.uniform(-s2, s2, (m + 1, data.n_classes))]
    else:
        net = SignMLP(p, x.shape[1], m, data.n_classes, rng, kind, gains, alpha, beta)

    def accf():
        return net.acc(xt, data.test_labels) if net else test_acc(xt, data.test_labels, *w, kind, alpha, beta)
    curve, pulses, t0 = [(0, accf())], 0, time.perf_counter()
    for ep in range(epochs):
        for idx in _batches(len(x), batch, rng):
            if net is None:
                g1, g2 = grads(x[idx], y[idx], *w, kind, alpha, beta)
                w[0] -= lr / len(idx) * g1
                w[1] -= lr / len(idx) * g2
            else:
                pulses += net.batch(x[idx], y[idx])
        curve.append(((ep + 1) * len(x), accf()))
        if log:
            log(f"mlp-{kind}{'' if net else '-float'} seed {seed}: epoch {ep + 1}, test {100 * curve[-1][1]:.2f} %")
    dt = time.perf_counter() - t0
    return {"network": "mlp-sign" if net else "mlp-float", "activation": kind, "seed": seed, "hidden": m,
            "epochs": epochs, "batch": batch, "acc": curve[-1][1], "curve": curve, "pulses": pulses,
            "train_s": dt, "s_per_epoch": dt / max(epochs, 1), "alpha": alpha, "beta": beta,
            "coding": coding,
            **({"lr": lr} if net is None else {"gains": list(gains)})}
