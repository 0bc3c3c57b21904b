"""Fusion heads (bench/nn/fusion.py): shapes for two and three modalities, each formula against a plain-torch
computation from the head's own weights, the sliced heads' sums, sequences of the conv encoder, the
applicability hook through the grid, the CLI and the tables, and one training epoch per head."""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing

import pytest
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from bench.grid import GridRequest, expand
from bench.loop import run_cell
from bench.methods.late_fusion import LateFusion
from bench.nn.classifiers import SlicedFusionNet
from bench.nn.encoders import ConvEncoder, sequence_length
from bench.nn.fusion import (
    FUSION_HEADS,
    ConcatHead,
    CrossAttentionHead,
    FiLMHead,
    FusionNet,
    GatedHead,
    GMUHead,
    LowRankFusionHead,
    SumHead,
    TensorFusionHead,
    sinusoidal_positions,
    tensor_fusion_width,
)
from bench.protocol import DataDescription, ModalitySpec
from bench.registry import default_method
from bench.tables.leaderboard import leaderboard
from bench.testing import tiny_spec

DIMS = {2: {"a": 5, "b": 7}, 3: {"a": 5, "b": 7, "c": 4}}
VECTOR_HEADS = [GatedHead, FiLMHead, GMUHead, TensorFusionHead, LowRankFusionHead]
BATCH, CLASSES = 6, 3


def _features(dims, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(BATCH, d, generator=generator) for name, d in dims.items()}


def _sequences(dims, lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(BATCH, lengths[name], d, generator=generator) for name, d in dims.items()}


def _head(cls, dims, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(dims, CLASSES, **kwargs)


def _linear(x, layer):
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


def _description(kind="vector", shape=(8,), m=2):
    return DataDescription(tuple(ModalitySpec(n, shape, kind) for n in "abc"[:m]), num_classes=CLASSES, num_train=10)


# --------------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("cls", VECTOR_HEADS, ids=lambda c: c.__name__)
def test_vector_heads_give_batch_by_classes(cls, m):
    logits = _head(cls, DIMS[m])(_features(DIMS[m]))
    assert logits.shape == (BATCH, CLASSES) and torch.isfinite(logits).all()


@pytest.mark.parametrize("m", [2, 3])
def test_cross_attention_takes_sequences_of_different_lengths(m):
    lengths = {"a": 4, "b": 9, "c": 2}
    logits = _head(CrossAttentionHead, DIMS[m], width=8, heads=2)(_sequences(DIMS[m], lengths))
    assert logits.shape == (BATCH, CLASSES) and torch.isfinite(logits).all()


# --------------------------------------------------------------------------------------------------
# Formulas, recomputed from each head's weights


@pytest.mark.parametrize("m", [2, 3])
def test_gated_head_multiplies_sigmoid_gates_of_the_others_into_the_last(m):
    head, x = _head(GatedHead, DIMS[m]), _features(DIMS[m])
    names = list(DIMS[m])
    fused = _linear(x[names[-1]], head.project[names[-1]])
    for name in names[:-1]:
        fused = fused / (1 + torch.exp(-_linear(x[name], head.project[name])))
    torch.testing.assert_close(head(x), _linear(fused, head.out))
    assert head.sliced(x) is None


@pytest.mark.parametrize("m", [2, 3])
def test_film_applies_gamma_and_beta_from_the_others_to_the_last(m):
    head, x = _head(FiLMHead, DIMS[m]), _features(DIMS[m])
    names = list(DIMS[m])
    generated = _linear(torch.cat([x[n] for n in names[:-1]], dim=1), head.generator)
    width = DIMS[m][names[-1]]
    gamma, beta = generated[:, :width], generated[:, width:]
    torch.testing.assert_close(head(x), _linear(gamma * x[names[-1]] + beta, head.out))
    torch.testing.assert_close(head.film(x)[0], gamma)
    assert head.sliced(x) is None


def test_gmu_two_modalities_is_the_papers_sigmoid_gate_and_convex_combination():
    head, x = _head(GMUHead, DIMS[2]), _features(DIMS[2])
    z = torch.sigmoid(torch.cat([x["a"], x["b"]], dim=1) @ head.gate.weight.T)
    h = z * torch.tanh(x["a"] @ head.transform["a"].weight.T) + (1 - z) * torch.tanh(
        x["b"] @ head.transform["b"].weight.T
    )
    torch.testing.assert_close(head(x), _linear(h, head.out))
    gates = head.gates(x)
    torch.testing.assert_close(gates[:, 0], z)
    torch.testing.assert_close(gates[:, 1], 1 - z)


def test_gmu_three_modalities_gates_are_in_0_1_and_sum_to_one():
    head, x = _head(GMUHead, DIMS[3]), _features(DIMS[3])
    gates = head.gates(x)
    assert gates.shape == (BATCH, 3, head.width)
    assert ((gates > 0) & (gates < 1)).all()
    torch.testing.assert_close(gates.sum(1), torch.ones(BATCH, head.width))
    parts = [gates[:, i] * torch.tanh(x[n] @ head.transform[n].weight.T) for i, n in enumerate("abc")]
    torch.testing.assert_close(head(x), _linear(sum(parts), head.out))


def _tensor_by_loops(factors):
    """T[i_1, ..., i_M] = prod_m factors[m][:, i_m], element by element, flattened first-index-major."""
    columns = []
    for index in itertools.product(*(range(f.shape[1]) for f in factors)):
        column = torch.ones(factors[0].shape[0])
        for factor, i in zip(factors, index):
            column = column * factor[:, i]
        columns.append(column)
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("m", [2, 3])
def test_tensor_fusion_is_the_outer_product_with_an_appended_one(m):
    head, x = _head(TensorFusionHead, DIMS[m]), _features(DIMS[m])
    projected = [_linear(x[n], head.project[n]) for n in DIMS[m]]
    with_one = [torch.cat([p, torch.ones(BATCH, 1)], dim=1) for p in projected]
    expected = _tensor_by_loops(with_one)
    torch.testing.assert_close(head.tensor(x), expected)
    # The appended 1 keeps each unimodal term: the entries where every other modality sits on its 1.
    k = head.width
    grid = expected.view(BATCH, *([k + 1] * m))
    torch.testing.assert_close(grid[(slice(None),) + (slice(0, k),) + (k,) * (m - 1)], projected[0])
    assert torch.all(grid[(slice(None),) + (k,) * m] == 1)
    hidden = torch.relu(_linear(expected, head.inference[0]))
    torch.testing.assert_close(head(x), _linear(hidden, head.inference[2]))
    assert head.sliced(x) is None


def test_tensor_fusion_projection_is_capped_at_4096_entries():
    assert [tensor_fusion_width(m) for m in (2, 3, 4, 6, 12, 13)] == [32, 15, 7, 3, 1, 0]
    for m in range(2, 13):
        assert (tensor_fusion_width(m) + 1) ** m <= 4096 < (tensor_fusion_width(m) + 2) ** m or tensor_fusion_width(
            m
        ) == 32
    assert TensorFusionHead.applicable(_description(m=3)) is None
    many = DataDescription(tuple(ModalitySpec(f"m{i}", (2,)) for i in range(13)), CLASSES, 10)
    assert "exceeds 4096" in TensorFusionHead.applicable(many)


@pytest.mark.parametrize("m", [2, 3])
def test_lmf_equals_the_full_tensor_fusion_weight_it_factorises(m):
    head, x = _head(LowRankFusionHead, DIMS[m]), _features(DIMS[m])
    # W[i_1, ..., i_M, c] = sum_r lambda_r prod_m W_m[r, i_m, c], built entry by entry
    factors = [head.factors[n].detach() for n in DIMS[m]]
    shape = [f.shape[1] for f in factors]
    weight = torch.zeros(*shape, CLASSES)
    for index in itertools.product(*(range(s) for s in shape)):
        term = head.rank_weights[0].detach().clone()[:, None] * torch.ones(head.rank, CLASSES)
        for factor, i in zip(factors, index):
            term = term * factor[:, i, :]
        weight[index] = term.sum(0)
    tensor = _tensor_by_loops([torch.cat([x[n], torch.ones(BATCH, 1)], dim=1) for n in DIMS[m]])
    expected = tensor @ weight.reshape(-1, CLASSES) + head.bias
    torch.testing.assert_close(head(x), expected)
    assert head.sliced(x) is None


def _cross_modal_block_by_hand(block, target, source):
    """Pre-LN MulT layer written out: per-head softmax(Q K^T / sqrt(d_k)) V, out projection, FFN, final LN."""
    width, heads = target.shape[-1], block.attention.num_heads
    w_q, w_k, w_v = block.attention.in_proj_weight.split(width)
    b_q, b_k, b_v = block.attention.in_proj_bias.split(width)
    norm = block.norm_attention
    q_in, kv_in = (
        F.layer_norm(target, (width,), norm.weight, norm.bias),
        F.layer_norm(source, (width,), norm.weight, norm.bias),
    )
    q, k, v = q_in @ w_q.T + b_q, kv_in @ w_k.T + b_k, kv_in @ w_v.T + b_v
    d = width // heads
    outputs = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d)
        outputs.append(torch.softmax(scores, dim=-1) @ v[..., cols])
    x = target + _linear(torch.cat(outputs, dim=-1), block.attention.out_proj)
    ffn_in = F.layer_norm(x, (width,), block.norm_feedforward.weight, block.norm_feedforward.bias)
    x = x + _linear(torch.relu(_linear(ffn_in, block.feedforward[0])), block.feedforward[2])
    return F.layer_norm(x, (width,), block.norm_out.weight, block.norm_out.bias)


@pytest.mark.parametrize("m", [2, 3])
def test_cross_attention_is_one_mult_layer_per_ordered_pair_max_pooled(m):
    lengths = {"a": 4, "b": 9, "c": 2}
    head, seqs = _head(CrossAttentionHead, DIMS[m], width=8, heads=2), _sequences(DIMS[m], lengths)
    embedded = {
        n: math.sqrt(8) * seqs[n] @ head.project[n].weight.T + sinusoidal_positions(lengths[n], 8) for n in DIMS[m]
    }
    pooled = []
    for target in DIMS[m]:
        for source in DIMS[m]:
            if source != target:
                block = head.blocks[f"{source}_to_{target}"]
                pooled.append(_cross_modal_block_by_hand(block, embedded[target], embedded[source]).max(1).values)
    assert len(pooled) == m * (m - 1)
    torch.testing.assert_close(head(seqs), _linear(torch.cat(pooled, dim=1), head.out))
    assert head.sliced(seqs) is None


def test_sinusoidal_positions_follow_sin_even_cos_odd():
    table = sinusoidal_positions(5, 6)
    for pos, i in itertools.product(range(5), range(3)):
        angle = pos / 10000 ** (2 * i / 6)
        assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize(
    "head",
    [
        lambda dims: ConcatHead(dims, CLASSES),
        lambda dims: SumHead(dims, CLASSES),
        lambda dims: GMUHead(dims, CLASSES),
    ],
    ids=["concat", "sum", "gmu"],
)
@pytest.mark.parametrize("m", [2, 3])
def test_sliced_heads_sum_back_to_the_fused_logits(head, m):
    torch.manual_seed(0)
    module, x = head(DIMS[m]), _features(DIMS[m])
    parts = module.sliced(x)
    assert list(parts) == list(DIMS[m])
    torch.testing.assert_close(sum(parts.values()), module(x))


# --------------------------------------------------------------------------------------------------
# Sequences and applicability


def test_conv_encoder_sequence_is_the_feature_map_forward_pools():
    torch.manual_seed(0)
    encoder = ConvEncoder(1).eval()
    x = torch.randn(3, 1, 13, 22)
    seq = encoder.sequence(x)
    assert seq.shape == (3, ConvEncoder.positions(13, 22), encoder.out_dim) == (3, 3 * 5, 64)
    torch.testing.assert_close(seq.max(dim=1).values, encoder(x))


def test_sequence_lengths_by_kind():
    assert sequence_length(ModalitySpec("v", (16,), "vector")) is None
    assert sequence_length(ModalitySpec("s", (1, 40, 63), "spectrogram")) == 10 * 15
    assert sequence_length(ModalitySpec("i", (28, 28), "image")) == 49


def test_cross_attention_applies_only_to_sequences_of_two_or_more_positions():
    assert CrossAttentionHead.applicable(_description("image", (1, 8, 8))) is None
    vectors = CrossAttentionHead.applicable(_description("vector", (8,)))
    assert "a (vector" in vectors and "b (vector" in vectors and "\n" not in vectors
    assert "1 position" in CrossAttentionHead.applicable(_description("image", (1, 4, 7)))
    with pytest.raises(UsageError, match="does not apply"):
        FusionNet(_description("vector", (8,)), "xattn")


def test_fusion_literal_lists_concat_sum_and_every_head():
    hint = typing.get_type_hints(LateFusion)["fusion"]
    assert set(typing.get_args(hint)) == {"concat", "sum"} | set(FUSION_HEADS)
    assert isinstance(LateFusion(fusion="concat").build(_description()), SlicedFusionNet)  # committed records' model
    assert isinstance(LateFusion(fusion="lmf").build(_description()), FusionNet)


def test_grid_skips_cross_attention_on_vectors_with_one_note_and_keeps_the_rest():
    plan = expand(
        GridRequest(methods="fusion_xattn,fusion_gmu", datasets="synthetic_2m", seeds=(0, 1), missing_rates=(0.0, 0.5))
    )
    assert {s.method for s in plan.specs} == {"fusion_gmu"} and len(plan.specs) == 4
    assert list(plan.not_applicable) == [("fusion_xattn", "synthetic_2m")]
    notes = [w for w in plan.warnings if "fusion_xattn" in w]
    assert len(notes) == 1 and "sequence" in notes[0]


def test_validate_reports_the_skipped_pair_and_succeeds(run_cli):
    code, out, err = run_cli("validate", "--methods", "fusion_xattn", "--datasets", "synthetic_2m")
    assert code == 0
    assert "ok: 0 cells" in out and "fusion_xattn on synthetic_2m" in out
    assert err.count("note: fusion_xattn does not apply to synthetic_2m") == 1


def test_validate_sees_hyperparameters_set_on_the_command_line(run_cli):
    code, out, _ = run_cli(
        "validate",
        "--methods",
        "late_fusion",
        "--datasets",
        "synthetic_2m",
        "--seeds",
        "0",
        "--set",
        "late_fusion.fusion=xattn",
    )
    assert code == 0 and "ok: 0 cells" in out


def test_leaderboard_shows_na_for_heads_that_cannot_be_split():
    def record(method, seed, per):
        spec = {
            "method": method,
            "hparams": {"fusion": method},
            "dataset": "toy",
            "dataset_version": "1",
            "seed": seed,
            "missing_rate": 0.0,
            "epochs": 1,
            "batch_size": 8,
            "missing_on": "all",
            "patience": None,
            "precision": "fp32",
            "hparams_source": "default",
            "protocol": 1,
            "extra": {},
        }
        metrics = {"accuracy": 0.5, "macro_f1": 0.4, "per_modality_accuracy": per}
        return {
            "key": f"{method}{seed}",
            "spec": spec,
            "status": "ok",
            "metrics": metrics,
            "notes": {"modalities": ["a", "b"]},
        }

    text = leaderboard([record("gmu", 0, {"a": 0.3, "b": 0.2}), record("lmf", 0, None)])
    assert "| lmf | n/a | n/a |" in text
    assert "| gmu | 30.00" in text


# --------------------------------------------------------------------------------------------------
# One training epoch per head through the loop


@pytest.mark.parametrize("method", ["fusion_gated", "fusion_film", "fusion_gmu", "fusion_tensor", "fusion_lmf"])
def test_one_epoch_on_synthetic_2m(method):
    spec = dataclasses.replace(tiny_spec(method, epochs=1), dataset="synthetic_2m", batch_size=64)
    result = run_cell(spec)
    metrics = result["metrics"]
    assert metrics["num_test_samples"] == 1000 and 0.0 <= metrics["accuracy"] <= 1.0
    per_modality = metrics["per_modality_accuracy"]
    if default_method(method).fusion == "gmu":
        assert set(per_modality) == {"strong", "weak"}
    else:
        assert per_modality is None


def test_one_epoch_of_cross_attention_on_image_modalities():
    result = run_cell(tiny_spec("fusion_xattn", dataset="_tiny_2m_seq", epochs=1))
    assert result["metrics"]["per_modality_accuracy"] is None
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
