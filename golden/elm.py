"""NoProp / extreme learning machine on NVM synapses, Bennett et al. 2019 (issue 16, golden side).

Network (paper section II.B.2, Fig. 2a): inputs X_i = 2 x_i / 255 - 1 (eq. 5, V_read = 1) plus a
constant input +1 (the bias, "included by including a constant input"); a fixed projection layer
whose weights are the as-fabricated spread of differential pairs left at G_off (no programming):
W_in = G_off+ - G_off-, each device's G_off drawn with the device-to-device spread of G_min
(`DeviceParams.d2d_bounds_sigma`, the `lo` of `devices.draw_cells`); hidden H_j = sign(sum_i W_in X_i)
in {-1, +1} (eq. 8, f = sign); a constant hidden unit +1; output Y_k = sum_j W_out,jk H_j with W_out
differential pairs (golden/synapse.py) trained in situ, one example at a time, by

  sign-WH (eq. 7)  dW_jk = dG sign(H_j (T_k - O_k)),  O_k = sign(Y_k), T_k = +1 for the label else -1
                   (no learning rate: each device's own pulse is the step; no update when the sign is
                   right, so the rule is sparse)
  L1 (Fig. 3)      the same directions with O_k = Y_k / s analog, each pulse scaled by |H_j||T_k - O_k|
  L2 (Fig. 3)      ... scaled by |H_j|(T_k - O_k)^2          (s = w_max sqrt(M + 1), see `OUT_NORM`)

Inference: the class is argmax_k Y_k (winner take all). The analytic comparison solves the ridge
regression W = (H^T H + lam I)^-1 H^T T on the same hidden activations (float64, software weights).

Number formats (the paper is an algorithmic study; followed here): conductances, currents and the
ridge solution are float64; inputs are the float encoding of eq. 5; hidden activations and error
signs are exact small integers (int8 / +-1). Nothing is fixed point.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .devices import DeviceParams, draw_cells
from .synapse import DiffArray

RULES = ("swh", "l1", "l2")
PROJ_SIGMA = 0.05       # relative device-to-device spread of G_off in the projection layer
RIDGE_LAM = 1e-3        # ridge lam per training example (H entries are +-1); chosen on the 5k validation split
                        # from {1e-4, 1e-3, 1e-2, 1e-1} (1e-4 and 1e-3 equal within 0.02 %)


def encode(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H*W + 1) float32: eq. 5 voltages in [-1, 1] and the bias input +1."""
    x = images.reshape(len(images), -1).astype(np.float32) * np.float32(2 / 255) - np.float32(1)
    return np.hstack([x, np.ones((len(x), 1), np.float32)])


def projection(p: DeviceParams, n_in: int, m: int, rng: np.random.Generator,
               sigma: float = PROJ_SIGMA) -> np.ndarray:
    """(n_in, m) fixed random weights (uS): as-fabricated G_off of pairs, W = G_off+ - G_off-, every
    G_off = G_min (1 + sigma z). The sign activation makes the result independent of sigma's size
    (and of the output layer's own spread, a separate parameter)."""
    if not sigma > 0:
        raise ValueError(f"the ELM projection needs a device-to-device spread of G_off > 0, got {sigma}")
    lo = draw_cells(replace(p, d2d_bounds_sigma=sigma), (2, n_in, m), rng).lo
    return lo[0] - lo[1]


def hidden(x: np.ndarray, w_in: np.ndarray, batch: int = 4096) -> np.ndarray:
    """(N, m + 1) int8: sign of the projection (0 counts as +1) and the constant hidden unit +1."""
    out = np.ones((len(x), w_in.shape[1] + 1), np.int8)
    w = w_in.astype(np.float32)
    for a in range(0, len(x), batch):
        out[a:a + batch, :-1] = np.where(x[a:a + batch] @ w >= 0, 1, -1)
    return out


def targets(labels: np.ndarray, n_out: int = 10) -> np.ndarray:
    """+-1 one-hot targets T."""
    t = -np.ones((len(labels), n_out), np.int8)
    t[np.arange(len(labels)), labels] = 1
    return t


def accuracy(h: np.ndarray, w: np.ndarray, labels: np.ndarray, batch: int = 4096) -> float:
    """Winner-take-all accuracy of Y = H W."""
    wf = w.astype(np.float32)
    hits = 0
    for a in range(0, len(h), batch):
        hits += int(np.sum(np.argmax(h[a:a + batch].astype(np.float32) @ wf, axis=1) == labels[a:a + batch]))
    return hits / len(h)


def ridge(h: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """Ridge output weights (H^T H + lam I)^-1 H^T T (float64 normal equations)."""
    hf = h.astype(np.float32)
    a = (hf.T @ hf).astype(np.float64)          # exact: integer sums below 2**24
    a[np.diag_indices_from(a)] += lam
    b = (hf.T @ t.astype(np.float32)).astype(np.float64)
    return np.linalg.solve(a, b)


def out_norm(arr: DiffArray) -> float:
    """s of the analog output O = Y / s of the L1/L2 rules: w_max sqrt(rows)."""
    return arr.w_max * np.sqrt(arr.shape[0])


def train_example(arr: DiffArray, h: np.ndarray, t: np.ndarray, rule: str = "swh") -> int:
    """One in-situ update of the output layer from one example (h: (rows,) +-1, t: (cols,) +-1);
    returns the number of device pulses."""
    hf = h.astype(np.float64)
    y = hf @ arr.g[0] - hf @ arr.g[1]
    if rule == "swh":
        e = t - np.where(y > 0, 1, -1)               # O_k = sign(Y_k): e in {-2, 0, 2}
        cols = np.flatnonzero(e)
        if len(cols) == 0:
            return 0
        return arr.program(np.outer(h, np.sign(e[cols])).astype(np.int8), cols=cols)
    e = t - y / out_norm(arr)
    mag = np.abs(e) if rule == "l1" else e * e
    return arr.program(np.outer(h, np.sign(e)).astype(np.int8), scale=np.outer(np.abs(hf), mag))


def train_batch(arr: DiffArray, h: np.ndarray, t: np.ndarray) -> int:
    """One programming cycle after a mini-batch (sign-WH): dW_jk = dG sign(sum_n H_nj (T_nk - O_nk)),
    the errors accumulated over the batch's inferences (paper section II.B.3, b = 100)."""
    hf = h.astype(np.float64)
    e = t - np.where(hf @ arr.g[0] - hf @ arr.g[1] > 0, 1, -1)
    return arr.program(np.sign(hf.T @ e).astype(np.int8))


def train_insitu(arr: DiffArray, h: np.ndarray, t: np.ndarray, rng: np.random.Generator, epochs: int,
                 rule: str = "swh", on_point=None, every: int = 0, batch: int = 1) -> int:
    """In-situ training, a fresh shuffle per epoch, one example (batch 1) or one mini-batch per
    programming cycle (sign-WH only). on_point(n_seen) is called about every `every` examples and at
    the end of each epoch. Returns the device pulses."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} (known: {', '.join(RULES)})")
    if batch > 1 and rule != "swh":
        raise ValueError(f"mini-batches are implemented for the sign-WH rule only, not {rule!r}")
    pulses, seen = 0, 0
    for _ in range(epochs):
        order = rng.permutation(len(h))
        for a in range(0, len(h), batch):
            if batch == 1:
                pulses += train_example(arr, h[order[a]], t[order[a]], rule)
            else:
                pulses += train_batch(arr, h[order[a:a + batch]], t[order[a:a + batch]])
            seen += min(batch, len(h) - a)
            if on_point is not None and every and seen % every < batch and seen % len(h):
                on_point(seen)
        if on_point is not None:
            on_point(seen)
    return pulses


def run_elm(data, p: DeviceParams, m: int = 3000, epochs: int = 3, seed: int = 0, rule: str = "swh",
            every: int = 20000, batch: int = 1, ridge_lam: float | None = RIDGE_LAM, proj_sigma: float = PROJ_SIGMA,
            log=None) -> dict:
    """One NoProp/ELM system on a dataset (golden.idx.Dataset): train on the whole training file
    (as the paper: 3 epochs = 180,000 examples), test on the test file. Returns the report dict."""
    import time
    rng = np.random.default_rng(seed)
    x, xt = encode(data.train_images), encode(data.test_images)
    w_in = projection(p, x.shape[1], m, rng, proj_sigma)
    h, ht = hidden(x, w_in), hidden(xt, w_in)
    t = targets(data.train_labels, data.n_classes)
    arr = DiffArray(p, (m + 1, data.n_classes), rng)
    curve = [(0, accuracy(ht, arr.w, data.test_labels))]

    def point(seen):
        curve.append((seen, accuracy(ht, arr.w, data.test_labels)))
        if log:
            log(f"elm seed {seed}: {seen} examples, test {100 * curve[-1][1]:.2f} %")

    t0 = time.perf_counter()
    pulses = train_insitu(arr, h, t, rng, epochs, rule, point, every, batch)
    dt = time.perf_counter() - t0
    out = {"network": "elm", "seed": seed, "hidden": m, "rule": rule, "epochs": epochs, "batch": batch,
           "acc_insitu": curve[-1][1], "curve": curve, "pulses": pulses,
           "train_s": dt, "s_per_epoch": dt / max(epochs, 1), "n_train": len(h), "n_test": len(ht)}
    if ridge_lam is not None:
        w = ridge(h, t, ridge_lam * len(h))
        out["acc_ridge"] = accuracy(ht, w, data.test_labels)
        out["ridge_lam"] = ridge_lam
    return out
