"""Per-modality encoders, chosen from each modality's kind: the first half of every model a method builds.

:func:`build_encoders` gives one encoder per modality of a :class:`~bench.protocol.DataDescription` (each with
an ``out_dim``); :data:`ENCODER_FACTORIES` maps a kind (``"vector"``, ``"image"``, ``"spectrogram"``,
``"spectrogram_resnet18"``, ``"frames_resnet18"``, ``"tokens"``) to the factory that builds its encoder.
Fusion heads are in :mod:`bench.nn.fusion`, the classifier networks that put encoders and heads together in
:mod:`bench.nn.classifiers`. Methods import these modules, never a dataset: what they know of the data is
the :class:`~bench.protocol.DataDescription`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from bench.protocol import DataDescription, ModalitySpec

__all__ = [
    "CHANNELS_LAST",
    "ENCODER_FACTORIES",
    "SEQUENCE_LENGTHS",
    "ConvEncoder",
    "MLPEncoder",
    "build_encoders",
    "encode",
    "kind_argument",
    "sequence_length",
]


class MLPEncoder(nn.Module):
    """Flatten, then two Linear-BatchNorm-ReLU blocks.

    BatchNorm mirrors the ResNet-18 encoders of the official audio-visual code and lets the official
    optimiser (SGD, lr 1e-3) train feature datasets in tens of epochs: without it, late fusion reached
    41% on ``handwritten`` after 5 epochs, with it 97%. The output is non-negative like a pooled CNN feature.
    """

    def __init__(self, in_dim: int, *, hidden: int = 128, out_dim: int = 64) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
            nn.BatchNorm1d(out_dim),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _mlp_for(spec: ModalitySpec) -> nn.Module:
    in_dim = 1
    for size in spec.shape:
        in_dim *= size
    return MLPEncoder(in_dim)


class ConvEncoder(nn.Module):
    """A compact CNN for (C, H, W) inputs: three 3x3 Conv-BatchNorm-ReLU blocks (16, 32, 64 channels) with a
    2x2 max-pool after the first two, then global *max* pooling to ``out_dim`` = 64 features.

    Max rather than average pooling: on AV-MNIST log-mel spectrograms (about half of each is padding or
    silence) the average-pooled encoder trained alone with the shared optimiser (SGD, lr 1e-3, batch 16)
    stayed at 25% test accuracy after 4 epochs, the max-pooled one reached 92%. Global pooling makes the
    encoder indifferent to the input's height and width; it trains AV-MNIST-sized data on one CPU thread in
    seconds per epoch. Like :class:`MLPEncoder`, the output is non-negative.
    """

    def __init__(self, in_channels: int, *, channels: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.out_dim = channels[-1]
        layers: list[nn.Module] = []
        previous = in_channels
        for i, width in enumerate(channels):
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            previous = width
        self.net = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x if x.dim() == 4 else x.unsqueeze(1))

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling as a sequence of positions, (B, H' * W', ``out_dim``),
        row-major over (H', W'); ``forward`` is its maximum over positions. Cross-attention heads attend
        over these positions (time-frequency cells of a spectrogram, regions of an image)."""
        maps = self.net[:-2](x if x.dim() == 4 else x.unsqueeze(1))  # without AdaptiveMaxPool2d and Flatten
        return maps.flatten(2).transpose(1, 2)

    @staticmethod
    def positions(height: int, width: int, *, channels: tuple[int, ...] = (16, 32, 64)) -> int:
        """Length of :meth:`sequence` for an input of this height and width (a 2x2 max-pool per block but the last)."""
        pools = len(channels) - 1
        return (height >> pools) * (width >> pools)


def _cnn_for(spec: ModalitySpec) -> nn.Module:
    if len(spec.shape) not in (2, 3):
        raise ValueError(
            f"modality {spec.name!r} of kind {spec.kind!r} needs shape (C, H, W) or (H, W), got {spec.shape}"
        )
    return ConvEncoder(spec.shape[0] if len(spec.shape) == 3 else 1)


#: kind -> factory. Adapters of media data add their kinds (spectrogram, frames, tokens) here.
ENCODER_FACTORIES: dict[str, Callable[[ModalitySpec], nn.Module]] = {
    "vector": _mlp_for,
    "spectrogram": _cnn_for,
    "image": _cnn_for,
}


def _conv_positions(spec: ModalitySpec) -> int:
    return ConvEncoder.positions(*spec.shape[-2:])


#: kind -> how many positions its encoder's ``sequence(x)`` gives, (B, T, out_dim), for a modality. Kinds
#: absent here have encoders that give only a pooled vector (``vector``: an MLP has no positions).
SEQUENCE_LENGTHS: dict[str, Callable[[ModalitySpec], int]] = {
    "spectrogram": _conv_positions,
    "image": _conv_positions,
}


def sequence_length(spec: ModalitySpec) -> int | None:
    """Positions of the sequence this modality's encoder gives, or None when it gives only a vector."""
    length = SEQUENCE_LENGTHS.get(spec.kind.split(":", 1)[0])
    return None if length is None else length(spec)


def build_encoders(description: DataDescription) -> nn.ModuleDict:
    """One encoder per modality, in the dataset's order; each exposes ``out_dim``.

    A kind may carry an argument after a colon, ``"tokens:/models/bert-base-uncased"``: the factory of the part
    before the colon builds it and reads the argument (:func:`kind_argument`).
    """
    encoders = nn.ModuleDict()
    for spec in description.modalities:
        kind = spec.kind.split(":", 1)[0]
        if kind not in ENCODER_FACTORIES:
            raise ValueError(
                f"no encoder for modality kind {spec.kind!r} (modality {spec.name!r}); "
                f"known kinds: {', '.join(sorted(ENCODER_FACTORIES))}"
            )
        encoders[spec.name] = ENCODER_FACTORIES[kind](spec)
    return encoders


def kind_argument(spec: ModalitySpec) -> str:
    """The argument of a ``"kind:argument"`` modality kind ("" when there is none)."""
    return spec.kind.partition(":")[2]


def encode(encoders: nn.ModuleDict, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each modality's pooled features, ``encoders[name](inputs[name])``, by name."""
    return {name: encoder(inputs[name]) for name, encoder in encoders.items()}


#: The ResNet-18 encoders run their convolutions in channels-last (NHWC) memory format: an OGM-GE epoch
#: (two ResNet-18s, batch 64, CREMA-D-sized inputs) took 0.78-0.80 of the official code's time with it and
#: 0.83-0.90 without, on 2 AVX2 cores (benchmarks/ogm_ge_official.py, BENCHMARKS.md).
CHANNELS_LAST = True


# Media encoders (bench/nn/backbones.py) need the optional extras; these factories import it only when a
# modality of their kind is built, so `import bench.nn` stays free of timm and transformers.
def _spectrogram_resnet18(spec: ModalitySpec) -> nn.Module:
    if len(spec.shape) not in (2, 3):
        raise ValueError(
            f"modality {spec.name!r} of kind {spec.kind!r} needs shape (1, F, T) or (F, T), got {spec.shape}"
        )
    from bench.nn.backbones import ResNet18Audio

    return ResNet18Audio(in_chans=spec.shape[0] if len(spec.shape) == 3 else 1, channels_last=CHANNELS_LAST)


def _frames_resnet18(spec: ModalitySpec) -> nn.Module:
    if len(spec.shape) not in (3, 4):
        raise ValueError(
            f"modality {spec.name!r} of kind {spec.kind!r} needs shape (C, T, H, W) or (C, H, W), got {spec.shape}"
        )
    from bench.nn.backbones import ResNet18Frames

    return ResNet18Frames(in_chans=spec.shape[0], channels_last=CHANNELS_LAST)


def _tokens(spec: ModalitySpec) -> nn.Module:
    if len(spec.shape) != 2 or spec.shape[0] != 2:
        raise ValueError(
            f"modality {spec.name!r} of kind 'tokens' needs shape (2, L): input ids and attention mask, "
            f"got {spec.shape}"
        )
    from bench.nn.backbones import TextEncoder

    encoder = TextEncoder(kind_argument(spec) or None)  # "tokens:<model dir>", else the shipped MiniLM
    if encoder.max_length is not None and spec.shape[1] > encoder.max_length:
        raise ValueError(
            f"modality {spec.name!r}: {spec.shape[1]} tokens exceed the text model's {encoder.max_length} positions"
        )
    return encoder


ENCODER_FACTORIES.update(
    {"spectrogram_resnet18": _spectrogram_resnet18, "frames_resnet18": _frames_resnet18, "tokens": _tokens}
)
