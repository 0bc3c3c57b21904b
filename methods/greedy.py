"""Greedy: balanced multimodal learning by re-balancing steps (Wu, Jastrzebski, Cho and Geras, ICML 2022,
"Characterizing and overcoming the greedy nature of learning in multi-modal deep neural networks").

Two unimodal branches, each with its own classifier, exchange information through MMTM blocks (Joze et al., CVPR
2020) between their layers; the prediction is the mean of the two branches' logits and the loss the sum of their
cross-entropies. The paper measures how fast each branch learns from its own layers versus from the other
modality through the MMTM "bypass": the conditional learning speed of branch m is the accumulated relative
gradient size of its bypass parameters over that of its own parameters. When the two speeds drift apart by more than
``epsilon``, a *re-balancing* window of ``window`` steps starts in which the MMTM gates of the branch that leans on
the bypass are frozen at their running average, so that branch must learn from its own modality.

References: ``nyukat/greedy_multimodal_learning`` ``src/balanced_mmtm.py`` (``MMTM_mitigate.forward``),
``src/callbacks.py`` (``Bias_Mitigation_Strong``: ``compute_BDR``, ``on_backward_end``), ``src/model.py``
(``MMTM_MVCNN.forward``: mean of the branch logits), ``train.py`` (``blend_loss``: summed branch cross-entropies) and
``configs/training_guided.gin`` (epsilon 0.01, window 5, starting epoch 2); BalanceBenchmark
``balancemm/trainer/Greedy_trainer.py`` and ``balancemm/models/avclassify_model.py`` (``MMTM``; alpha 0.001,
window 5, from epoch 0). The paper's equations were not available here; the method follows the official code.

For each parameter tensor p, r(p) = ||grad p||^2 / ||p||^2; per step, branch m's bypass sum is r summed over the
MMTM parameters that feed it (the shared squeeze layer counts for both branches, each excitation layer for its
own), its main sum r summed over its encoder and classifier. M_bypass,m and M_main,m accumulate these sums over the
steps outside re-balancing windows, and d = log10(M_bypass,0 / M_main,0) - log10(M_bypass,1 / M_main,1)
(:func:`bdr_difference`). After backward, outside a window and from ``starting_epoch`` on: if |d| > epsilon a window
starts with caring modality 0 when d > 0, 1 when d < 0 (:func:`next_curation_state`).

Adaptation to this harness: MMTM blocks sit after each Linear-BatchNorm-ReLU block of the MLP encoders of vector
modalities (the official model puts one after ResNet-18 stages 2-4, BalanceBenchmark after all four), so the method
applies to two vector modalities only (the official and BalanceBenchmark code are two-modality). Flags where the
official code deviates from what it describes:

* ``average_gate = "own"``: each branch's frozen gate is the running average of its own gates, as BalanceBenchmark
  does; ``"released"`` reproduces the official ``running_avg_weight_skeleton``, which averages the *first*
  branch's gates and so freezes the second branch at the first branch's gate.
* The official running average also counts evaluation forwards; here only training forwards update it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, LogUniform, MethodConfig, SearchRanges, check_at_least, check_positive
from bench.nn import MLPEncoder, build_encoders
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["MMTM", "Greedy", "GreedyNet", "bdr_difference", "next_curation_state", "relative_grad_sums"]


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_greedy.py)


def bdr_difference(m_bypass: tuple[float, float], m_main: tuple[float, float]) -> float:
    """d = log10(M_bypass,0 / M_main,0) - log10(M_bypass,1 / M_main,1) (``compute_BDR``)."""
    return math.log10(m_bypass[0] / m_main[0]) - math.log10(m_bypass[1] / m_main[1])


def next_curation_state(
    curation: bool, caring: int, step: int, d: float | None, epsilon: float, window: int
) -> tuple[bool, int, int]:
    """(curation, caring modality, steps into the window) after one backward pass (``on_backward_end``).

    Outside a window, ``d`` is this step's difference: |d| > epsilon opens a window caring for modality 0 if d > 0,
    else 1. Inside one, ``d`` is ignored; the window closes when ``window`` steps have passed."""
    if not curation:
        assert d is not None
        if abs(d) > epsilon:
            return True, 0 if d > 0 else 1, 0
        return False, 0, 0
    step += 1
    return (step != window), caring, step


def relative_grad_sums(params: list[nn.Parameter]) -> float:
    """sum over tensors of ||grad||^2 / ||p||^2; a tensor without gradient or with zero norm adds nothing."""
    total = 0.0
    for p in params:
        if p.grad is None:
            continue
        wn = float((p.detach() ** 2).sum())
        if wn > 0:
            total += float((p.grad.detach() ** 2).sum()) / wn
    return total


# --------------------------------------------------------------------------------------------------
# Model


class MMTM(nn.Module):
    """Multimodal transfer module for two feature vectors: squeeze = [x_0; x_1], e = relu(W_s squeeze + b_s),
    gate_m = sigmoid(W_m e + b_m), x_m -> x_m * gate_m (Joze et al. 2020; ``MMTM_mitigate``, ratio 4:
    len(e) = 2 (d_0 + d_1) / 4). Running averages of each gate's batch mean are kept as buffers."""

    def __init__(self, dims: tuple[int, int], ratio: int = 4) -> None:
        super().__init__()
        hidden = int(2 * sum(dims) / ratio)
        self.squeeze = nn.Linear(sum(dims), hidden)
        self.excite = nn.ModuleList([nn.Linear(hidden, d) for d in dims])
        for m, d in enumerate(dims):
            self.register_buffer(f"avg_gate_{m}", torch.zeros(d))
        self.register_buffer("avg_steps", torch.zeros((), dtype=torch.long))

    def gates(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = torch.relu(self.squeeze(torch.cat([x0, x1], dim=1)))
        return torch.sigmoid(self.excite[0](e)), torch.sigmoid(self.excite[1](e))

    def forward(
        self, x0: torch.Tensor, x1: torch.Tensor, caring: int | None, average_gate: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = list(self.gates(x0, x1))
        if self.training:
            n = int(self.avg_steps)
            means = [g[0].detach().mean(0), (g[0] if average_gate == "released" else g[1]).detach().mean(0)]
            for m in (0, 1):
                avg = getattr(self, f"avg_gate_{m}")
                avg.copy_((means[m] + avg * n) / (n + 1))
            self.avg_steps += 1
        if caring is not None:
            g[caring] = getattr(self, f"avg_gate_{caring}").expand_as(g[caring])
        return x0 * g[0], x1 * g[1]


class GreedyNet(nn.Module):
    """Two MLP branches (encoder blocks interleaved with MMTM blocks) and one classifier per branch.
    ``forward`` gives the branch logits; ``curation`` / ``caring`` select the re-balancing forward."""

    def __init__(self, description: DataDescription) -> None:
        super().__init__()
        self.encoders = build_encoders(description)
        for name, encoder in self.encoders.items():
            if not isinstance(encoder, MLPEncoder):
                raise ValueError(
                    f"greedy needs the MLP encoder of vector modalities, modality {name!r} has {type(encoder).__name__}"
                )
        self.heads = nn.ModuleDict(
            {name: nn.Linear(enc.out_dim, description.num_classes) for name, enc in self.encoders.items()}
        )
        first, second = (self._blocks(enc) for enc in self.encoders.values())
        # one MMTM after every block, sized by the blocks' widths (each block ends Linear-BatchNorm-ReLU)
        self.mmtm = nn.ModuleList([MMTM((a[-2].num_features, b[-2].num_features)) for a, b in zip(first, second)])
        self.curation = False
        self.caring = 0
        self.average_gate = "own"

    @staticmethod
    def _blocks(encoder: MLPEncoder) -> list[nn.Sequential]:
        """The encoder's Linear-BatchNorm-ReLU blocks (the leading Flatten goes with the first)."""
        layers = list(encoder.net)
        return [nn.Sequential(*layers[0:4]), nn.Sequential(*layers[4:7])]

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = list(self.encoders)
        x = [inputs[names[0]], inputs[names[1]]]
        blocks = [self._blocks(self.encoders[n]) for n in names]
        caring = self.caring if self.curation else None
        for k, mmtm in enumerate(self.mmtm):
            x = [blocks[0][k](x[0]), blocks[1][k](x[1])]
            x = list(mmtm(x[0], x[1], caring, self.average_gate))
        return {name: self.heads[name](h) for name, h in zip(names, x)}


# --------------------------------------------------------------------------------------------------
# Method


@dataclass(frozen=True)
class Greedy(MethodConfig):
    """Greedy (Wu et al., ICML 2022): MMTM-connected branches, summed branch cross-entropies, re-balancing windows.

    Fields:

    * ``epsilon = 0.01``: threshold on |d| (``Bias_Mitigation_Strong.epsilon``; BalanceBenchmark's ``alpha`` 0.001).
    * ``window = 5``: steps per re-balancing window (``curation_windowsize``; BalanceBenchmark ``window_size`` 5).
    * ``starting_epoch = 2``: first epoch that may open a window (``starting_epoch``; BalanceBenchmark 0). Before it the
      speeds still accumulate.
    * ``average_gate = "own"``: see the module docstring.

    Inference: mean of the branch logits; per-modality columns: each branch's logits. Two vector modalities only
    (``applicable``). Missing modalities are not handled: a zero-filled input goes through its branch.
    """

    epsilon: float = 0.01
    window: int = 5
    starting_epoch: int = 2
    average_gate: Literal["own", "released"] = "own"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "epsilon")
        if self.window < 1:
            raise ValueError(f"window must be >= 1 step, got window={self.window}")
        check_at_least(self, 0, "starting_epoch")

    def applicable(self, description: DataDescription) -> str | None:
        if len(description.modalities) != 2:
            return (
                f"greedy compares two branches (the official code has two); this data has "
                f"{len(description.modalities)} modalities"
            )
        kinds = sorted({m.kind for m in description.modalities if m.kind != "vector"})
        if kinds:
            return (
                f"greedy's MMTM blocks sit between MLP encoder blocks, for vector modalities only "
                f"(not {', '.join(kinds)})"
            )
        return None

    def build(self, description: DataDescription) -> nn.Module:
        model = GreedyNet(description)
        model.average_gate = self.average_gate
        model.register_buffer("m_bypass", torch.zeros(2, dtype=torch.float64))
        model.register_buffer("m_main", torch.zeros(2, dtype=torch.float64))
        model.curation_step = 0
        return model

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits = model(batch.inputs)
        return LossOut(sum(F.cross_entropy(z, batch.label) for z in logits.values()))

    def _accumulate(self, model: GreedyNet) -> float:
        shared = [p for mmtm in model.mmtm for p in mmtm.squeeze.parameters()]  # feeds both branches
        for m, name in enumerate(model.encoders):
            bypass = shared + [p for mmtm in model.mmtm for p in mmtm.excite[m].parameters()]
            main = list(model.encoders[name].parameters()) + list(model.heads[name].parameters())
            model.m_bypass[m] += relative_grad_sums(bypass)
            model.m_main[m] += relative_grad_sums(main)
        return bdr_difference(tuple(model.m_bypass.tolist()), tuple(model.m_main.tolist()))

    @torch.no_grad()
    def after_backward(self, model: nn.Module, out: LossOut, ctx: StepContext) -> None:
        if ctx.epoch < self.starting_epoch:
            self._accumulate(model)
            model.curation, model.caring = False, 0
            return
        d = None if model.curation else self._accumulate(model)
        model.curation, model.caring, model.curation_step = next_curation_state(
            model.curation, model.caring, model.curation_step, d, self.epsilon, self.window
        )

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        curation, model.curation = model.curation, False  # evaluation never freezes gates
        logits = model(batch.inputs)
        model.curation = curation
        return Prediction(torch.stack(list(logits.values())).mean(0), logits)

    #: epsilon log-uniform in [1e-3, 1e-1] (BalanceBenchmark's and the official value inside), the window and
    #: the first epoch.
    search_ranges: ClassVar[SearchRanges] = {
        "epsilon": LogUniform(1e-3, 1e-1),
        "window": Choice(1, 5, 10, 20),
        "starting_epoch": Choice(0, 2),
    }
