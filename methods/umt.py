"""UMT: Uni-Modal Teacher (Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao, "On Uni-Modal Feature Learning in
Supervised Multi-Modal Learning", ICML 2023, arXiv 2305.01233; first as "Improving Multi-Modal Learning with
Uni-Modal Teachers", arXiv 2106.11059).

A late-fusion model whose encoders, besides the fused cross-entropy, are pulled towards the features of
uni-modal teachers trained first: L = CE(z, y) + lambda * sum_m MSE(h_m(x_m), h^T_m(x_m)), with h_m the
multi-modal model's encoder of modality m and h^T_m the encoder of a classifier trained on modality m alone,
frozen. The paper distils the uni-modal features into the corresponding parts of the late-fusion model
so that its encoders learn the uni-modal features that joint training leaves unlearned (modality laziness).

How the teachers are trained here: one per modality, inside the cell, through the loop's ``pretrain`` hook
(bench/protocol.py). Each is a cell of its own on this cell's data and budget (same seed, epochs, batch
size, optimiser and learning-rate schedule as UMT's own fields), its epoch selected on its own validation
accuracy; its selected encoder is the teacher. So UMT costs (M + 1) trainings of the cell's budget, and
the record notes each teacher's selected epoch (``notes["pretrained"]``).

Sources and choices:

* The loss: CE plus ``distill_weight`` times the mean squared error between the student's and the teacher's
  encoder outputs, summed over modalities, as BalanceBenchmark's trainer computes it
  (``GeWu-Lab/BalanceBenchmark`` ``balancemm/trainer/UMT_trainer.py``: ``CrossEntropyLoss`` plus
  ``scaling * MSELoss`` per modality, teachers under ``torch.no_grad``) with its default scaling 10
  (``configs/trainer_config.yaml``, ``UMT.scaling``).
* BalanceBenchmark loads teachers from separate earlier runs of its uni-modal trainer; here they are trained
  in the same cell so the comparison stays one cell per (method, dataset, seed, rate). Its
  ``modulation_starts``/``modulation_ends`` window (0..80, i.e. every epoch) is not a field: the term is
  always on.
* Missing modalities (not in the paper): the distillation term of modality m averages over the samples
  where m is present, and each teacher trains on the samples where its modality is present; zero-filled
  inputs teach nothing.
* The teachers stay in eval mode (their BatchNorm statistics frozen) while UMT trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import LogUniform, MethodConfig, SearchRanges, check_at_least
from bench.nn import PerModalityClassifiers, SlicedFusionNet, sliced_prediction
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["UMT", "UMTNet", "UnimodalTeacher", "distillation_loss", "present_cross_entropy"]


# --------------------------------------------------------------------------------------------------
# The math (pinned by tests/test_parity_umt.py)


def distillation_loss(
    student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """sum_m mean over present samples and feature entries of (h_m - h^T_m)^2; ``mask`` (B, M) in the order of
    ``student``. A modality absent from the whole batch adds 0 (with a gradient path, so every encoder is
    touched)."""
    total = torch.zeros((), device=mask.device)
    for m, (name, h) in enumerate(student.items()):
        present = mask[:, m]
        diff = (h - teacher[name].detach()).pow(2)
        if bool(present.any()):
            total = total + diff[present].mean()
        else:
            total = total + 0.0 * diff.sum()
    return total


def present_cross_entropy(logits: torch.Tensor, label: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the samples where the modality is present (0, with a gradient path, when none is)."""
    if bool(present.any()):
        return F.cross_entropy(logits[present], label[present])
    return 0.0 * logits.sum()


# --------------------------------------------------------------------------------------------------
# The teacher: one modality's classifier, trained alone (a stage of UMT's ``pretrain``)


def _only(description: DataDescription, modality: str) -> DataDescription:
    specs = tuple(s for s in description.modalities if s.name == modality)
    if not specs:
        raise ValueError(f"modality {modality!r} is not one of {description.modality_names}")
    return dataclasses.replace(description, modalities=specs)


@dataclass(frozen=True)
class UnimodalTeacher(MethodConfig):
    """Modality ``modality``'s encoder and a Linear head trained alone with cross-entropy. Not registered: UMT
    trains one per modality through ``pretrain``."""

    modality: str = ""

    def build(self, description: DataDescription) -> nn.Module:
        return PerModalityClassifiers(_only(description, self.modality))

    def _column(self, batch: Batch, names: tuple[str, ...]) -> torch.Tensor:
        return batch.mask[:, names.index(self.modality)]

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits = model(batch.inputs)[self.modality]
        return LossOut(present_cross_entropy(logits, batch.label, self._column(batch, tuple(batch.inputs))))

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits = model(batch.inputs)[self.modality]
        return Prediction(logits, {self.modality: logits})


# --------------------------------------------------------------------------------------------------
# UMT


class UMTNet(SlicedFusionNet):
    """Late fusion (encoders and a concat or sum head) plus, once adopted, the frozen teacher encoders."""

    def __init__(self, description: DataDescription, fusion: str) -> None:
        super().__init__(description, fusion)
        self.teachers = nn.ModuleDict()

    def adopt(self, teachers: Mapping[str, nn.Module]) -> None:
        for name, encoder in teachers.items():
            encoder.requires_grad_(False)
            self.teachers[name] = encoder.eval()

    def train(self, mode: bool = True) -> UMTNet:
        super().train(mode)
        self.teachers.eval()  # the teachers' BatchNorm statistics stay those of their selected epoch
        return self

    def teacher_features(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if set(self.teachers) != set(self.encoders):
            raise RuntimeError("UMT has no teachers yet: the loop adopts them from its pretrain stages")
        with torch.no_grad():
            return {name: self.teachers[name](inputs[name]) for name in self.encoders}


@dataclass(frozen=True)
class UMT(MethodConfig):
    """UMT: late fusion plus feature distillation from uni-modal teachers trained first in the same cell.

    L = CE(z, y) + ``distill_weight`` * sum_m MSE(h_m, h^T_m) (module docstring: sources and choices).
    Inference: the fused head; the per-modality columns slice it (as late fusion's).

    Fields: ``distill_weight = 10`` (BalanceBenchmark ``configs/trainer_config.yaml`` ``UMT.scaling``),
    ``fusion = "concat"`` (the late-fusion head of the official audio-visual code).
    """

    distill_weight: float = 10.0
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "distill_weight")

    def teacher(self, modality: str) -> UnimodalTeacher:
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(MethodConfig)}
        return UnimodalTeacher(modality=modality, **shared)

    def pretrain(self, description: DataDescription) -> dict[str, MethodConfig]:
        """One uni-modal teacher per modality, trained by the loop before UMT's model is built."""
        return {f"teacher_{name}": self.teacher(name) for name in description.modality_names}

    def build(self, description: DataDescription) -> nn.Module:
        return UMTNet(description, self.fusion)

    def adopt_pretrained(self, model: nn.Module, models: Mapping[str, nn.Module]) -> None:
        model.adopt({name: models[f"teacher_{name}"].encoders[name] for name in model.encoders})

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        teacher = model.teacher_features(batch.inputs)
        ce = F.cross_entropy(logits, batch.label)
        distill = distillation_loss(features, teacher, batch.mask)
        return LossOut(ce + self.distill_weight * distill, {"ce": ce.detach(), "distill": distill.detach()})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return sliced_prediction(model, batch.inputs)

    #: lr, weight decay and the distillation weight (log-uniform around BalanceBenchmark's 10).
    search_ranges: ClassVar[SearchRanges] = {"distill_weight": LogUniform(0.1, 100.0)}
