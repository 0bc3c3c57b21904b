"""The registry-driven conformance suite: one test id per (registered plugin, check)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from bench.hparams import MethodConfig
from bench.protocol import (
    OPTIONAL_HOOKS,
    REQUIRED_MEMBERS,
    DataDescription,
    Method,
    ModalitySpec,
    method_contract_problems,
)
from bench.registry import DATASETS, METHODS, default_method
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


# --------------------------------------------------------------------------------------------------
# The method contract of bench.protocol: required members present, every hook a method defines callable
# with the declared arguments.

TWO_VECTORS = DataDescription((ModalitySpec("a", (8,)), ModalitySpec("b", (8,))), num_classes=3, num_train=96)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_follows_the_protocol(name):
    method = default_method(name)
    assert isinstance(method, Method), f"{name}: missing {[m for m in REQUIRED_MEMBERS if not hasattr(method, m)]}"
    assert method_contract_problems(method) == []
    stages = method.pretrain(TWO_VECTORS) if hasattr(method, "pretrain") else {}
    for stage_name, stage in stages.items():  # a pretrain stage trains like a cell: it is a method too
        assert isinstance(stage, Method) and method_contract_problems(stage) == [], f"{name}: stage {stage_name}"


def _positional(count: int):
    """A hook taking exactly ``count`` arguments after self."""

    def hook(*args):
        return None

    names = ["self", *(f"arg{i}" for i in range(count))]
    hook.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names]
    )
    return hook


OMIT = object()


def _minimal_method(**namespace):
    """A plain class (no MethodConfig) with every required member of bench.protocol.Method, then
    ``namespace`` on top; a value ``OMIT`` leaves that member out."""
    members = {name: 0.1 for name, signature in REQUIRED_MEMBERS.items() if signature is None}
    members.update({"optimizer": "sgd", "zero_fill_missing": True})
    members.update({name: _positional(len(sig.parameters)) for name, sig in REQUIRED_MEMBERS.items() if sig})
    members["search_space"] = staticmethod(lambda trial: {})  # called on the class
    members.update(namespace)
    return type("Minimal", (), {k: v for k, v in members.items() if v is not OMIT})()


def test_the_minimal_method_follows_the_protocol():
    assert isinstance(_minimal_method(), Method) and method_contract_problems(_minimal_method()) == []


@pytest.mark.parametrize("member", sorted(REQUIRED_MEMBERS))
def test_a_method_missing_a_required_member_fails(member):
    method = _minimal_method(**{member: OMIT})
    assert not isinstance(method, Method)
    problems = method_contract_problems(method)
    assert len(problems) == 1 and f"has no {member}" in problems[0]


@pytest.mark.parametrize(
    "hook",
    sorted(
        n
        for n, signature in {**REQUIRED_MEMBERS, **OPTIONAL_HOOKS}.items()
        if signature is not None and n != "search_space"
    ),
)
def test_a_hook_of_the_wrong_arity_fails(hook):
    declared = {**REQUIRED_MEMBERS, **OPTIONAL_HOOKS}[hook]
    extras = {"adopt_pretrained": _positional(2)} if hook == "pretrain" else {}
    for wrong in (len(declared.parameters) - 1, len(declared.parameters) + 1):
        problems = method_contract_problems(_minimal_method(**{hook: _positional(wrong)}, **extras))
        assert len(problems) == 1 and f"Minimal.{hook}(" in problems[0], problems


def test_search_space_is_called_on_the_class():
    """``bench tune`` calls ``type(method).search_space(trial)``: an instance method taking (self, trial) fails."""
    problems = method_contract_problems(_minimal_method(search_space=_positional(1)))
    assert len(problems) == 1 and "search_space" in problems[0]


def test_pretrain_needs_adopt_pretrained():
    problems = method_contract_problems(_minimal_method(pretrain=_positional(1)))
    assert problems == ["Minimal has pretrain but no adopt_pretrained to receive the stages"]


@pytest.mark.parametrize(
    "attribute, value",
    [("per_modality_trained_alone", 1), ("task", None), ("legacy_hparams", ["x"]), ("holdout_fraction", 1.0)],
)
def test_an_optional_attribute_of_the_wrong_type_fails(attribute, value):
    assert len(method_contract_problems(_minimal_method(**{attribute: value}))) == 1


def test_a_method_config_subclass_missing_predict_fails():
    @dataclasses.dataclass(frozen=True)
    class NoPredict(MethodConfig):
        def build(self, description):
            return None

        def loss(self, model, batch, ctx):
            return None

    assert not isinstance(NoPredict(), Method)
    assert method_contract_problems(NoPredict()) == ["NoPredict has no predict (required by bench.protocol.Method)"]
