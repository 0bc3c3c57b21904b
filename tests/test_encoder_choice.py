"""Encoders follow the dataset's description unless `--set encoder.<modality>=<kind>` chooses another."""

from __future__ import annotations

import pytest

from bench.errors import UsageError
from bench.grid import GridRequest, expand
from bench.loop import run_cell
from bench.nn import encoders


def _request(*overrides: str) -> GridRequest:
    return GridRequest(
        methods="late_fusion", datasets="synthetic_2m", seeds=(0,), missing_rates=(0.0,), epochs=1, overrides=overrides
    )


def test_the_choice_is_part_of_the_cell_and_reaches_the_model(monkeypatch):
    built = []

    def recording_mlp(spec):
        built.append(spec.name)
        return encoders.ENCODER_FACTORIES["vector"](spec)

    monkeypatch.setitem(encoders.ENCODER_FACTORIES, "recording_mlp", recording_mlp)
    default = expand(_request()).specs[0]
    chosen = expand(_request("encoder.weak=recording_mlp")).specs[0]
    assert "encoders" not in default.extra and chosen.extra == {"encoders": {"weak": "recording_mlp"}}
    assert chosen.key != default.key
    run_cell(chosen)
    assert built == ["weak"]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("encoder.weak=nonsense", "unknown encoder kind"),
        ("encoder.audio=vector", "no selected dataset has a modality 'audio'"),
    ],
)
def test_bad_choices_are_reported_before_training(override, fragment):
    with pytest.raises(UsageError, match=fragment):
        expand(_request(override))
