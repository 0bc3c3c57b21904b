"""InfoReg: information acquisition regulation (Huang, Wei, Yang, Hu, "Adaptive Unimodal Regulation for
Balanced Multimodal Information Acquisition", CVPR 2025, arXiv 2503.18595; official code
``GeWu-Lab/InfoReg_CVPR2025``, ``main.py``, ``train_epoch``).

A late-fusion (concat) model. During the *prime learning window*, the early epochs in which the model still
acquires information fast, the modality that is ahead (information-sufficient) is slowed down by a proximal
term that pulls its encoder back towards its parameters at the start of the epoch, so the other modality
can acquire information:

* Window: the information acquired is tracked by the trace of the Fisher information of an encoder, the sum
  over its Linear/Conv weight tensors of the mean over entries of the squared gradients summed over the
  epoch's steps. With tr_e that trace of epoch e and the history padded with ten zeros,
  k = (mean of the last 10 traces - mean of the 10 before the last) / mean of the last 10, and k = 1 at
  epoch 0. The window is open while k > 0.05.
* Who is ahead: s_m = sum over the batch of the softmax probability of the true class under modality m's
  slice of the concat head (W_m h_m + b / M, as OGM-GE). The leading modality d gets
  beta_d = c_d * exp(tanh(s_d - s_other)) and its encoder's gradient gains beta_d (theta - theta_epoch start).
* The step's gradient is that of CE(fused) + sum_m CE(slice_m), as ``train_epoch`` backpropagates the fused
  and both uni-modal losses before stepping.

Flags and choices:

* ``beta_first = 0.95``, ``beta_other = 0.1``: the official coefficients are asymmetric, 0.95 when audio
  (CREMA-D's first modality) leads and 0.1 when video does; here ``beta_first`` applies when the dataset's
  first modality leads and ``beta_other`` otherwise.
* ``window_from = "first"``: the official window watches the audio (first) encoder's trace; ``"all"``
  watches the sum over every encoder.
* More than two modalities (not in the code): the leader is the highest s_m and its gap is to the next one.
* ``unimodal_losses = True`` is the official gradient; ``False`` backpropagates the fused CE only.
* Missing modalities (not in the paper): s_m sums over the samples where m is present, and a slice's CE
  averages over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import LogUniform, MethodConfig, SearchRanges
from bench.methods.umt import present_cross_entropy
from bench.nn import SlicedFusionNet, sliced_prediction
from bench.protocol import Batch, DataDescription, EpochContext, LossOut, Prediction, StepContext

__all__ = ["HISTORY", "InfoReg", "InfoRegNet", "WINDOW_THRESHOLD", "regulation", "window_k"]

#: The official trace history starts as ten zeros and k compares two 10-epoch means: 11 values are needed.
HISTORY = 11
#: The window is open while k exceeds this (``main.py``: ``k > 0.05``).
WINDOW_THRESHOLD = 0.05


# --------------------------------------------------------------------------------------------------
# The math (pinned by tests/test_parity_inforeg.py)


def window_k(history: torch.Tensor, epoch: int) -> float:
    """k = (mean(last 10) - mean(the 10 before the last)) / mean(last 10) over the 11 latest traces (zeros
    before any epoch); 1 at epoch 0 and 0 when the last ten traces are all zero after it."""
    if epoch == 0:
        return 1.0
    tr1 = float(history[-10:].sum()) / 10
    tr2 = float(history[-11:-1].sum()) / 10
    return (tr1 - tr2) / tr1 if tr1 != 0 else 0.0


def regulation(scores: torch.Tensor, beta_first: float, beta_other: float) -> tuple[int, float]:
    """(leading modality, beta): the modality with the highest score and c * exp(tanh(its lead over the next
    score)), c = ``beta_first`` when it is the first modality, else ``beta_other``."""
    order = torch.argsort(scores, descending=True)
    lead, second = int(order[0]), int(order[1])
    gap = float(scores[lead] - scores[second])
    c = beta_first if lead == 0 else beta_other
    return lead, c * float(torch.exp(torch.tanh(torch.tensor(gap, dtype=torch.float64))))


def _fisher_layers(encoder: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in encoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


# --------------------------------------------------------------------------------------------------
# Model and method


class InfoRegNet(SlicedFusionNet):
    """Late fusion plus InfoReg's state (buffers): each encoder parameter at the start of the epoch, the running
    squared gradients of every encoder's Linear/Conv weights, the trace history, and the window's k."""

    def __init__(self, description: DataDescription, fusion: str) -> None:
        super().__init__(description, fusion)
        for m, encoder in enumerate(self.encoders.values()):
            for i, p in enumerate(encoder.parameters()):
                self.register_buffer(f"start__{m}__{i}", p.detach().clone())
            for i, w in enumerate(_fisher_layers(encoder)):
                self.register_buffer(f"fisher__{m}__{i}", torch.zeros_like(w))
        self.register_buffer("trace_history", torch.zeros(len(self.encoders), HISTORY))
        self.register_buffer("k", torch.ones((), dtype=torch.float64))

    def start(self, m: int) -> list[torch.Tensor]:
        return [getattr(self, f"start__{m}__{i}") for i, _ in enumerate(list(self.encoders.values())[m].parameters())]

    def fisher(self, m: int) -> list[torch.Tensor]:
        encoder = list(self.encoders.values())[m]
        return [getattr(self, f"fisher__{m}__{i}") for i, _ in enumerate(_fisher_layers(encoder))]


@dataclass(frozen=True)
class InfoReg(MethodConfig):
    """InfoReg: late fusion whose leading modality's encoder is pulled back towards its epoch-start weights
    while the Fisher-trace window is open (module docstring: equations, sources, flags).

    Fields: ``beta_first = 0.95``, ``beta_other = 0.1``, ``window_from = "first"``, ``unimodal_losses =
    True`` (official ``main.py``), ``fusion = "concat"``. Inference: the fused head; the per-modality
    columns slice it.
    """

    beta_first: float = 0.95
    beta_other: float = 0.1
    window_from: Literal["first", "all"] = "first"
    unimodal_losses: bool = True
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta_first < 0 or self.beta_other < 0:
            raise ValueError(
                f"beta_first and beta_other must be >= 0, got beta_first={self.beta_first}, "
                f"beta_other={self.beta_other}"
            )

    def build(self, description: DataDescription) -> nn.Module:
        return InfoRegNet(description, self.fusion)

    def start_epoch(self, model: nn.Module, epoch: EpochContext) -> None:
        """Close the last epoch's traces into the history, compute k, snapshot the epoch-start weights."""
        if epoch.epoch > 0:
            for m in range(len(model.encoders)):
                trace = sum(float(f.mean()) for f in model.fisher(m))
                model.trace_history[m] = torch.cat(
                    [model.trace_history[m, 1:], torch.tensor([trace], device=model.trace_history.device)]
                )
        history = model.trace_history[0] if self.window_from == "first" else model.trace_history.sum(0)
        model.k.fill_(window_k(history, epoch.epoch))
        for m, encoder in enumerate(model.encoders.values()):
            for start, p in zip(model.start(m), encoder.parameters()):
                start.copy_(p.detach())
            for f in model.fisher(m):
                f.zero_()

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        sliced = model.head.sliced(features)
        loss = F.cross_entropy(logits, batch.label)
        scores = []
        for m, z in enumerate(sliced.values()):
            present = batch.mask[:, m]
            if self.unimodal_losses:
                loss = loss + present_cross_entropy(z, batch.label, present)
            with torch.no_grad():
                p_true = F.softmax(z.float(), 1).gather(1, batch.label[:, None]).squeeze(1)
                scores.append((p_true * present).sum())
        return LossOut(loss, {"scores": torch.stack(scores)})

    def after_backward(self, model: nn.Module, out: LossOut, ctx: StepContext) -> None:
        with torch.no_grad():
            if float(model.k) > WINDOW_THRESHOLD:
                lead, beta = regulation(out.extras["scores"].cpu(), self.beta_first, self.beta_other)
                encoder = list(model.encoders.values())[lead]
                for p, start in zip(encoder.parameters(), model.start(lead)):
                    if p.grad is not None:
                        p.grad.add_(beta * (p - start))
            for m, encoder in enumerate(model.encoders.values()):
                for f, w in zip(model.fisher(m), _fisher_layers(encoder)):
                    if w.grad is not None:
                        f.add_(w.grad * w.grad)

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return sliced_prediction(model, batch.inputs)

    #: lr, weight decay and the two regulation coefficients.
    search_ranges: ClassVar[SearchRanges] = {
        "beta_first": LogUniform(0.05, 2.0),
        "beta_other": LogUniform(0.05, 2.0),
    }
