"""The registry-driven conformance suite: one test id per (registered plugin, check)."""

from __future__ import annotations

import pytest

from bench.registry import DATASETS, METHODS
from bench.testing import DATASET_CHECKS, METHOD_CHECKS

METHOD_NAMES = [n for n in METHODS.names() if METHODS.error(n) is None]
DATASET_NAMES = [n for n in DATASETS.names() if DATASETS.error(n) is None]


@pytest.mark.parametrize("check", METHOD_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_conforms(name, check):
    check(name)


@pytest.mark.parametrize("check", DATASET_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", DATASET_NAMES)
def test_dataset_conforms(name, check, request):
    root = None
    if DATASETS.get(name).info.needs_data_root:
        root = request.getfixturevalue("data_root")
    check(name, root)


def test_every_entry_point_loads():
    broken = {n: METHODS.error(n) for n in METHODS.names() if METHODS.error(n)}
    broken |= {n: DATASETS.error(n) for n in DATASETS.names() if DATASETS.error(n)}
    assert not broken
