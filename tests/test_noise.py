"""The noise axis: paired, seeded test-time corruption (bench.noise) and its place in specs, records and tables."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import grid_args, read_records

from bench.noise import corrupt, modality_stats, parse_levels
from bench.spec import CellSpec

KINDS = {"a": "vector", "t": "tokens"}


def _inputs(n: int = 400) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.stack([torch.randint(1, 100, (n, 12), generator=g), torch.ones(n, 12, dtype=torch.int64)], dim=1)
    inputs = {"a": 3.0 * torch.randn(n, 50, generator=g) + 1.0, "t": tokens}
    return inputs, torch.ones(n, 2, dtype=torch.bool)


def _corrupt(inputs, present, kind="gaussian", level=5.0, seed=0):
    stats = modality_stats(inputs, KINDS)
    return corrupt(inputs, present, KINDS, stats, kind=kind, level=level, seed=seed, split="test")


def test_level_zero_is_the_clean_data():
    inputs, present = _inputs()
    out = _corrupt(inputs, present, level=0.0)
    assert all(torch.equal(out[k], inputs[k]) for k in inputs)


def test_gaussian_noise_hits_about_half_the_samples_with_the_documented_scale():
    inputs, present = _inputs(2000)
    out = _corrupt(inputs, present, level=5.0)
    changed = (out["a"] != inputs["a"]).any(1)
    assert 0.45 < changed.float().mean() < 0.55
    noise = (out["a"] - inputs["a"])[changed]
    expected_std = 0.5 * float(inputs["a"].std())
    assert abs(float(noise.std()) - expected_std) < 0.05 * expected_std


def test_draws_depend_on_the_sample_not_on_the_split_size_and_levels_are_nested():
    inputs, present = _inputs(400)
    full = _corrupt(inputs, present, level=10.0)
    stats = modality_stats(inputs, KINDS)
    prefix = corrupt(
        {k: v[:100] for k, v in inputs.items()},
        present[:100],
        KINDS,
        stats,
        kind="gaussian",
        level=10.0,
        seed=0,
        split="test",
    )
    assert torch.equal(prefix["a"], full["a"][:100])
    half = _corrupt(inputs, present, level=5.0)
    assert torch.allclose(full["a"] - inputs["a"], 2 * (half["a"] - inputs["a"]), atol=1e-5)
    assert not torch.equal(_corrupt(inputs, present, level=10.0, seed=1)["a"], full["a"])


def test_missing_modalities_stay_missing():
    inputs, present = _inputs()
    present[::2, 0] = False
    inputs["a"][::2] = 0.0
    out = _corrupt(inputs, present, level=10.0)
    assert torch.count_nonzero(out["a"][::2]) == 0


def test_salt_and_pepper_sets_entries_to_the_training_extremes():
    inputs, present = _inputs(2000)
    out = _corrupt(inputs, present, kind="salt_pepper", level=10.0)
    low, high = float(inputs["a"].min()), float(inputs["a"].max())
    hit = out["a"] != inputs["a"]
    assert set(out["a"][hit].unique().tolist()) <= {low, high}
    corrupted_rows = hit.any(1)
    density = hit[corrupted_rows].float().mean()
    assert 0.08 < density < 0.12  # level 10 -> 10% of the entries of a corrupted sample


def test_tokens_lose_words_from_the_attention_mask_only():
    inputs, present = _inputs(2000)
    out = _corrupt(inputs, present, level=5.0)
    assert torch.equal(out["t"][:, 0], inputs["t"][:, 0])
    erased = out["t"][:, 1] == 0
    rows = erased.any(1)
    assert 0.45 < rows.float().mean() < 0.55
    assert abs(float(erased[rows].float().mean()) - 0.5) < 0.05  # 0.1 * level of the words


@pytest.mark.parametrize("text", ["", "11", "-1", "a"])
def test_bad_levels_are_rejected(text):
    with pytest.raises(ValueError):
        parse_levels(text)


def test_noise_free_identity_is_unchanged_and_noise_cells_differ():
    base = dict(
        method="late_fusion",
        hparams={},
        dataset="d",
        dataset_version="1",
        seed=0,
        missing_rate=0.0,
        epochs=1,
        batch_size=8,
    )
    clean = CellSpec(**base)
    assert "noise" not in clean.to_dict()
    noisy = CellSpec(**base, noise="gaussian", noise_levels=[0, 5])
    assert noisy.key != clean.key
    assert CellSpec.from_dict(json.loads(json.dumps(noisy.to_dict()))) == noisy
    with pytest.raises(ValueError):
        CellSpec(**base, noise="gaussian")


def test_run_scores_every_level_and_the_table_shows_them(run_cli, tmp_path):
    argv = ("run", *grid_args(), "--results", str(tmp_path))
    assert run_cli(*argv, "--noise", "gaussian", "--noise-levels", "0,10")[0] == 0
    records = read_records(tmp_path)
    assert len(records) == 1
    metrics = records[0]["metrics"]
    assert set(metrics["noise"]) == {"0", "10"}
    assert metrics["noise"]["0"]["accuracy"] == metrics["accuracy"]
    table = (tmp_path / "leaderboard.md").read_text()
    assert "test-time gaussian noise" in table and "AUC over 0-10" in table
    code, _, err = run_cli(*argv, "--noise", "gaussian", "--noise-levels", "0,20")
    assert code == 2 and "noise levels must be in [0, 10]" in err


def test_uint8_frames_are_clipped_not_wrapped_and_token_kinds_with_a_model_dir_count_as_tokens():
    n = 400
    frames = torch.full((n, 3, 4, 4), 250, dtype=torch.uint8)
    frames[: n // 2] = 5
    tokens = torch.stack([torch.randint(1, 100, (n, 12)), torch.ones(n, 12, dtype=torch.int64)], dim=1)
    inputs, kinds = {"v": frames, "t": tokens}, {"v": "frames", "t": "tokens:/some/model"}
    stats = modality_stats(inputs, kinds)
    out = corrupt(
        inputs, torch.ones(n, 2, dtype=torch.bool), kinds, stats, kind="gaussian", level=10.0, seed=0, split="test"
    )
    assert out["v"].dtype == torch.uint8
    as_float = corrupt(
        {"v": frames.float(), "t": tokens},
        torch.ones(n, 2, dtype=torch.bool),
        kinds,
        stats,
        kind="gaussian",
        level=10.0,
        seed=0,
        split="test",
    )
    # the same noise as on floats, rounded and clipped to 0-255: a dark pixel pushed below 0 stays 0 (no wrap)
    assert torch.equal(out["v"], as_float["v"].round().clamp(0, 255).to(torch.uint8))
    assert (as_float["v"] < 0).any() and (out["v"] == 0).any()
    assert torch.equal(out["t"][:, 0], tokens[:, 0]) and (out["t"][:, 1] == 0).any()


def test_a_method_with_a_holdout_is_scored_on_the_same_corrupted_test_inputs(monkeypatch):
    """G-Blending trains on 90% of train (holdout_fraction); its test noise must still be scaled by the whole
    training split's statistics, so that it sees exactly late fusion's corrupted test samples."""
    import dataclasses

    import bench.loop
    from bench.data import cell_data
    from bench.loop import _carve_holdout, build_method, run_cell
    from bench.noise import training_stats
    from bench.testing import tiny_spec

    seen: dict[str, list[dict[str, torch.Tensor]]] = {}
    real = bench.loop.corrupt

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.setdefault(method, []).append({k: v.clone() for k, v in out.items()})
        return out

    monkeypatch.setattr(bench.loop, "corrupt", recording)
    specs = {}
    for method in ("late_fusion", "gblending"):
        spec = dataclasses.replace(
            tiny_spec(method, missing_rate=0.25, epochs=1), noise="gaussian", noise_levels=(5.0, 10.0)
        )
        specs[method] = spec
        run_cell(spec)
    assert len(seen["late_fusion"]) == len(seen["gblending"]) == 2
    for ours, theirs in zip(seen["gblending"], seen["late_fusion"]):
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # and the check can fail: the 90% G-Blending trains on has other statistics than the whole split
    spec = specs["gblending"]
    data = cell_data(spec, data_root=None, zero_fill=True, device=torch.device("cpu"))
    carved, _ = _carve_holdout(build_method(spec), data, spec.seed)
    kinds = {m.name: m.kind for m in data.description.modalities}
    assert training_stats(carved.train, kinds) != training_stats(data.train, kinds)
