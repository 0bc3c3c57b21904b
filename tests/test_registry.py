from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from bench.errors import UsageError
from bench.registry import METHODS, Registry, _Entry


def _registry(**objects) -> Registry:
    reg = Registry("method", "bench.nonexistent.group")
    for name, obj in objects.items():
        reg.register(name, obj)
    return reg


def test_select_all_lists_and_globs_in_order():
    reg = _registry(ogm_ge=1, ogm=2, qmf=3, mla=4)
    assert reg.select("all") == ["mla", "ogm", "ogm_ge", "qmf"]
    assert reg.select("qmf,ogm*") == ["qmf", "ogm", "ogm_ge"]
    assert reg.select(" mla , mla ") == ["mla"]


def test_unknown_name_names_close_matches_and_available():
    reg = _registry(ogm_ge=1, qmf=2)
    with pytest.raises(UsageError) as err:
        reg.select("ogm-ge")
    message = str(err.value)
    assert "Did you mean: ogm_ge" in message and "Available: ogm_ge, qmf" in message and "\n" not in message


def test_glob_matching_nothing_and_empty_selection_fail():
    reg = _registry(qmf=1)
    with pytest.raises(UsageError, match="no method matches"):
        reg.select("ogm*")
    with pytest.raises(UsageError, match="empty"):
        reg.select(" , ")


def test_duplicate_names_raise():
    reg = _registry(qmf=1)
    with pytest.raises(UsageError, match="two methods are registered as 'qmf'"):
        reg.register("qmf", 2)


def test_broken_plugin_is_listed_and_fails_only_when_selected():
    reg = _registry(good=1)
    ep = EntryPoint(name="broken", value="bench_no_such_module_xyz:Thing", group="bench.methods")
    reg._add(_Entry("broken", "thirdparty 0.1", entry_point=ep))
    assert reg.names() == ["broken", "good"]
    assert "ModuleNotFoundError" in reg.error("broken")
    assert reg.select("all") == ["good"]
    with pytest.raises(UsageError, match="'broken' .*failed to load"):
        reg.select("broken")


def test_builtins_come_from_entry_points():
    assert METHODS.origin("late_fusion").startswith("bench-mml")


def test_a_task_family_selects_its_methods_variants_included():
    from bench.registry import METHODS

    retrieval = METHODS.select("retrieval")
    classification = METHODS.select("classification")
    assert "align_clip" in retrieval and "align_unialign_r_2m" in retrieval  # variants resolve to their class
    assert "late_fusion" in classification and "mla_no_hgm" in classification
    assert not set(retrieval) & set(classification)
    assert sorted(retrieval + classification) == sorted(METHODS.select("all"))
