"""The alignment objectives against independent plain computations of their papers' formulas."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import grid_args, record_paths

from bench.data import cell_data, iterate_batches
from bench.errors import UsageError
from bench.loop import _make_optimizer, build_method, seed_everything
from bench.methods.alignment import (
    LOGIT_SCALE_MAX,
    anchor_clip_loss,
    clip_loss,
    holder_divergence,
    pairwise_clip_loss,
    select_modalities,
    tuple_centroid_alignment,
)
from bench.protocol import Batch, DataDescription, ModalitySpec, StepContext
from bench.testing import tiny_spec

CTX = StepContext(epoch=0, num_epochs=1, batch_index=0, batches_per_epoch=1, global_step=0)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def _clip_reference(a: torch.Tensor, b: torch.Tensor, logit_scale: float) -> float:
    """CLIP (Radford et al. 2021, Fig. 3): mean of the image->text and text->image cross-entropies of
    exp(logit_scale) * cosine similarities, written as explicit log-sum-exps over Python floats."""
    s, n = math.exp(logit_scale), len(a)
    total = 0.0
    for i in range(n):
        row = [s * float(a[i] @ b[j]) for j in range(n)]
        col = [s * float(b[i] @ a[j]) for j in range(n)]
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
        total += -col[i] + math.log(sum(math.exp(v) for v in col))
    return total / (2 * n)


def _pdist_uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()  # ssnl/align_uniform uniform_loss


def _norm_alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return (x - y).norm(p=2, dim=1).pow(alpha).mean()  # ssnl/align_uniform align_loss


# --------------------------------------------------------------------------------------------------
# Pure formulas


@pytest.mark.parametrize("scale", [math.log(1 / 0.07), 0.0, math.log(100)])
def test_clip_loss_matches_the_papers_formula(scale):
    a, b = _unit(6, 4, 0), _unit(6, 4, 1)
    assert float(clip_loss(a, b, torch.tensor(scale, dtype=torch.float64))) == pytest.approx(
        _clip_reference(a, b, scale)
    )


def test_pairwise_loss_is_the_mean_over_pairs_with_each_pairs_own_scale():
    z = {"a": _unit(5, 3, 2), "b": _unit(5, 3, 3), "c": _unit(5, 3, 4)}
    scales = {"a|b": 1.0, "a|c": 2.0, "b|c": 3.0}
    expected = sum(_clip_reference(z[k[0]], z[k[2]], v) for k, v in scales.items()) / 3
    got = pairwise_clip_loss(z, {k: torch.tensor(v, dtype=torch.float64) for k, v in scales.items()})
    assert float(got) == pytest.approx(expected)


def test_anchor_loss_is_the_sum_over_pairs_with_the_anchor():
    z = {"a": _unit(5, 3, 5), "b": _unit(5, 3, 6), "c": _unit(5, 3, 7)}
    scales = {"a|b": 1.5, "b|c": 0.5, "a|c": 9.0}  # a|c does not involve the anchor b: unused
    expected = _clip_reference(z["b"], z["a"], 1.5) + _clip_reference(z["b"], z["c"], 0.5)
    got = anchor_clip_loss(z, "b", {k: torch.tensor(v, dtype=torch.float64) for k, v in scales.items()})
    assert float(got) == pytest.approx(expected)


def test_tuple_centroid_alignment_equals_the_mean_pairwise_squared_distance_form():
    z = [_unit(7, 4, s) for s in (8, 9, 10)]
    m = len(z)
    pairwise = sum((z[i] - z[j]).pow(2).sum(1) for i in range(m) for j in range(m)) / (2 * m * m)
    assert float(tuple_centroid_alignment(z)) == pytest.approx(float(pairwise.mean()))


def _holder_brute_force(z: list[torch.Tensor], sigma: float) -> float:
    """-log mean over index tuples of prod_{m<n} K^{mn} + (1/M) sum_m log (the same within modality m)."""
    m = len(z)

    def mean_product(sets: list[torch.Tensor]) -> float:
        values = []
        for rows in itertools.product(*[range(len(s)) for s in sets]):
            points = [s[r] for s, r in zip(sets, rows)]
            sq = sum(float((points[i] - points[j]).pow(2).sum()) for i in range(m) for j in range(i + 1, m))
            values.append(math.exp(-sq / (2 * m * sigma**2)))
        return sum(values) / len(values)

    return -math.log(mean_product(z)) + sum(math.log(mean_product([x] * m)) for x in z) / m


@pytest.mark.parametrize("sizes", [(4, 3), (3, 4, 2)])
def test_holder_divergence_matches_brute_force_enumeration_of_tuples(sizes):
    z = [_unit(n, 3, 20 + i) for i, n in enumerate(sizes)]  # unpaired rows: each modality has its own count
    for sigma in (0.5, 1.0):
        got = float(holder_divergence(z, sigma))
        assert got == pytest.approx(_holder_brute_force(z, sigma), rel=1e-6)
        assert got >= 0  # Hölder's inequality


def test_holder_divergence_of_two_modalities_is_half_the_cauchy_schwarz_divergence():
    x, y, sigma = _unit(5, 3, 30), _unit(6, 3, 31), 0.7

    def mean_kernel(a, b, bandwidth):  # CS-adv CSutils.py: exp(-||a-b||^2 / (2 sigma^2)), diagonal included
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2)).mean().log()

    bw = math.sqrt(2) * sigma
    cs = mean_kernel(x, x, bw) + mean_kernel(y, y, bw) - 2 * mean_kernel(x, y, bw)
    assert float(holder_divergence([x, y], sigma)) == pytest.approx(float(cs) / 2, rel=1e-6)


def test_holder_divergence_vanishes_when_the_modalities_hold_the_same_samples():
    x = _unit(5, 3, 32)
    assert float(holder_divergence([x, x.clone(), x.clone()], 0.5)) == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------------------------------
# Methods, on a batch of the conformance suite's tiny datasets


def _setup(method: str, dataset: str = "_tiny_3m", rate: float = 0.0, **overrides):
    spec = tiny_spec(method, dataset=dataset, missing_rate=rate, overrides=overrides)
    config = build_method(spec)
    data = cell_data(spec, data_root=None, zero_fill=type(config).zero_fill_missing, device=torch.device("cpu"))
    seed_everything(0)
    model = config.build(data.description)
    model.train()
    batch = next(iterate_batches(data.train, 32, generator=torch.Generator().manual_seed(0)))
    return config, model, batch


def _loss(config, model, batch) -> float:
    return float(config.loss(model, batch, CTX).loss.detach())


def _embeddings(model, batch) -> dict[str, torch.Tensor]:
    """What the training forward embeds (train mode: BatchNorm on the batch's statistics), without gradients."""
    with torch.no_grad():
        return {name: model.embed(name, batch.inputs[name]) for name in model.names}


def test_align_uniform_is_mean_pairwise_alignment_plus_mean_per_modality_uniformity():
    config, model, batch = _setup("align_uniform")
    got = config.loss(model, batch, CTX).loss.detach()
    z = _embeddings(model, batch)
    align = sum(_norm_alignment(z[a], z[b]) for a, b in itertools.combinations("abc", 2)) / 3
    unif = sum(_pdist_uniformity(z[m]) for m in "abc") / 3
    assert float(got) == pytest.approx(float(align + unif), rel=1e-5)


def test_unialign_r_anchor_alignment_and_per_modality_versus_union_uniformity():
    config, model, batch = _setup("align_unialign_r", anchor="b", unif_weight=0.5)
    z = _embeddings(model, batch)
    anchor_align = (_norm_alignment(z["a"], z["b"]) + _norm_alignment(z["c"], z["b"])) / 2
    per_modality = sum(_pdist_uniformity(z[m]) for m in "abc") / 3
    assert _loss(config, model, batch) == pytest.approx(float(anchor_align + 0.5 * per_modality), rel=1e-5)

    config, model, batch = _setup("align_unialign_r", anchor="b", unif_scope="union")
    union = _pdist_uniformity(torch.cat([z[m] for m in "abc"]))
    assert _loss(config, model, batch) == pytest.approx(float(anchor_align + union), rel=1e-5)
    # the union of the modalities is more repelled than each alone when they sit apart: the two differ
    assert abs(float(union) - float(per_modality)) > 1e-3


def test_unialign_r_other_alignments_holder_and_infonce_terms():
    config, model, batch = _setup(
        "align_unialign_r", align="tuple_centroid", holder_weight=0.3, add_infonce="pairwise", infonce_weight=2.0
    )
    z = _embeddings(model, batch)
    stacked = torch.stack([z[m] for m in "abc"])
    centroid = (stacked - stacked.mean(0)).pow(2).sum(2).mean()
    unif = sum(_pdist_uniformity(z[m]) for m in "abc") / 3
    scale = math.log(1 / 0.07)
    infonce = sum(_clip_reference(z[a].detach(), z[b].detach(), scale) for a, b in itertools.combinations("abc", 2)) / 3
    holder = _holder_by_broadcasting([z[m].detach().double() for m in "abc"], 0.5)
    out = config.loss(model, batch, CTX)
    terms = out.extras["terms"]
    assert terms["align"] == pytest.approx(float(centroid), rel=1e-5)
    assert terms["infonce"] == pytest.approx(2.0 * infonce, rel=1e-5)
    assert terms["holder"] == pytest.approx(0.3 * holder, rel=1e-4)
    assert float(out.loss.detach()) == pytest.approx(float(centroid + unif) + 2.0 * infonce + 0.3 * holder, rel=1e-5)


def _holder_by_broadcasting(z: list[torch.Tensor], sigma: float) -> float:
    """Three modalities: the (N1, N2, N3) tensor of kernel products, averaged (no matrix-product shortcut)."""

    def sq(x, y):
        return (x[:, None, :] - y[None, :, :]).pow(2).sum(2)

    def log_mean(x, y, w):
        total = sq(x, y)[:, :, None] + sq(y, w)[None, :, :] + sq(x, w)[:, None, :]
        return float(torch.exp(-total / (6 * sigma**2)).mean().log())

    return -log_mean(*z) + sum(log_mean(x, x, x) for x in z) / 3


@pytest.mark.parametrize(
    "method,pairs", [("align_pairwise", None), ("align_clip", [("a", "b")]), ("align_anchor", [("a", "b"), ("a", "c")])]
)
def test_infonce_objectives_at_the_initial_temperature(method, pairs):
    config, model, batch = _setup(method)
    z = {k: v.detach() for k, v in _embeddings(model, batch).items()}
    scale = math.log(1 / 0.07)
    if pairs is None:  # all pairs, averaged
        expected = sum(_clip_reference(z[a], z[b], scale) for a, b in itertools.combinations("abc", 2)) / 3
    else:  # CLIP: the one pair of the first two modalities; anchor: summed
        expected = sum(_clip_reference(z[a], z[b], scale) for a, b in pairs)
    assert sorted(model.names) == sorted({m for p in (pairs or itertools.combinations("abc", 2)) for m in p})
    assert _loss(config, model, batch) == pytest.approx(expected, rel=1e-5)


def test_logit_scale_is_learned_and_clamped_to_ln_100_before_each_forward():
    config, model, batch = _setup("align_pairwise")
    out = config.loss(model, batch, CTX)
    out.loss.backward()
    assert all(p.grad is not None and p.grad != 0 for p in model.logit_scales.values())
    with torch.no_grad():
        model.logit_scales["a|b"].fill_(10.0)
        model.logit_scales["a|c"].fill_(-1.0)
    config.loss(model, batch, CTX)
    assert float(model.logit_scales["a|b"].detach()) == pytest.approx(LOGIT_SCALE_MAX)
    assert float(model.logit_scales["a|c"].detach()) == 0.0
    assert float(model.logit_scales["b|c"].detach()) == pytest.approx(math.log(1 / 0.07))


@pytest.mark.parametrize("method", ["align_clip", "align_pairwise", "align_anchor"])
def test_temperatures_take_no_weight_decay_unless_asked(method):
    # AdamW with every gradient zero: Adam's update is 0 / (0 + eps) = 0, so one step leaves only the decoupled
    # decay p <- p (1 - lr wd): lr 0.1, wd 0.5 scales decayed parameters by exactly 0.95 and leaves the rest.
    for decay in (False, True):
        config, model, _ = _setup(method, lr=0.1, weight_decay=0.5, logit_scale_decay=decay)
        assert config.optimizer == "adamw"
        names = set(config.no_weight_decay(model))
        assert names == (set() if decay else {f"logit_scales.{k}" for k in model.logit_scales})
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = _make_optimizer(config, model)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        for n, p in model.named_parameters():
            kept = n.startswith("logit_scales.") and not decay
            expected = before[n] if kept else before[n] * (1 - 0.1 * 0.5)
            assert torch.allclose(p.detach(), expected, rtol=1e-6, atol=0), (method, decay, n)
        assert any(n.startswith("logit_scales.") for n in before)


def test_a_spec_stored_before_logit_scale_decay_existed_re_runs_with_decayed_temperatures():
    new = tiny_spec("align_clip")
    assert new.hparams["logit_scale_decay"] is False and build_method(new).logit_scale_decay is False
    old = dataclasses.replace(new, hparams={k: v for k, v in new.hparams.items() if k != "logit_scale_decay"})
    assert build_method(old).logit_scale_decay is True  # legacy_hparams: the behaviour of committed records
    assert old.key != new.key  # new cells get their own identity, the committed ones keep theirs
    explicit = dataclasses.replace(new, hparams={**new.hparams, "logit_scale_decay": True})
    assert build_method(explicit) == build_method(old)
    # methods without temperatures have no such field, so their specs (and keys) are unchanged
    assert "logit_scale_decay" not in tiny_spec("align_uniform").hparams
    assert "logit_scale_decay" not in tiny_spec("align_unialign_r").hparams


def _masked(batch: Batch, absent_rows: list[int], modality: int) -> Batch:
    mask = batch.mask.clone()
    mask[absent_rows, modality] = False
    return Batch(batch.inputs, batch.label, batch.index, mask)


def test_a_pair_trains_only_on_rows_where_both_sides_are_present():
    config, model, batch = _setup("align_uniform")
    masked = _masked(batch, [0, 1, 2, 3, 4], modality=1)  # "b" missing in the first five rows
    got = _loss(config, model, masked)
    present = masked.mask[:, 1]
    z = _embeddings(model, batch)
    with torch.no_grad():
        zb = model.embed("b", batch.inputs["b"][present])  # missing rows never enter the encoder
    align = (
        _norm_alignment(z["a"][present], zb) + _norm_alignment(z["a"], z["c"]) + _norm_alignment(zb, z["c"][present])
    ) / 3
    unif = (_pdist_uniformity(z["a"]) + _pdist_uniformity(zb) + _pdist_uniformity(z["c"])) / 3
    assert got == pytest.approx(float(align + unif), rel=1e-5)

    # what the missing inputs hold cannot change the loss
    scrambled = dict(masked.inputs)
    scrambled["b"] = batch.inputs["b"].clone()
    scrambled["b"][:5] = 1e3
    again = config.loss(model, Batch(scrambled, batch.label, batch.index, masked.mask), CTX)
    assert float(again.loss.detach()) == pytest.approx(got, rel=1e-6)


def test_a_batch_without_any_complete_pair_is_a_zero_step_with_gradients_defined():
    config, model, batch = _setup("align_clip", dataset="_tiny_2m")
    n = len(batch)
    mask = torch.zeros(n, 2, dtype=torch.bool)
    mask[: n // 2, 0] = True
    mask[n // 2 :, 1] = True  # every row keeps exactly one modality
    out = config.loss(model, Batch(batch.inputs, batch.label, batch.index, mask), CTX)
    assert float(out.loss.detach()) == 0.0 and out.extras["terms"] == {}
    out.loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) == 0.0 for p in model.parameters())


def test_two_of_three_modalities_build_and_embed_only_those():
    config, model, batch = _setup("align_unialign_r_2m")
    assert model.names == ("a", "b") and sorted(model.encoders) == ["a", "b"]
    pred = config.predict(model.eval(), batch)
    assert pred.logits is None and sorted(pred.embeddings) == ["a", "b"]


def test_modality_selection_and_applicability():
    names = ("x", "y", "z")
    assert select_modalities("all", names) == names
    assert select_modalities("2", names) == ("x", "y")
    assert select_modalities("z,x", names) == ("x", "z")  # dataset order
    for bad in ("4", "w,x", "x"):
        with pytest.raises(UsageError):
            select_modalities(bad, names)
    two = DataDescription((ModalitySpec("a", (8,)), ModalitySpec("b", (8,))), 3, 10)
    from bench.methods.alignment import AlignAnchor, UniAlignR

    assert "3 modalities" in UniAlignR(modalities="3").applicable(two)
    assert "anchor" in AlignAnchor(anchor="c").applicable(two)
    assert UniAlignR(modalities="2").applicable(two) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"modalities": "1"},
        {"modalities": "a"},
        {"embed_dim": 0},
        {"alpha": -1.0},
        {"holder_sigma": 0.0},
        {"unif_scope": "both"},
    ],
)
def test_bad_hyperparameters_are_one_line_errors(bad):
    from bench.hparams import resolve_hparams
    from bench.registry import default_method

    with pytest.raises(UsageError, match=next(iter(bad))):
        resolve_hparams(default_method("align_unialign_r"), bad)


# --------------------------------------------------------------------------------------------------
# End to end through the CLI


def test_cli_runs_retrieval_cells_writes_records_and_the_retrieval_leaderboard(run_cli, tmp_path):
    results = tmp_path / "results"
    args = ("run", *grid_args("align_clip,align_pairwise", "synthetic_2m,synthetic_3m"), "--results", str(results))
    code, out, err = run_cli(*args)
    assert code == 0, err
    records = record_paths(results)
    assert len(records) == 4
    import json

    record = json.loads((next(results.glob("records/synthetic_3m/align_pairwise/*.json"))).read_text())
    metrics = record["metrics"]
    assert "accuracy" not in metrics and record["notes"]["task"] == "retrieval"
    assert metrics["retrieval"]["modalities"] == ["strong", "weak", "weak2"]
    assert len(metrics["retrieval"]["directions"]) == 6 and metrics["num_test_samples"] == 1000
    assert 0.0 <= metrics["best_val_mean_recall_at_1"] <= 1.0
    board = (results / "leaderboard.md").read_text()
    assert "## synthetic_2m · retrieval" in board and "## synthetic_3m · retrieval" in board
    assert "align_clip (2) → align_pairwise (3)" in board and "## synthetic_3m\n" not in board
    assert "synthetic_3m** · retrieval" in out and "best mean R@1" in out  # run prints the summary of its cells
    assert str(results / "leaderboard.md") in out and "## synthetic_3m · retrieval" not in out  # not the tables
    code, out, _ = run_cli(*args)
    assert code == 0 and "nothing to train" in out
    code, out, err = run_cli("verify", "--sample", "1", "--seed", "0", "--results", str(results))
    assert code == 0 and "same" in out and "mean R@1" in out, err
