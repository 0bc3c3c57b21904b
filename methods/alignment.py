"""Representation-alignment objectives: one shared embedding space for M modalities, scored by retrieval.

Every objective here is a method whose ``task`` is ``"retrieval"``: it embeds each modality with the
modality's default encoder (:func:`bench.nn.encoders.build_encoders`) and a linear projection to ``embed_dim``,
L2-normalises, and ``predict`` returns the embeddings; the loop scores Recall@K, median rank, the modality
gap, alignment and uniformity (:mod:`bench.retrieval`) and selects the epoch on validation mean Recall@1.

Objectives (z^m_i is the normalised embedding of sample i in modality m, a batch has N rows):

* ``align_clip`` / ``align_pairwise``: CLIP's symmetric InfoNCE with a learnable temperature (Radford et al.,
  ICML 2021, Fig. 3; ``openai/CLIP`` ``clip/model.py``, ``mlfoundations/open_clip`` ``src/open_clip/loss.py``
  ``ClipLoss``): L(a, b) = 1/2 [CE(s Z^a Z^b^T, diag) + CE(s Z^b Z^a^T, diag)], s = exp(logit_scale),
  logit_scale initialised to ln(1/0.07) and clamped to [0, ln 100] after every step (``open_clip``
  ``src/training/train.py``). ``align_pairwise`` averages L over all M(M-1)/2 pairs, one learnable scale per
  pair; ``align_clip`` is the same objective on the first two modalities only, i.e. exactly CLIP's loss.
* ``align_anchor``: ImageBind-style (Girdhar et al., CVPR 2023, Sec. 3): L = sum_{m != a} L(a, m) against one
  anchor modality a; non-anchor pairs are never trained directly ("emergent" alignment). One learnable scale
  per pair, initialised at 1/0.07 and capped at 100 as ``facebookresearch/ImageBind``
  ``imagebind/models/helpers.py`` ``LearnableLogitScaling``.
* ``align_uniform``: Wang and Isola (ICML 2020), Eq. 4-5: L = w_A mean_{pairs} L_align(alpha) +
  w_U mean_m L_uniform(t), uniformity computed separately per modality and averaged as in
  ``ssnl/align_uniform`` ``examples/stl10/main.py`` (defaults alpha = 2, t = 2, w_A = w_U = 1).
* ``align_unialign_r``: a **reconstruction** in the spirit of "Towards Uniformity and Alignment for Multimodal
  Representation Learning" (UniAlign, arXiv 2602.09507). That paper's loss equations, anchor choice,
  uniformity kernel, weights and code are not public; all that is stated is a decoupling of intra-modality
  uniformity from anchor-based cross-modal alignment, with a KDE surrogate of a Hölder divergence. Built from
  sourced parts, every choice exposed as a hyperparameter (see :class:`UniAlignR`). It is not UniAlign.

``*_2m`` variants (and ``align_clip``) use the first two modalities only, so that on three-modality datasets
the same objective runs with 2 and with 3 modalities and the shared pair can be compared.

Temperatures and weight decay: the learnable logit scales take no weight decay (the ``no_weight_decay`` hook),
as in ``mlfoundations/open_clip`` ``src/open_clip_train/main.py`` (``src/training/main.py`` before the move),
whose AdamW puts every parameter named ``logit_scale`` (with gains and biases) in a group with weight decay 0.
ImageBind releases no training code; ``align_anchor`` follows open_clip. Only the temperatures are exempted
here: encoders and projections keep the shared weight decay, biases included (open_clip also exempts all
parameters with fewer than two dimensions). ``logit_scale_decay=True`` (``align_clip``, ``align_pairwise``,
``align_anchor``) decays the temperatures too, which is what records made before the field existed did, and
what a stored spec without the field re-runs as (``legacy_hparams``). ``align_unialign_r``'s optional InfoNCE
temperatures are always exempt (no committed record used them).

Missing modalities: a modality's missing rows never enter its encoder; a pair term uses only the rows where
both sides are present, a uniformity term the rows where its modality is present. Evaluation embeds the
complete validation and test splits (``zero_fill_missing = False``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UsageError
from bench.hparams import LogUniform, MethodConfig, SearchRanges, check_at_least, check_positive
from bench.nn import build_encoders
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext
from bench.registry import variant
from bench.retrieval import alignment, squared_distances, uniformity

__all__ = [
    "ALIGN_CLIP",
    "ALIGN_UNIALIGN_R_2M",
    "AlignAnchor",
    "AlignPairwise",
    "AlignUniform",
    "EmbeddingModel",
    "UniAlignR",
    "anchor_clip_loss",
    "clip_loss",
    "holder_divergence",
    "pairwise_clip_loss",
    "select_modalities",
    "tuple_centroid_alignment",
]

#: CLIP's initial temperature 0.07 (``openai/CLIP`` ``clip/model.py``) and its clamp at ln 100.
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100)


# --------------------------------------------------------------------------------------------------
# The objectives as pure functions of normalised embeddings (pinned by tests/test_alignment.py)


def clip_loss(za: torch.Tensor, zb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE, row i of ``za`` and ``zb`` being a positive pair, the other rows negatives."""
    logits = logit_scale.exp() * za @ zb.T
    target = torch.arange(za.shape[0], device=za.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def pairwise_clip_loss(z: Mapping[str, torch.Tensor], scales: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean of :func:`clip_loss` over all unordered pairs of modalities; ``scales["a|b"]`` per pair."""
    pairs = list(combinations(z, 2))
    return sum(clip_loss(z[a], z[b], scales[f"{a}|{b}"]) for a, b in pairs) / len(pairs)


def anchor_clip_loss(z: Mapping[str, torch.Tensor], anchor: str, scales: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum of :func:`clip_loss` between the anchor and every other modality (ImageBind)."""
    return sum(clip_loss(z[anchor], z[m], scales[_pair_key(anchor, m, z)]) for m in z if m != anchor)


def tuple_centroid_alignment(z: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean_i (1/M) sum_m ||z_i^m - c_i||^2 with c_i = (1/M) sum_m z_i^m, over rows present in all M."""
    stacked = torch.stack(list(z))  # (M, N, d)
    return (stacked - stacked.mean(0, keepdim=True)).pow(2).sum(2).mean()


def _log_mean_product(kernels: Sequence[torch.Tensor]) -> torch.Tensor:
    """log of the mean over index tuples of the product of Gaussian kernels along a chain (M = 2: one
    matrix; M = 3: K12, K23, K13), from log-kernels, shifted by their maxima so nothing underflows."""
    shifts = [k.max() for k in kernels]
    scaled = [torch.exp(k - s) for k, s in zip(kernels, shifts)]
    if len(kernels) == 1:
        total, count = scaled[0].sum(), scaled[0].numel()
    else:
        k12, k23, k13 = scaled
        total = (k13 * (k12 @ k23)).sum()
        count = k12.shape[0] * k12.shape[1] * k23.shape[1]
    return sum(shifts) + torch.log(total) - math.log(count)


def holder_divergence(z: Sequence[torch.Tensor], sigma: float) -> torch.Tensor:
    """KDE estimate of the M-way Hölder divergence D_H = -log int prod_m p_m + (1/M) sum_m log int p_m^M
    between the modalities' embedding distributions (M = 2 or 3), >= 0 by Hölder's inequality.

    With Gaussian KDEs of bandwidth sigma, int prod_m N(x; u_m, sigma^2 I) dx is proportional to
    exp(-sum_{m<n} ||u_m - u_n||^2 / (2 M sigma^2)), the constant cancelling in the ratio, so both integrals
    are means over index tuples of products of kernels K^{mn}_ij = exp(-||z_i^m - z_j^n||^2 / (2 M sigma^2)),
    diagonal included. For M = 2 this is half the Cauchy-Schwarz divergence of ``ywzcode/CS-adv``
    ``CSutils.py`` at bandwidth sqrt(2) sigma. Each modality may have its own rows (no pairing needed)."""
    m = len(z)
    if m not in (2, 3):
        raise ValueError(f"the KDE Hölder divergence is implemented for 2 or 3 modalities, got {m}")

    def log_k(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -squared_distances(x, y) / (2 * m * sigma**2)

    if m == 2:
        cross = _log_mean_product([log_k(z[0], z[1])])
        selfs = [_log_mean_product([log_k(x, x)]) for x in z]
    else:
        cross = _log_mean_product([log_k(z[0], z[1]), log_k(z[1], z[2]), log_k(z[0], z[2])])
        selfs = [_log_mean_product([log_k(x, x)] * 3) for x in z]
    return -cross + sum(selfs) / m


# --------------------------------------------------------------------------------------------------
# Model and batch handling


def select_modalities(choice: str, available: Sequence[str]) -> tuple[str, ...]:
    """``"all"``, a count k (the first k modalities) or comma-separated names (kept in dataset order)."""
    if choice == "all":
        chosen = tuple(available)
    elif choice.isdigit():
        k = int(choice)
        if k > len(available):
            raise UsageError(
                f"modalities={choice} asks for {k} modalities but the dataset has {len(available)} "
                f"({', '.join(available)}); use a count up to {len(available)} or 'all'"
            )
        chosen = tuple(available[:k])
    else:
        names = [n.strip() for n in choice.split(",") if n.strip()]
        unknown = [n for n in names if n not in available]
        if unknown:
            raise UsageError(
                f"modalities={choice!r} names {unknown}, not modalities of this dataset "
                f"({', '.join(available)}); use their names, a count or 'all'"
            )
        chosen = tuple(n for n in available if n in names)
    if len(chosen) < 2:
        raise UsageError(f"modalities={choice!r} selects {len(chosen)} modality; alignment needs at least 2")
    return chosen


def _check_modalities_syntax(choice: str) -> None:
    if choice == "all" or (choice.isdigit() and int(choice) >= 2):
        return
    if choice.isdigit() or len([n for n in choice.split(",") if n.strip()]) < 2:
        raise ValueError(
            f"modalities must be 'all', a count >= 2 or at least two comma-separated names, got {choice!r}"
        )


def _pair_key(a: str, b: str, order: Sequence[str]) -> str:
    """Pairs are keyed in the order the modalities are used: "first|second"."""
    names = list(order)
    return f"{a}|{b}" if names.index(a) < names.index(b) else f"{b}|{a}"


class EmbeddingModel(nn.Module):
    """Per used modality: its default encoder, then a linear projection to ``embed_dim``; outputs are
    L2-normalised. ``logit_scales`` holds the learnable temperatures of InfoNCE objectives, one per pair."""

    def __init__(self, description: DataDescription, names: Sequence[str], embed_dim: int) -> None:
        super().__init__()
        self.names = tuple(names)
        used = tuple(m for m in description.modalities if m.name in self.names)
        self.encoders = build_encoders(DataDescription(used, description.num_classes, description.num_train))
        self.projections = nn.ModuleDict({n: nn.Linear(e.out_dim, embed_dim) for n, e in self.encoders.items()})
        self.logit_scales = nn.ParameterDict()

    def add_logit_scales(self, keys: Sequence[str]) -> None:
        for key in keys:
            if key not in self.logit_scales:
                self.logit_scales[key] = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def embed(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projections[name](self.encoders[name](x)), dim=1)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self.embed(name, inputs[name]) for name in self.names}


@dataclass
class _View:
    """A modality's embeddings on a batch: (B, d) rows (zeros where absent) and which rows are present."""

    z: torch.Tensor
    present: torch.Tensor


def _present_views(model: EmbeddingModel, batch: Batch) -> dict[str, _View]:
    """Embed only the present rows of each used modality. A modality with fewer than two present rows is
    left out of this batch (BatchNorm cannot normalise one row, and one row has no negative)."""
    columns = {name: i for i, name in enumerate(batch.inputs)}
    views = {}
    for name in model.names:
        present = batch.mask[:, columns[name]]
        rows = present.nonzero().squeeze(1)
        if rows.numel() < 2:
            continue
        x = batch.inputs[name]
        if rows.numel() == len(batch):
            z = model.embed(name, x)
        else:
            embedded = model.embed(name, x[rows])
            z = embedded.new_zeros(len(batch), embedded.shape[1]).index_copy(0, rows, embedded)
        views[name] = _View(z, present)
    return views


def _paired(views: Mapping[str, _View], names: Sequence[str]) -> dict[str, torch.Tensor] | None:
    """Rows of ``names`` where all of them are present (None when fewer than two such rows)."""
    if not all(n in views for n in names):
        return None
    both = torch.stack([views[n].present for n in names]).all(0)
    if int(both.sum()) < 2:
        return None
    return {n: views[n].z[both] for n in names}


def _present_rows(view: _View) -> torch.Tensor:
    return view.z[view.present]


def _mean(terms: list[torch.Tensor]) -> torch.Tensor | None:
    return sum(terms) / len(terms) if terms else None


# --------------------------------------------------------------------------------------------------
# Methods


@dataclass(frozen=True)
class _AlignmentObjective(MethodConfig):
    """Shared fields and hooks of the alignment objectives (not registered itself).

    Optimisation defaults are the retrieval track's own (no paper fixes them for these encoders): AdamW,
    lr 1e-3, weight decay 1e-4 (CLIP trained with AdamW), the same for every objective so that only the
    objective differs; the shared StepLR fields are inherited."""

    modalities: str = "all"
    embed_dim: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"

    task: ClassVar[str] = "retrieval"
    #: Evaluation embeds complete inputs; training keeps missing rows out of the losses itself.
    zero_fill_missing: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_modalities_syntax(self.modalities)
        check_at_least(self, 1, "embed_dim")

    # -- hooks ------------------------------------------------------------------------------------
    def applicable(self, description: DataDescription) -> str | None:
        """None when the dataset has the modalities these hyperparameters ask for, else why not (the grid
        then skips the cells with a note, e.g. ``modalities=3`` on a two-modality dataset)."""
        try:
            self.check_modalities(select_modalities(self.modalities, description.modality_names))
        except UsageError as exc:
            return str(exc)
        return None

    def build(self, description: DataDescription) -> nn.Module:
        names = select_modalities(self.modalities, description.modality_names)
        self.check_modalities(names)
        model = EmbeddingModel(description, names, self.embed_dim)
        model.add_logit_scales(self.logit_scale_pairs(model.names))
        return model

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        # open_clip clamps after each optimizer step; the loop has no after-step hook, and clamping before the
        # next forward gives every forward pass the same values.
        with torch.no_grad():
            for scale in model.logit_scales.values():
                scale.clamp_(0, LOGIT_SCALE_MAX)
        terms = self.terms(model, _present_views(model, batch))
        used = {name: value for name, value in terms.items() if value is not None}
        if not used:  # no modality pair survived the masks in this batch: a zero step
            return LossOut(sum(p.sum() for p in model.parameters()) * 0.0, {"terms": {}})
        total = sum(used.values())
        return LossOut(total, {"terms": {name: float(value.detach()) for name, value in used.items()}})

    def no_weight_decay(self, model: nn.Module) -> list[str]:
        """The learnable temperatures (``logit_scales.<pair>``) take no weight decay (open_clip), unless
        ``logit_scale_decay`` is set."""
        if getattr(self, "logit_scale_decay", False):
            return []
        return [f"logit_scales.{key}" for key in model.logit_scales]

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return Prediction(None, embeddings=model(batch.inputs))

    # -- what each objective defines ----------------------------------------------------------------
    def logit_scale_pairs(self, names: Sequence[str]) -> list[str]:
        return []

    def check_modalities(self, names: Sequence[str]) -> None:
        """Raise UsageError when the hyperparameters do not fit the used modalities (e.g. an unknown anchor)."""

    def terms(self, model: EmbeddingModel, views: Mapping[str, _View]) -> dict[str, torch.Tensor | None]:
        raise NotImplementedError


def _all_pairs(names: Sequence[str]) -> list[str]:
    return [f"{a}|{b}" for a, b in combinations(names, 2)]


def _anchor_of(choice: str, names: Sequence[str]) -> str:
    if not choice:
        return names[0]
    if choice not in names:
        raise UsageError(
            f"anchor={choice!r} is not one of the used modalities ({', '.join(names)}); name one or "
            f"leave it empty for the first"
        )
    return choice


def _anchor_pairs(anchor: str, names: Sequence[str]) -> list[str]:
    return [_pair_key(anchor, m, names) for m in names if m != anchor]


def _pairwise_infonce(model: EmbeddingModel, views: Mapping[str, _View]) -> torch.Tensor | None:
    terms = []
    for a, b in combinations(model.names, 2):
        pair = _paired(views, (a, b))
        if pair is not None:
            terms.append(clip_loss(pair[a], pair[b], model.logit_scales[f"{a}|{b}"]))
    return _mean(terms)


def _anchor_infonce(model: EmbeddingModel, views: Mapping[str, _View], anchor: str) -> torch.Tensor | None:
    terms = []
    for m in model.names:
        pair = _paired(views, (anchor, m)) if m != anchor else None
        if pair is not None:
            terms.append(clip_loss(pair[anchor], pair[m], model.logit_scales[_pair_key(anchor, m, model.names)]))
    return sum(terms) if terms else None


@dataclass(frozen=True)
class AlignPairwise(_AlignmentObjective):
    """Pairwise multi-modal InfoNCE: CLIP's symmetric loss averaged over all modality pairs.

    One learnable temperature per pair (Radford et al. 2021, Fig. 3; open_clip ``ClipLoss``); the loss of a
    batch is (2 / (M (M - 1))) sum_{m<n} L_CLIP(Z^m, Z^n). ``logit_scale_decay = False``: the temperatures take
    no weight decay (open_clip); True decays them with the rest (records made before the field existed)."""

    logit_scale_decay: bool = False

    #: A stored spec without ``logit_scale_decay`` was made when the temperatures were decayed.
    legacy_hparams: ClassVar[Mapping[str, Any]] = {"logit_scale_decay": True}

    def logit_scale_pairs(self, names: Sequence[str]) -> list[str]:
        return _all_pairs(names)

    def terms(self, model: EmbeddingModel, views: Mapping[str, _View]) -> dict[str, torch.Tensor | None]:
        return {"infonce": _pairwise_infonce(model, views)}


ALIGN_CLIP = variant(AlignPairwise, modalities="2")
ALIGN_CLIP.__doc__ = (
    "CLIP's symmetric InfoNCE with a learnable temperature on the first two modalities "
    "(Radford et al. 2021, Fig. 3; open_clip ClipLoss, clamp at ln 100)."
)


@dataclass(frozen=True)
class AlignAnchor(_AlignmentObjective):
    """Anchor InfoNCE (ImageBind, Girdhar et al. CVPR 2023): CLIP losses between one anchor and each other modality.

    L = sum_{m != a} L_CLIP(Z^a, Z^m), anchor a = ``anchor`` (default the first used modality), one learnable
    temperature per pair; pairs without the anchor are never trained directly. ``logit_scale_decay`` as in
    :class:`AlignPairwise`."""

    anchor: str = ""
    logit_scale_decay: bool = False

    legacy_hparams: ClassVar[Mapping[str, Any]] = {"logit_scale_decay": True}

    def logit_scale_pairs(self, names: Sequence[str]) -> list[str]:
        return _anchor_pairs(_anchor_of(self.anchor, names), names)

    def check_modalities(self, names: Sequence[str]) -> None:
        _anchor_of(self.anchor, names)

    def terms(self, model: EmbeddingModel, views: Mapping[str, _View]) -> dict[str, torch.Tensor | None]:
        return {"infonce": _anchor_infonce(model, views, _anchor_of(self.anchor, model.names))}


def _uniformity_terms(views: Mapping[str, _View], t: float) -> list[torch.Tensor]:
    return [uniformity(_present_rows(v), t) for v in views.values()]


def _pairwise_alignment(model: EmbeddingModel, views: Mapping[str, _View], alpha: float) -> torch.Tensor | None:
    terms = []
    for a, b in combinations(model.names, 2):
        pair = _paired(views, (a, b))
        if pair is not None:
            terms.append(alignment(pair[a], pair[b], alpha))
    return _mean(terms)


@dataclass(frozen=True)
class AlignUniform(_AlignmentObjective):
    """Wang and Isola's alignment and uniformity losses (ICML 2020, Eq. 4-5), uniformity per modality.

    L = align_weight * mean over pairs of L_align(alpha) + unif_weight * mean over modalities of L_uniform(t)
    (``ssnl/align_uniform`` ``align_uniform/__init__.py`` and ``examples/stl10/main.py``)."""

    align_weight: float = 1.0
    unif_weight: float = 1.0
    alpha: float = 2.0
    t: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_loss_weights(self)

    def terms(self, model: EmbeddingModel, views: Mapping[str, _View]) -> dict[str, torch.Tensor | None]:
        align = _pairwise_alignment(model, views, self.alpha)
        unif = _mean(_uniformity_terms(views, self.t))
        return {"align": _scaled(self.align_weight, align), "uniform": _scaled(self.unif_weight, unif)}

    search_ranges: ClassVar[SearchRanges] = {"unif_weight": LogUniform(0.1, 10.0)}


def _check_loss_weights(config: Any) -> None:
    check_at_least(config, 0, "align_weight", "unif_weight")
    check_positive(config, "alpha", "t")


def _scaled(weight: float, value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None or weight == 0 else weight * value


@dataclass(frozen=True)
class UniAlignR(_AlignmentObjective):
    """UniAlign-R: anchor alignment + per-modality uniformity, a reconstruction of arXiv 2602.09507 (not its formulas).

    The paper's equations are unpublished; what it states is a decoupling of intra-modality uniformity from
    anchor-based cross-modal alignment. Every choice below is a hyperparameter.

    L = align_weight * L_align + unif_weight * L_unif [+ holder_weight * D_H] [+ infonce_weight * InfoNCE]

    * ``align="anchor"`` (default): (1/(M-1)) sum_{m != a} mean_i ||z_i^m - z_i^a||^alpha, anchor a =
      ``anchor`` (default the first used modality); ``"all_pairs"``: mean over all pairs (Wang and Isola's
      L_align); ``"tuple_centroid"``: mean_i (1/M) sum_m ||z_i^m - c_i||^2 around the tuple's centroid c_i
      (rows where every used modality is present).
    * ``unif_scope="per_modality"`` (default): (1/M) sum_m L_uniform(Z^m; t), no cross-modal repulsion (the
      decoupling); ``"union"``: L_uniform over all modalities' rows together, the coupled control.
    * ``holder_weight`` > 0 adds the KDE Hölder divergence between the modalities' distributions
      (:func:`holder_divergence`, bandwidth ``holder_sigma``; 2 or 3 modalities), the "KDE-based surrogate".
    * ``add_infonce`` = ``"pairwise"`` or ``"anchor"`` adds that InfoNCE with weight ``infonce_weight``.

    Defaults alpha = 2, t = 2, weights 1 are Wang and Isola's; the paper's values are unknown. GRAM-volume
    alignment and the paper's conflict measures are not reconstructed.
    """

    align: Literal["anchor", "all_pairs", "tuple_centroid"] = "anchor"
    anchor: str = ""
    unif_scope: Literal["per_modality", "union"] = "per_modality"
    align_weight: float = 1.0
    unif_weight: float = 1.0
    alpha: float = 2.0
    t: float = 2.0
    holder_weight: float = 0.0
    holder_sigma: float = 0.5
    add_infonce: Literal["off", "pairwise", "anchor"] = "off"
    infonce_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_loss_weights(self)
        if self.holder_weight < 0 or not self.holder_sigma > 0:
            raise ValueError(
                f"holder_weight must be >= 0 and holder_sigma > 0, got {self.holder_weight}, {self.holder_sigma}"
            )
        check_at_least(self, 0, "infonce_weight")

    def logit_scale_pairs(self, names: Sequence[str]) -> list[str]:
        if self.add_infonce == "pairwise":
            return _all_pairs(names)
        if self.add_infonce == "anchor":
            return _anchor_pairs(_anchor_of(self.anchor, names), names)
        return []

    def check_modalities(self, names: Sequence[str]) -> None:
        _anchor_of(self.anchor, names)
        if self.holder_weight > 0 and len(names) > 3:
            raise UsageError(
                f"holder_weight > 0 needs 2 or 3 modalities, this cell uses {len(names)}; "
                "set modalities=3 or holder_weight=0"
            )

    def terms(self, model: EmbeddingModel, views: Mapping[str, _View]) -> dict[str, torch.Tensor | None]:
        anchor = _anchor_of(self.anchor, model.names)
        terms = {
            "align": _scaled(self.align_weight, self._alignment(model, views, anchor)),
            "uniform": _scaled(self.unif_weight, self._uniformity(views)),
        }
        if self.holder_weight > 0 and len(views) == len(model.names):  # every modality has rows in this batch
            rows = [_present_rows(v) for v in views.values()]
            terms["holder"] = self.holder_weight * holder_divergence(rows, self.holder_sigma)
        if self.add_infonce == "pairwise":
            terms["infonce"] = _scaled(self.infonce_weight, _pairwise_infonce(model, views))
        elif self.add_infonce == "anchor":
            terms["infonce"] = _scaled(self.infonce_weight, _anchor_infonce(model, views, anchor))
        return terms

    def _alignment(self, model: EmbeddingModel, views: Mapping[str, _View], anchor: str) -> torch.Tensor | None:
        if self.align == "all_pairs":
            return _pairwise_alignment(model, views, self.alpha)
        if self.align == "tuple_centroid":
            rows = _paired(views, model.names)
            return None if rows is None else tuple_centroid_alignment(list(rows.values()))
        terms = []
        for m in model.names:
            pair = _paired(views, (anchor, m)) if m != anchor else None
            if pair is not None:
                terms.append(alignment(pair[m], pair[anchor], self.alpha))
        return _mean(terms)

    def _uniformity(self, views: Mapping[str, _View]) -> torch.Tensor | None:
        if self.unif_scope == "union":
            rows = [_present_rows(v) for v in views.values()]
            return uniformity(torch.cat(rows), self.t) if rows else None
        return _mean(_uniformity_terms(views, self.t))

    search_ranges: ClassVar[SearchRanges] = {"unif_weight": LogUniform(0.1, 10.0)}


ALIGN_UNIALIGN_R_2M = variant(UniAlignR, modalities="2")
ALIGN_UNIALIGN_R_2M.__doc__ = "UniAlign-R (a reconstruction of arXiv 2602.09507) on the first two modalities only."
