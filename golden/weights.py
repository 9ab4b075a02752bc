"""Weights file: an .npz (float and integer weights) plus a JSON sidecar of metadata.

`<stem>.npz` holds `float/<layer>` (float32) and `int/<layer>` (int8, -7..7) arrays;
`<stem>.json` holds the network's name (golden/networks.py; a file without one is yao2020's),
the quantisation (scales, requant M/shift), training metadata (seed, epochs, data hash,
accuracies) and the layer list. A file is loaded only for the network it names. Loading checks every shape, range and
JSON type (scales finite and > 0) and names the file and field on any mismatch. A stem keeps its
dots (runs/model.v2 -> runs/model.v2.npz); saving never replaces existing files without force and
writes each file atomically (golden/fileio.py).
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cnn, model, networks
from .fileio import InputError, check_outputs, with_suffix_kept, write_atomic
from .model import QuantConfig

FORMAT = "mcnn-weights/1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "yao2020"


def default_weights(net="yao2020") -> Path:
    """The committed weights stem of a network: weights/<name>."""
    return WEIGHTS_DIR / networks.network(net).name


class WeightsError(InputError):
    pass


def paths(stem) -> tuple[Path, Path]:
    """(<stem>.npz, <stem>.json); a stem given with either suffix names the pair, other dots stay."""
    stem = Path(stem)
    if stem.suffix in (".npz", ".json"):
        stem = stem.with_suffix("")
    return with_suffix_kept(stem, ".npz"), with_suffix_kept(stem, ".json")


@dataclass
class Weights:
    float_w: dict[str, np.ndarray]
    int_w: dict[str, np.ndarray]
    q: QuantConfig
    meta: dict
    network: str = "yao2020"

    def save(self, stem, force: bool = False) -> tuple[Path, Path]:
        """Write <stem>.npz and <stem>.json (each atomically); existing files only with force."""
        npz, js = paths(stem)
        check_outputs([npz, js], force)            # both checked before either is written
        arrs = {f"float/{k}": v.astype(np.float32) for k, v in self.float_w.items()}
        arrs.update({f"int/{k}": v.astype(np.int8) for k, v in self.int_w.items()})
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrs)
        doc = {"format": FORMAT, "network": self.network, "quant": self.q.to_json(), "meta": self.meta}
        write_atomic(npz, buf.getvalue(), force)
        write_atomic(js, json.dumps(doc, indent=2, sort_keys=True) + "\n", force)
        return npz, js


def load(stem=DEFAULT_WEIGHTS, network="yao2020") -> Weights:
    """The weights of `network` (a name or golden.networks.Network) from <stem>.npz + .json."""
    net = networks.network(network)
    layers = net.layers
    npz, js = paths(stem)
    for p in (npz, js):
        if not p.is_file():
            raise WeightsError(f"{p}: missing (a weights file is <stem>.npz + <stem>.json; run `make train`)")
    try:
        doc = json.loads(js.read_text())
    except (ValueError, RecursionError) as e:    # JSONDecodeError, UnicodeDecodeError, > 4300 digits, nesting
        raise WeightsError(f"{js}: not valid JSON: {e}") from e
    except OSError as e:
        raise WeightsError(f"{js}: cannot read: {e.strerror or e}") from e
    if not isinstance(doc, dict):
        raise WeightsError(f"{js}: a JSON {type(doc).__name__}, expected an object with format, quant, meta")
    if doc.get("format") != FORMAT:
        raise WeightsError(f"{js}: field 'format' is {doc.get('format')!r}, expected {FORMAT!r}")
    named = doc.get("network", "yao2020")
    if named != net.name:
        raise WeightsError(f"{js}: weights of network {named!r}, not {net.name!r} (--network {named}?)")
    q = _quant(js, doc.get("quant"))
    if not isinstance(doc.get("meta", {}), dict):
        raise WeightsError(f"{js}: field 'meta' is a {type(doc['meta']).__name__}, expected an object")
    try:
        with np.load(npz) as z:
            arrs = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise WeightsError(f"{npz}: not a readable .npz file: {e}") from e
    fw, iw = {}, {}
    last = cnn.weight_layers(layers)[-1].name
    for L in cnn.weight_layers(layers):
        shape = cnn.weight_shape(L)
        for kind, dst in (("float", fw), ("int", iw)):
            key = f"{kind}/{L.name}"
            if key not in arrs:
                raise WeightsError(f"{npz}: no array {key!r} (expected shape {shape})")
            a = arrs[key]
            if a.dtype.kind not in "fiu":          # strings or complex: no finite real weights
                raise WeightsError(f"{npz}: array {key!r} holds {a.dtype} values, expected real numbers")
            if a.shape != shape:
                raise WeightsError(f"{npz}: array {key!r} has shape {a.shape}, expected {shape}")
            if not np.all(np.isfinite(a)):
                raise WeightsError(f"{npz}: array {key!r} holds NaN or infinite values")
            dst[L.name] = a
        w = iw[L.name]
        if w.dtype.kind not in "iu" or w.min() < -model.W_LEVELS or w.max() > model.W_LEVELS:
            raise WeightsError(f"{npz}: array 'int/{L.name}' must be integers in [-{model.W_LEVELS}, "
                               f"{model.W_LEVELS}], got {w.dtype} in [{w.min()}, {w.max()}]")
        if L.name not in q.w_scale:
            raise WeightsError(f"{js}: quant.w_scale has no entry for layer {L.name}")
        if L.name != last:                  # ReLU + requant after every weight layer but the last
            if L.name not in q.requant:
                raise WeightsError(f"{js}: quant.requant has no entry for layer {L.name}")
            m, sh = q.requant[L.name]
            if not (0 < m < 1 << 16 and 1 <= sh <= 48):
                raise WeightsError(f"{js}: quant.requant.{L.name} = [{m}, {sh}], expected M in 1..65535 "
                                   f"and shift in 1..48")
    return Weights(fw, {k: v.astype(np.int8) for k, v in iw.items()}, q, doc.get("meta", {}), net.name)


def _number(js, field, v, positive=True) -> float:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**1023:   # math.isfinite would overflow
        raise WeightsError(f"{js}: field '{field}' is an integer of {len(str(v))} digits, expected a finite number > 0")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise WeightsError(f"{js}: field '{field}' is {v!r}, expected a finite number > 0")
    return float(v)


def _int(js, field, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise WeightsError(f"{js}: field '{field}' is {v!r}, expected an integer")
    return v


def _quant(js, d) -> QuantConfig:
    """The 'quant' object, every JSON type checked: w_scale {layer: scale > 0}, requant {layer:
    [M, shift]} (integers), logit_scale > 0."""
    if not isinstance(d, dict):
        raise WeightsError(f"{js}: field 'quant' is {type(d).__name__}, expected an object with w_scale, "
                           f"requant, logit_scale")
    for k, t in (("w_scale", dict), ("requant", dict), ("logit_scale", (int, float))):
        if not isinstance(d.get(k), t) or isinstance(d.get(k), bool):
            raise WeightsError(f"{js}: field 'quant.{k}' is {d.get(k)!r}, expected "
                               + ("an object {layer: ...}" if t is dict else "a finite number > 0"))
    w_scale = {k: _number(js, f"quant.w_scale.{k}", v) for k, v in d["w_scale"].items()}
    requant = {}
    for k, v in d["requant"].items():
        if not isinstance(v, list) or len(v) != 2:
            raise WeightsError(f"{js}: field 'quant.requant.{k}' is {v!r}, expected [M, shift]")
        requant[k] = (_int(js, f"quant.requant.{k}[0]", v[0]), _int(js, f"quant.requant.{k}[1]", v[1]))
    return QuantConfig(w_scale, requant, _number(js, "quant.logit_scale", d["logit_scale"]))


def dequantized(w: Weights) -> dict[str, np.ndarray]:
    """Float weights equal to scale * integer weight (what the quantised model computes with)."""
    return {k: v.astype(np.float64) * w.q.w_scale[k] for k, v in w.int_w.items()}
