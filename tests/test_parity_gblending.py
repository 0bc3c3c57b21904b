"""G-Blending parity: the OGR terms and blend weights from given loss curves (Eq. 3, Eq. 6 / Algorithm 1),
the super-epoch schedule, the weight re-estimation in start_epoch against per-head losses computed here,
the blended loss; and the loop's generic held-out carve (stratified, seeded, disjoint from the training
rows, never the validation or test split); one epoch on synthetic_2m/3m.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity_problems import one_epoch_scoring_every_modality, registered_defaults, seeded_model, two_modality_batch

from bench.data import cell_data
from bench.loop import _carve_holdout, _holdout_rows, build_method, run_cell
from bench.methods.gblending import GBlending, blend_weights, head_losses, ogr_terms
from bench.protocol import Batch, EpochContext, StepContext
from bench.testing import tiny_spec

torch.set_num_threads(1)

# Three heads (a, b, fused): losses on the training part (T) and the held-out part (V) at N and N + n.
TRAIN_BEFORE, HOLDOUT_BEFORE = [1.0, 1.2, 0.9], [1.1, 1.3, 1.0]
TRAIN_AFTER, HOLDOUT_AFTER = [0.5, 1.0, 0.3], [0.8, 1.25, 0.9]


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_ogr_terms_from_loss_curves():
    g, o = ogr_terms(_t(TRAIN_BEFORE), _t(HOLDOUT_BEFORE), _t(TRAIN_AFTER), _t(HOLDOUT_AFTER))
    # G = L^V_N - L^V_{N+n}; O = (L^V - L^T)_{N+n} - (L^V - L^T)_N
    assert g.tolist() == pytest.approx([0.3, 0.05, 0.1])
    assert o.tolist() == pytest.approx([0.3 - 0.1, 0.25 - 0.1, 0.6 - 0.1])


def test_blend_weights_are_g_over_o_squared_normalised():
    g, o = ogr_terms(_t(TRAIN_BEFORE), _t(HOLDOUT_BEFORE), _t(TRAIN_AFTER), _t(HOLDOUT_AFTER))
    raw = [0.3 / 0.2**2, 0.05 / 0.15**2, 0.1 / 0.5**2]
    expected = [r / sum(raw) for r in raw]
    got = blend_weights(g, o).tolist()
    assert got == pytest.approx(expected)
    assert sum(got) == pytest.approx(1.0)
    # OGR = |O / G|: the head with the smallest OGR^2 / G, here the first, gets the largest weight
    assert max(range(3), key=lambda k: got[k]) == 0


def test_heads_whose_held_out_loss_rose_get_no_weight():
    got = blend_weights(_t([0.2, -0.1, 0.1]), _t([0.1, 0.1, 0.2])).tolist()
    assert got[1] == 0.0
    assert got == pytest.approx([20 / 22.5, 0.0, 2.5 / 22.5])
    assert blend_weights(_t([-0.2, -0.1, 0.0]), _t([0.1, 0.1, 0.2])).tolist() == pytest.approx([1 / 3] * 3)


def test_super_epoch_boundaries():
    method = GBlending(first_super_epoch=10, super_epoch=5)
    assert [e for e in range(31) if method.is_boundary(e)] == [0, 10, 15, 20, 25, 30]
    assert [e for e in range(8) if GBlending(first_super_epoch=2, super_epoch=3).is_boundary(e)] == [0, 2, 5]


# --------------------------------------------------------------------------------------------------
# start_epoch and the loss on a small model


def _setup(method: GBlending):
    return seeded_model(method), two_modality_batch(1), two_modality_batch(2)


def _hand_head_losses(model, batch):
    """Mean CE of the unimodal heads (a, b) and of the fused head, eval mode, plain torch."""
    model.eval()
    with torch.no_grad():
        logits, features = model(batch.inputs)
        heads = [model.unimodal_heads[n](features[n]) for n in ("a", "b")] + [logits]
        return [F.cross_entropy(z, batch.label).item() for z in heads]


def test_start_epoch_re_estimates_weights_at_boundaries_from_train_and_holdout_losses():
    method = GBlending(first_super_epoch=2, super_epoch=1)
    model, train_batch, holdout_batch = _setup(method)

    def epoch(e):
        return EpochContext(e, 10, lambda name: iter([train_batch if name == "train" else holdout_batch]))

    t0, v0 = _hand_head_losses(model, train_batch), _hand_head_losses(model, holdout_batch)
    with torch.no_grad():
        method.start_epoch(model, epoch(0))
    assert model.blend.tolist() == pytest.approx([1 / 3] * 3)  # the first super-epoch: equal weights
    assert model.boundary_train_loss.tolist() == pytest.approx(t0, rel=1e-5)
    assert model.boundary_holdout_loss.tolist() == pytest.approx(v0, rel=1e-5)

    with torch.no_grad():  # stands in for a super-epoch of training: a seeded perturbation of every weight
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = model.blend.clone()
    with torch.no_grad():
        method.start_epoch(model, epoch(1))  # not a boundary: nothing changes
    assert torch.equal(model.blend, before)

    t1, v1 = _hand_head_losses(model, train_batch), _hand_head_losses(model, holdout_batch)
    with torch.no_grad():
        method.start_epoch(model, epoch(2))
    g = [v0[k] - v1[k] for k in range(3)]
    o = [(v1[k] - t1[k]) - (v0[k] - t0[k]) for k in range(3)]
    raw = [max(g[k], 0.0) / max(o[k] ** 2, 1e-12) for k in range(3)]
    expected = [r / sum(raw) for r in raw] if sum(raw) > 0 else [1 / 3] * 3
    assert model.blend.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_loss_is_the_weighted_sum_of_head_losses():
    method = GBlending()
    model, batch, _ = _setup(method)
    model.blend.copy_(torch.tensor([0.5, 0.2, 0.3]))
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        logits, features = model(batch.inputs)
        expected = (
            0.5 * F.cross_entropy(model.unimodal_heads["a"](features["a"]), batch.label)
            + 0.2 * F.cross_entropy(model.unimodal_heads["b"](features["b"]), batch.label)
            + 0.3 * F.cross_entropy(logits, batch.label)
        ).item()
    model.load_state_dict(state)
    out = method.loss(model, batch, StepContext(0, 1, 0, 1, 0))
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.extras["weights"] == pytest.approx({"a": 0.5, "b": 0.2, "fused": 0.3})


def test_head_losses_weigh_batches_by_size():
    method = GBlending()
    model, batch, _ = _setup(method)
    halves = [
        Batch({k: v[:5] for k, v in batch.inputs.items()}, batch.label[:5], batch.index[:5], batch.mask[:5]),
        Batch({k: v[5:] for k, v in batch.inputs.items()}, batch.label[5:], batch.index[5:], batch.mask[5:]),
    ]
    whole = _hand_head_losses(model, batch)
    with torch.no_grad():
        assert head_losses(model, halves).tolist() == pytest.approx(whole, rel=1e-5)


# --------------------------------------------------------------------------------------------------
# The loop's held-out carve


def test_holdout_rows_are_stratified_and_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 7 + [3] * 1)
    rows = _holdout_rows(labels, 0.1, seed=4)
    counts = {c: int((labels[torch.from_numpy(rows)] == c).sum()) for c in range(4)}
    assert counts == {0: 5, 1: 3, 2: 1, 3: 0}  # round(0.1 n), at least one, none from a singleton class
    assert np.array_equal(rows, _holdout_rows(labels, 0.1, seed=4))
    assert not np.array_equal(rows, _holdout_rows(labels, 0.1, seed=5))


def test_carve_splits_train_only_and_keeps_rows_and_masks():
    spec = tiny_spec("gblending", missing_rate=0.3)
    method = build_method(spec)
    data = cell_data(spec, data_root=None, zero_fill=True, device=torch.device("cpu"))
    carved, holdout = _carve_holdout(method, data, spec.seed)
    n = len(data.train)
    assert len(carved.train) + len(holdout) == n and len(holdout) == len(_holdout_rows(data.train.labels, 0.1, 0))
    assert carved.description.num_train == len(carved.train)
    assert carved.val is data.val and carved.test is data.test
    # every original training row ends up in exactly one part, with its inputs, label and mask
    original = torch.cat([data.train.inputs["a"], data.train.mask.float(), data.train.labels[:, None].float()], 1)
    parts = [torch.cat([s.inputs["a"], s.mask.float(), s.labels[:, None].float()], 1) for s in (carved.train, holdout)]
    rows = torch.cat(parts)
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, original.tolist()))
    assert carved.notes["split_sizes"]["holdout"] == len(holdout)
    # a method without holdout_fraction is untouched
    plain = build_method(tiny_spec("late_fusion"))
    same, none = _carve_holdout(plain, data, 0)
    assert same is data and none is None


def test_start_epoch_sees_holdout_and_train_never_validation(monkeypatch):
    seen = []
    original = GBlending.start_epoch

    def recording(self, model, epoch):
        seen.append({name: sum(len(b) for b in epoch.batches(name)) for name in ("train", "holdout")})
        return original(self, model, epoch)

    monkeypatch.setattr(GBlending, "start_epoch", recording)
    result = run_cell(tiny_spec("gblending", epochs=3, overrides={"first_super_epoch": 1, "super_epoch": 1}))
    sizes = result["notes"]["split_sizes"]
    assert seen == [{"train": sizes["train"], "holdout": sizes["holdout"]}] * 3
    assert sizes["train"] + sizes["holdout"] == 96  # the tiny dataset's training split; val and test apart
    assert sizes["val"] == 40 and sizes["test"] == 50


@pytest.mark.parametrize("dataset", ["synthetic_2m", "synthetic_3m"])
def test_one_epoch_through_cells(dataset):
    record = one_epoch_scoring_every_modality("gblending", dataset)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    sizes = record["notes"]["split_sizes"]
    assert sizes["train"] + sizes["holdout"] == 1500  # synthetic: 1500 training samples
    assert math.isclose(sizes["holdout"], 150, abs_tol=6)  # 10 %, rounded per class


def test_registered_with_paper_defaults():
    config = registered_defaults("gblending")
    assert (config.super_epoch, config.first_super_epoch, config.holdout_fraction) == (5, 10, 0.1)
