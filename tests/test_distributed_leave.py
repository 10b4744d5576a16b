"""The end of a launched command: every process waits for the others (so none exits while the main process
writes), and the CLI leaves the group as the command ends; after an error, no barrier that could never be
matched."""
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


def test_a_finished_analysis_waits_for_everyone(one_process_group, barriers):
    assert distributed.end_together(2, lambda: "written") == "written"
    assert barriers == ["barrier"]


def test_a_failed_analysis_keeps_its_error_without_a_barrier(one_process_group, barriers):
    def work():
        raise ValueError("bad corpus")

    with pytest.raises(ValueError, match="bad corpus"):
        distributed.end_together(2, work)
    assert barriers == []


def test_one_process_needs_no_barrier(barriers):
    assert distributed.end_together(1, lambda: 3) == 3
    assert barriers == []


def test_the_cli_leaves_the_group_as_a_command_ends(one_process_group, capsys):
    from guidetune.cli import main

    assert main(["ls"]) == 0
    assert not dist.is_initialized()


def test_the_cli_leaves_the_group_after_an_error_too(one_process_group, capsys):
    from guidetune.cli import main

    assert main(["validate", "--quick", "/nope.yaml"]) == 2
    assert not dist.is_initialized()
