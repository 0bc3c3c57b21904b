"""The small problems the method parity tests train on (one copy instead of one per test_parity_* file).

Two fixed modalities: a (5 features) and b (4 features), 3 classes, 12 samples drawn from their own generator.
Or the first one to three of a (5), b (4), c (6), with the batch drawn from the global torch seed right after the
model is built, as AMCo's, MMCosine's and CML's tests do. And the one-epoch run through the cells that most parity
files end with, and the registry check they all make.
"""

from __future__ import annotations

import torch

from bench.protocol import Batch, DataDescription, ModalitySpec
from bench.registry import DATASETS, METHODS, default_method
from bench.testing import one_epoch_record


def two_modality_description() -> DataDescription:
    return DataDescription((ModalitySpec("a", (5,)), ModalitySpec("b", (4,))), num_classes=3, num_train=12)


def seeded_model(method, description: DataDescription | None = None):
    """The method's model built under torch seed 0, so every test starts from the same weights."""
    torch.manual_seed(0)
    return method.build(description if description is not None else two_modality_description())


def two_modality_batch(seed: int = 1) -> Batch:
    """12 samples of a and b, both present, labels 0, 1, 2 repeated; the global torch seed is left alone."""
    gen = torch.Generator().manual_seed(seed)
    return Batch(
        {"a": torch.randn(12, 5, generator=gen), "b": torch.randn(12, 4, generator=gen)},
        torch.tensor([0, 1, 2] * 4),
        torch.arange(12),
        torch.ones(12, 2, dtype=torch.bool),
    )


def seeded_problem(method, num_modalities: int, *, num_classes: int, num_samples: int, seed: int):
    """(model, batch): the first `num_modalities` of a (5), b (4), c (6), the model built under torch seed `seed`
    and the inputs drawn next from the same global generator; labels 0, 1, ..., num_classes - 1 repeated."""
    specs = tuple(ModalitySpec(name, (d,)) for name, d in list(zip("abc", (5, 4, 6)))[:num_modalities])
    torch.manual_seed(seed)
    model = method.build(DataDescription(specs, num_classes=num_classes, num_train=num_samples))
    inputs = {s.name: torch.randn(num_samples, s.shape[0]) for s in specs}
    label = torch.arange(num_samples) % num_classes
    present = torch.ones(num_samples, num_modalities, dtype=torch.bool)
    return model, Batch(inputs, label, torch.arange(num_samples), present)


def one_epoch_scoring_every_modality(method: str, dataset: str) -> dict:
    """The record of one epoch of `method` on the registered `dataset` through the cells, after checking that it
    ran ("ok", else its reason is shown) and that it reports an accuracy for each of the dataset's modalities."""
    record = one_epoch_record(method, dataset)
    assert record["status"] == "ok", record["reason"]
    assert set(record["metrics"]["per_modality_accuracy"]) == set(DATASETS.get(dataset).info.modalities)
    return record


def registered_defaults(method: str):
    """The registered `method`'s default config, after checking that the registry lists it without an error."""
    assert method in METHODS.names() and METHODS.error(method) is None
    return default_method(method)
