"""Weights file: an .npz (float and integer weights) plus a JSON sidecar of metadata.

`<stem>.npz` holds `float/<layer>` (float32) and `int/<layer>` (int8, -7..7) arrays;
`<stem>.json` holds the quantisation (scales, requant M/shift), training metadata
(seed, epochs, data hash, accuracies) and the layer list. Loading checks every shape and range
and names the file and field on any mismatch.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cnn, model
from .model import QuantConfig

FORMAT = "mcnn-weights/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "yao2020"


class WeightsError(ValueError):
    pass


@dataclass
class Weights:
    float_w: dict[str, np.ndarray]
    int_w: dict[str, np.ndarray]
    q: QuantConfig
    meta: dict

    def save(self, stem):
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        arrs = {f"float/{k}": v.astype(np.float32) for k, v in self.float_w.items()}
        arrs.update({f"int/{k}": v.astype(np.int8) for k, v in self.int_w.items()})
        np.savez_compressed(stem.with_suffix(".npz"), **arrs)
        doc = {"format": FORMAT, "quant": self.q.to_json(), "meta": self.meta}
        stem.with_suffix(".json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def load(stem=DEFAULT_WEIGHTS, layers=cnn.YAO2020) -> Weights:
    stem = Path(stem)
    if stem.suffix in (".npz", ".json"):
        stem = stem.with_suffix("")
    npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
    for p in (npz, js):
        if not p.exists():
            raise WeightsError(f"{p}: missing (a weights file is <stem>.npz + <stem>.json; run `make train`)")
    try:
        doc = json.loads(js.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{js}: not valid JSON: {e}") from e
    if doc.get("format") != FORMAT:
        raise WeightsError(f"{js}: field 'format' is {doc.get('format')!r}, expected {FORMAT!r}")
    try:
        q = QuantConfig.from_json(doc["quant"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise WeightsError(f"{js}: field 'quant' malformed ({e!r}); expected w_scale, requant, logit_scale") from e
    try:
        with np.load(npz) as z:
            arrs = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise WeightsError(f"{npz}: not a readable .npz file: {e}") from e
    fw, iw = {}, {}
    for L in cnn.weight_layers(layers):
        shape = cnn.weight_shape(L)
        for kind, dst in (("float", fw), ("int", iw)):
            key = f"{kind}/{L.name}"
            if key not in arrs:
                raise WeightsError(f"{npz}: no array {key!r} (expected shape {shape})")
            a = arrs[key]
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
        if isinstance(L, cnn.Conv):
            if L.name not in q.requant:
                raise WeightsError(f"{js}: quant.requant has no entry for layer {L.name}")
            m, sh = q.requant[L.name]
            if not (0 < m < 1 << 16 and 1 <= sh <= 48):
                raise WeightsError(f"{js}: quant.requant.{L.name} = [{m}, {sh}], expected M in 1..65535 "
                                   f"and shift in 1..48")
    return Weights(fw, {k: v.astype(np.int8) for k, v in iw.items()}, q, doc.get("meta", {}))


def dequantized(w: Weights) -> dict[str, np.ndarray]:
    """Float weights equal to scale * integer weight (what the quantised model computes with)."""
    return {k: v.astype(np.float64) * w.q.w_scale[k] for k, v in w.int_w.items()}
