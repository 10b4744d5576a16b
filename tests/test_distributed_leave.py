"""The end of a launched analysis: every process waits for the others (so none exits while the main process
writes) and then leaves the group; after an error, no barrier that could never be matched."""
from __future__ import annotations

import pytest
import torch.distributed as dist

from guidetune import distributed


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.fixture
def barriers(monkeypatch):
    calls = []
    real = dist.barrier
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: (calls.append("barrier"), real(*a, **k))[1])
    return calls


def test_a_finished_analysis_waits_for_everyone_then_leaves(one_process_group, barriers):
    assert distributed.run_and_leave(2, lambda: "written") == "written"
    assert barriers == ["barrier"]
    assert not dist.is_initialized()


def test_a_failed_analysis_leaves_without_a_barrier_and_keeps_its_error(one_process_group, barriers):
    def work():
        raise ValueError("bad corpus")

    with pytest.raises(ValueError, match="bad corpus"):
        distributed.run_and_leave(2, work)
    assert barriers == []
    assert not dist.is_initialized()


def test_one_process_touches_no_group(barriers):
    assert distributed.run_and_leave(1, lambda: 3) == 3
    assert barriers == [] and not dist.is_initialized()
