"""The networks the board can run, as named data: layers, input shape, input transform, placement.

A `Network` is everything downstream code needs to know about one system of the papers: the
layer list (golden/cnn.py specs), the image the board is given (after the input transform), and
the placement of each weight layer on the PEs (golden/mapping.py). `network(name)` is the one
lookup; `--network NAME` on the command line resolves through it.

  yao2020  Yao et al. 2020 (REFERENCE.md section 1): the five-layer CNN on 28x28 MNIST.
  li2018   Li et al. 2018 (REFERENCE.md section 2): the 64-54-10 MLP on MNIST downsampled to 8x8,
           ReLU hidden layer, 7,992 devices. Input transform "crop-area8": the 28x28 image is
           cropped by 2 pixels on every side (MNIST digits lie in the central 20x20 box, so the
           border carries nothing) and each 3x3 block of the 24x24 crop is averaged, rounded half
           up: an exact integer area average, where 28 / 8 = 3.5 would need fractional weights.
           Mapping: 64 inputs make 4 read groups of 16 BLs; each hidden unit is a row pair per
           group (108 rows), so H fills 4 PEs and O (54 inputs: groups of 16, 16, 16, 6; 20 rows
           each) takes the remaining 20 rows of the same 4 PEs: 4 x 128 rows, exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import cnn
from .mapping import YAO2020_PLACEMENT, build_mapping

TRANSFORMS = ("none", "crop-area8", "crop-area8-bias")
BIAS_PIXEL = (0, 0)         # crop-area8-bias: this pixel of the 8x8 image is the constant bias input
RULES = ("threshold", "sign", "signbp", "frozen")   # in-situ learning rules of a weight layer (golden/insitu.py)


def crop_area8(x_u8) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 8, 8) uint8: crop 2 pixels per side, 3x3 block mean, round half up."""
    x = np.asarray(x_u8)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"crop-area8 takes (N, 28, 28) images, got shape {x.shape}")
    s = x[:, 2:26, 2:26].astype(np.int64).reshape(len(x), 8, 3, 8, 3).sum(axis=(2, 4))
    return ((2 * s + 9) // 18).astype(np.uint8)       # floor(s / 9 + 1/2)


def crop_area8_bias(x_u8) -> np.ndarray:
    """crop_area8 with pixel BIAS_PIXEL set to 255: the constant bias input of a dense layer."""
    y = crop_area8(x_u8)
    y[:, BIAS_PIXEL[0], BIAS_PIXEL[1]] = 255
    return y


@dataclass(frozen=True)
class Network:
    name: str
    layers: tuple
    input_shape: tuple                      # (H, W, C) the board sees, after the transform
    placement: dict = field(hash=False)     # weight layer name -> PEs it may use
    transform: str = "none"                 # applied to the dataset's images (TRANSFORMS)
    source_shape: tuple = (28, 28)          # image size the transform takes
    notes: str = field(default="", compare=False)
    rules: dict = field(default_factory=dict, hash=False)   # weight layer -> in-situ rule (RULES; default threshold)
    hidden_requant: tuple | None = None     # (M, sh) of every hidden dense layer in situ (None: golden.insitu's)

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"network {self.name}: unknown input transform {self.transform!r}")
        cnn.shapes(self.layers, self.input_shape)      # the chain must be consistent
        bad = {k: v for k, v in self.rules.items() if v not in RULES}
        if bad:
            raise ValueError(f"network {self.name}: unknown learning rules {bad} (known: {', '.join(RULES)})")

    def rule(self, layer: str) -> str:
        return self.rules.get(layer, "threshold")

    def prepare(self, x_u8) -> np.ndarray:
        """Dataset images -> the images the board is given."""
        if self.transform == "crop-area8":
            return crop_area8(x_u8)
        return crop_area8_bias(x_u8) if self.transform == "crop-area8-bias" else np.asarray(x_u8)

    @property
    def weight_layers(self):
        return cnn.weight_layers(self.layers)

    def mapping(self):
        """Its read groups on the PEs (golden/mapping.py), by its placement."""
        return build_mapping(self.layers, self.placement)

    @property
    def n_classes(self) -> int:
        return self.weight_layers[-1].n_out

    @property
    def devices(self) -> int:
        """Cells the weights occupy: two per weight (a differential pair)."""
        return sum(2 * int(np.prod(cnn.weight_shape(L))) for L in self.weight_layers)


LI2018 = (
    cnn.Dense("H", 64, 54),
    cnn.Dense("O", 54, 10),
)

ELM_BOARD_M = 64      # the largest hidden layer the mapping fits on 8 PEs (module docstring)
ELM_BOARD = (
    cnn.Dense("H", 64, ELM_BOARD_M),
    cnn.Dense("O", ELM_BOARD_M, 10),
)
ELM_STEP_REQUANT = (510, 1)   # h = clip((A * 510 + 1) >> 1, 0, 255) = 255 [A >= 1]: a binary step

NETWORKS: dict[str, Network] = {
    "yao2020": Network("yao2020", cnn.YAO2020, cnn.INPUT_SHAPE, YAO2020_PLACEMENT,
                       notes="Yao 2020 five-layer CNN, 28x28 inputs"),
    "li2018": Network("li2018", LI2018, (8, 8, 1), {"H": (0, 1, 2, 3), "O": (0, 1, 2, 3)},
                      transform="crop-area8", notes="Li 2018 64-54-10 MLP, 8x8 inputs"),
    "elm-board": Network("elm-board", ELM_BOARD, (8, 8, 1), {"H": (0, 1, 2, 3), "O": (4,)},
                         transform="crop-area8-bias", rules={"H": "frozen", "O": "sign"},
                         hidden_requant=ELM_STEP_REQUANT,
                         notes="Bennett 2019 NoProp/ELM 64-64-10 on the board: fresh-cell projection, sign-WH output"),
}


def network(name: str | Network = "yao2020") -> Network:
    if isinstance(name, Network):
        return name
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r} (known: {', '.join(NETWORKS)})")
    return NETWORKS[name]
