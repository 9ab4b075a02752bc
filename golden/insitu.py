"""In-situ training of every dense layer of a network on the board (Li 2018; issue 15).

Training starts from the fresh board (li2018: every cell one pulse above the window floor),
never from ex-situ weights. One iteration, a batch of images from the training split:

  forward   per dense layer: golden.datapath.layer_accumulate through the crossbar (bit-serial
            inputs, SL ADC, shift-and-add, G+ - G-, read groups summed); every layer but the last
            ReLU + requant to u8 (relu_requant(A, 1, HIDDEN_SHIFT): h = A >> 5); the last layer's A = logits
  output    fixed-point softmax p (Q1.15), delta = p - onehot (golden.datapath)
  backward  for each layer l from the last down to the second: its delta -> error codes
            (golden.transposed_read.error_code, per-image block exponent), the transposed read of
            layer l (error on the SLs, BL sums through BL_ADC) -> T, the delta of layer l-1 =
            (T << shift) * relu'(h), relu'(h) = 0 < h < 255 (h the u8 output of layer l-1)
  update    per layer: acc = V^T delta over the batch (golden.update.accumulate), dI = -(acc*M +
            2**(sh-1)) >> sh (weight_update, verify codes of 20 nA), threshold, commands row by row
            (golden.update.commands); layers programmed first to last, each through
            golden.hybrid.PairProgrammer: "closed" (Yao: threshold + write-verify) or "open" (Li:
            blind identical pulses, their number from the update, no verify)
  All reads of an iteration (forward and transposed) see the weights before its programming.

Scales from the array's physics (there is no ex-situ QuantConfig): a weight is the current
difference I+ - I- in uA (the float network that the integers stand for has weights in uA, inputs
x / 255); the SL ADC is ADC(8, 64 uA) (`SL_ADC`: a 16-input read group at the window top, 16 x 4
uA, never saturates; LSB 0.25 uA = LSB_UA), so A = sum_j v_j (I+_j - I-_j) / LSB_UA in slot codes.
A layer whose input code v stands for v * s_v has float pre-activation a = A * s_v * LSB_UA; hidden
outputs h = A >> HIDDEN_SHIFT (5) stand for h * s_v * LSB_UA * 32 (input 1/255 -> hidden 8/255: a
hidden code saturates at a = 8, e.g. 8 full inputs through 1 uA weights); the logits are
A * s_v * LSB_UA * 2**-SOFTMAX_SHIFT nats (li2018: 1/510 nat per unit). The two shifts are the
only free scales; they were chosen once on the validation split (docs/insitu.md). The delta of
the last layer is Q1.15 (2**-15, times the softmax gain by the chain rule); a hidden delta
(T << shift) is the layer above's delta scale times BL_ADC's LSB (T sums err * (I+ - I-) / LSB in
BL codes). One float step eta serves every layer: dI (codes) = -eta * s_v * s_delta * 50 codes/uA
* acc, encoded as (M, sh) (golden.model.requant_params).

eta is chosen on the validation split (`choose_eta`: a grid, each candidate trains a reseeded copy
of the fresh board, lowest validation error wins; never the test set). Thresholds: closed loop
Yao's rule scaled to the device's verify margin (Yao: Th = 15 codes = 3 x the 5-code margin;
li2018: 3 x 2 codes = 6); open loop half a nominal pulse (smaller parts are dropped by the pair
rule anyway).

Learning rules per layer (the network's `rules`, golden/networks.py, or InsituConfig.rules):
"threshold" (all of the above, the default), "frozen" (never programmed: the ELM's fresh-cell
projection; no delta is computed for it, nor for the layers below it) and "sign" (the last layer
only: Bennett 2019's sign Widrow-Hoff, eq. 7: delta = golden.update.sign_error of the logits,
acc = V^T delta over the batch, d = golden.update.sign_rule(acc), one identical pulse per device
of every pair with d != 0, golden/pair_pulser.py; no eta, no threshold, no verify; the layers below
it frozen) and "signbp" (any layer: Bennett's sign-backprop, sign(delta_k x_j): the deltas of the
threshold rule - softmax at the output, transposed reads below - and acc = V^T delta, then
d = sign_rule(acc) and one pulse per device as "sign"). A network with no threshold layer needs no
eta. Hidden layers take (M, sh) = the network's `hidden_requant`
(elm-board: a binary step) or (1, hidden_shift).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import cnn, model, update
from .adc import ADC
from .datapath import SOFTMAX_FRAC, argmax, delta, layer_accumulate, relu_requant, softmax_fixed, softmax_params
from .devices import NA_PER_US, SET
from .hybrid import PairProgrammer, batch_order
from .mapping import build_mapping
from .networks import network
from .pair_pulser import PairPulser
from .transposed_read import BL_ADC, ERR_BITS, error_code, hidden_error, layer_transposed
from .write_verify import MARGIN_NA, VERIFY_LSB_NA

SL_ADC = ADC(8, 64.0)               # forward SL converter of in-situ networks: LSB 0.25 uA
LSB_UA = SL_ADC.lsb_ua
HIDDEN_SHIFT = 5                    # h = A >> 5 (chosen on the validation split: docs/insitu.md)
SOFTMAX_SHIFT = 2                   # softmax gain 2**-2 on the physical logit scale (likewise)
CODES_PER_UA = 1000.0 / VERIFY_LSB_NA   # 50 verify codes per uA of weight
INPUT_BITS = 8
ETA_GRID = (0.03, 0.045, 0.06, 0.08, 0.11)   # choose_eta's candidates (float step, weights in uA)
ETA_SEED = 2_000_029                # choose_eta's board noise and batch order: seed + this


@dataclass
class InsituConfig:
    eta: float | None = None
    batch: int = 100
    mode: str = "open"
    th_code: int | None = None           # None: the mode's default (module docstring)
    err_bits: int = ERR_BITS
    hidden_shift: int = HIDDEN_SHIFT
    softmax_shift: int = SOFTMAX_SHIFT   # logits in nats: A * s_v * LSB_UA / 2**softmax_shift
    record_every: int = 0                # iterations between test-error records (0: start and end)
    rules: dict | None = None            # weight layer -> rule (None: the network's rules)


def layer_rules(net, rules=None) -> list[str]:
    """The rule of every weight layer of net (module docstring); checked."""
    from .networks import RULES
    rules = net.rules if rules is None else rules
    out = [rules.get(L.name, "threshold") for L in net.weight_layers]
    bad = [r for r in out if r not in RULES] + [k for k in rules if k not in {L.name for L in net.weight_layers}]
    if bad:
        raise ValueError(f"network {net.name}: bad learning rules {bad} (rules {RULES}, layers "
                         f"{[L.name for L in net.weight_layers]})")
    if "sign" in out[:-1]:
        raise ValueError(f"network {net.name}: the sign rule is for the output layer only (sign-WH, eq. 7)")
    if out[-1] == "sign" and any(r != "frozen" for r in out[:-1]):
        raise ValueError(f"network {net.name}: sign-WH trains the output layer alone (the layers below frozen); "
                         "backprop through the sign error is not a rule here (use signbp)")
    if all(r == "frozen" for r in out):
        raise ValueError(f"network {net.name}: every layer frozen, nothing to train")
    return out


def flat_inputs(net, images) -> np.ndarray:
    """Dataset images -> the network's u8 input vectors (N, fan_in): transform, channel-major flatten."""
    x = np.asarray(net.prepare(images))
    return cnn.flatten_chw(x.reshape((len(x),) + tuple(net.input_shape))).astype(np.int64)


def default_threshold(xb, mode: str) -> int:
    if mode == "closed":      # Yao: Th = 1.5 uS = 15 codes = 3 x the +/-100 nA verify margin
        return max(1, update.TH_CODE * xb.margin_code // (MARGIN_NA // VERIFY_LSB_NA))
    p = xb.p
    step_codes = p.mean_step_us(0.5 * (p.window_us[0] + p.window_us[1]), SET) * NA_PER_US / VERIFY_LSB_NA
    return max(1, math.ceil(0.5 * step_codes))


class InsituTrainer:
    """In-situ training of the dense layers of `net` on the crossbar `xb` (module docstring)."""

    def __init__(self, xb, net="li2018", cfg: InsituConfig | None = None):
        self.xb, self.net = xb, network(net)
        self.cfg = cfg or InsituConfig()
        self.layers = self.net.weight_layers
        if not all(isinstance(L, cnn.Dense) for L in self.layers):
            raise ValueError(f"network {self.net.name}: in-situ training takes dense layers only")
        self.rules = layer_rules(self.net, self.cfg.rules)
        if self.cfg.eta is None and "threshold" in self.rules:
            raise ValueError("InsituConfig.eta: no step given (choose one with golden.insitu.choose_eta)")
        self.hidden_rq = tuple(self.net.hidden_requant or (1, self.cfg.hidden_shift))
        self.mapping = build_mapping(self.net.layers, self.net.placement, n_pe=xb.n_pe)
        self.th = default_threshold(xb, self.cfg.mode) if self.cfg.th_code is None else int(self.cfg.th_code)
        self.prog = PairProgrammer(xb, self.cfg.mode)
        self.pulser = PairPulser(xb)
        self._scales()
        self.it = 0

    def _scales(self):
        """Float scale of every layer's input code and delta, the softmax and update (M, sh)."""
        s_v, self.s_in = model.X_SCALE, []
        for _ in self.layers:
            self.s_in.append(s_v)
            s_v = s_v * LSB_UA * (1 << self.cfg.hidden_shift)
        gain = 2.0 ** -self.cfg.softmax_shift
        self.logit_scale = self.s_in[-1] * LSB_UA * gain
        self.sm_m, self.sm_sh = softmax_params(self.logit_scale)
        s_d, self.s_delta = 2.0 ** -SOFTMAX_FRAC * gain, [0.0] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            self.s_delta[i] = s_d
            s_d *= BL_ADC.lsb_ua
        self.upd = [model.requant_params(self.cfg.eta * self.s_in[i] * self.s_delta[i] * CODES_PER_UA)
                    if r == "threshold" else None for i, r in enumerate(self.rules)]

    def groups(self, i):
        return self.mapping.groups[self.layers[i].name]

    def forward(self, x):
        """x (M, fan_in) u8 -> (inputs of every layer, logits)."""
        acts, v = [], np.asarray(x, dtype=np.int64)
        for i in range(len(self.layers)):
            acts.append(v)
            a = layer_accumulate(self.xb, self.groups(i), v, INPUT_BITS, SL_ADC)
            if i == len(self.layers) - 1:
                return acts, a
            v = relu_requant(a, *self.hidden_rq)

    def backward(self, acts, logits, labels):
        """Deltas of every layer (int64): Q1.15 at the output (sign rule: sign_error), transposed
        reads below, down to the lowest layer that is not frozen (None below it)."""
        if self.rules[-1] == "sign":
            d = update.sign_error(logits, labels)
        else:
            d = delta(softmax_fixed(logits, self.sm_m, self.sm_sh), labels)
        deltas = [None] * len(self.layers)
        deltas[-1] = d
        lowest = next(i for i, r in enumerate(self.rules) if r != "frozen")
        for i in range(len(self.layers) - 1, lowest, -1):
            err, s = error_code(deltas[i], self.cfg.err_bits)
            t = layer_transposed(self.xb, self.groups(i), err, self.cfg.err_bits, self.layers[i].n_in, BL_ADC)
            h = acts[i]
            deltas[i - 1] = hidden_error(t, s) * ((h > 0) & (h < model.ACT_MAX))
        return deltas

    def updates(self, acts, deltas):
        """Per layer: thresholded dI (fan_in, n_out) in verify codes, the sign rule's d, or None (frozen)."""
        out = []
        for i, (v, d) in enumerate(zip(acts, deltas)):
            if self.rules[i] == "frozen":
                out.append(None)
            elif self.rules[i] in ("sign", "signbp"):
                out.append(update.sign_rule(update.accumulate(v, d)))
            else:
                out.append(update.threshold(update.weight_update(update.accumulate(v, d), *self.upd[i]), self.th))
        return out

    def step(self, x, labels):
        """One iteration on a batch; returns (commands, pulses, batch error %)."""
        acts, logits = self.forward(x)
        err = float((argmax(logits) != np.asarray(labels)).mean() * 100)
        dis = self.updates(acts, self.backward(acts, logits, labels))
        p0, n = self.pulses, 0
        for L, d, r in zip(self.layers, dis, self.rules):
            for c in ([] if d is None else update.commands(d, self.mapping, L.name)):
                if r in ("sign", "signbp"):
                    self.pulser.apply(c)
                else:
                    self.prog.apply(c, self.it)
                n += 1
        self.it += 1
        return n, self.pulses - p0, err

    @property
    def pulses(self) -> int:
        return self.prog.stats.pulses + self.pulser.pulses

    def logits(self, x, chunk: int = 10000):
        return np.concatenate([self.forward(x[i:i + chunk])[1] for i in range(0, len(x), chunk)])

    def error(self, x, labels) -> float:
        return float((argmax(self.logits(x)) != np.asarray(labels)).mean() * 100)


@dataclass
class Trace:
    images: list = field(default_factory=list)       # training images seen at each record
    test_error: list = field(default_factory=list)
    batch_error: list = field(default_factory=list)  # per iteration, before its update
    commands: list = field(default_factory=list)
    pulses: list = field(default_factory=list)
    seconds_train: float = 0.0

    def as_dict(self):
        return dict(self.__dict__)


def train(t: InsituTrainer, x, y, order, record=None) -> Trace:
    """Run t over the batches order (iterations, batch) of x, y; record() -> test error (%), called
    at the start, every cfg.record_every iterations and at the end."""
    tr = Trace()

    def rec(i):
        if record is not None:
            tr.images.append(int(i * order.shape[1]))
            tr.test_error.append(float(record()))

    rec(0)
    for i, ix in enumerate(order, 1):
        t0 = time.perf_counter()
        n, p, e = t.step(x[ix], y[ix])
        tr.seconds_train += time.perf_counter() - t0
        tr.commands.append(n)
        tr.pulses.append(p)
        tr.batch_error.append(e)
        if t.cfg.record_every and i % t.cfg.record_every == 0 and i != len(order):
            rec(i)
    rec(len(order))
    return tr


def choose_eta(xb, net, x, y, train_idx, val_idx, iterations: int, seed: int, cfg: InsituConfig,
               candidates=ETA_GRID) -> dict:
    """The step of one run, chosen on the validation split: every candidate trains a copy of the
    fresh board xb (reseeded: programming noise and batch order disjoint from the run's) for
    `iterations` batches of train_idx; lowest validation error wins, ties to the smaller step."""
    s = int(seed) + ETA_SEED
    order = np.asarray(train_idx)[batch_order(len(train_idx), cfg.batch, iterations, seed=s)]
    scores = {}
    for e in candidates:
        b = xb.copy()
        b.reseed(s)
        t = InsituTrainer(b, net, _with(cfg, eta=e))
        train(t, x, y, order)
        scores[e] = t.error(x[val_idx], y[val_idx])
    best = min(candidates, key=lambda e: (scores[e], e))
    return {"eta": float(best), "candidates": [float(e) for e in candidates],
            "validation_error": {str(e): v for e, v in scores.items()}, "iterations": int(iterations),
            "validation_images": int(len(val_idx)), "seed": s}


def _with(cfg: InsituConfig, **kw) -> InsituConfig:
    d = dict(cfg.__dict__)
    d.update(kw)
    return InsituConfig(**d)
