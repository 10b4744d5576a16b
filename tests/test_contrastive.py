import math

import pytest
import torch
import torch.nn.functional as F

from guidetune.config import PluginSpec, build_plugin
from guidetune.errors import GuidetuneError
from guidetune.layers.capture import Captures
from guidetune.regularizers import REGULARIZERS


class FakeCaptures(Captures):
    """Captures holding given tensors, so the loss can be checked against hand-made activations."""

    def __init__(self, acts, mask):
        self._acts, self._attn, self._probs, self._resolved = {"L": acts}, {}, {}, {}
        self.inputs = {"attention_mask": mask}

    def token_mask(self, name):
        return self.inputs["attention_mask"].bool()

    def seq2seq_decoder(self, name):
        return False


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(6, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0],
                         [1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    pair = torch.tensor([0, 0, 1, 1, -1, 2])  # 4 is unpaired; 5 has no partner in the batch
    return acts, mask, pair


def _sim(acts, mask, i, j, how):
    """Brute-force sequence similarity."""
    ti = [acts[i, t] for t in range(acts.shape[1]) if mask[i, t]]
    tj = [acts[j, t] for t in range(acts.shape[1]) if mask[j, t]]
    if how == "pairwise_average":
        return sum(float(F.cosine_similarity(a, b, dim=0)) for a in ti for b in tj) / (len(ti) * len(tj))
    if how == "mean_pool":
        return float(F.cosine_similarity(torch.stack(ti).mean(0), torch.stack(tj).mean(0), dim=0))
    return float(F.cosine_similarity(ti[-1], tj[-1], dim=0))  # last


def _reg(**params):
    r = build_plugin(REGULARIZERS, PluginSpec("contrastive", params))
    r.captured = ["L"]
    return r


@pytest.mark.parametrize("how", ["pairwise_average", "mean_pool", "last"])
def test_paper_form_equals_the_printed_formula(how):
    acts, mask, pair = _data()
    reg = _reg(form="paper", similarity=how, reduction="sum")
    got = float(reg.loss(FakeCaptures(acts, mask), {"gt_pair_id": pair}))
    partner = {0: 1, 1: 0, 2: 3, 3: 2}
    expected = sum(1 - _sim(acts, mask, i, j, how) for i, j in [(0, 1), (2, 3)])
    expected += sum(_sim(acts, mask, i, j, how) for i in partner for j in range(6) if j not in (i, partner[i]))
    assert got == pytest.approx(expected, rel=1e-5)
    reg.reduction = "mean"
    assert float(reg.loss(FakeCaptures(acts, mask), {"gt_pair_id": pair})) == pytest.approx(expected / 4, rel=1e-5)


@pytest.mark.parametrize("how", ["pairwise_average", "mean_pool", "last"])
def test_infonce_form_equals_cross_entropy_over_positive_and_negatives(how):
    acts, mask, pair = _data(1)
    reg = _reg(form="infonce", similarity=how, temperature=0.5)
    got = float(reg.loss(FakeCaptures(acts, mask), {"gt_pair_id": pair}))
    partner = {0: 1, 1: 0, 2: 3, 3: 2}
    losses = []
    for i, p in partner.items():
        logits = [_sim(acts, mask, i, p, how) / 0.5] + [_sim(acts, mask, i, j, how) / 0.5
                                                         for j in range(6) if j not in (i, p)]
        losses.append(-logits[0] + math.log(sum(math.exp(v) for v in logits)))
    assert got == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_queue_adds_earlier_batches_as_negatives():
    acts, mask, pair = _data(2)
    reg = _reg(form="paper", similarity="mean_pool", reduction="sum", queue_size=3)
    first = float(reg.loss(FakeCaptures(acts, mask), {"gt_pair_id": pair}))
    queue = reg._queues["L"]
    assert queue.shape == (3, 8) and not queue.requires_grad
    second = float(reg.loss(FakeCaptures(acts, mask), {"gt_pair_id": pair}))
    e = F.normalize((acts * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    extra = float((e[:4] @ queue.T).sum())  # every anchor against every queued vector
    assert second == pytest.approx(first + extra, rel=1e-5)


def test_no_pairs_in_the_task_is_a_clear_error():
    acts, mask, _ = _data()
    with pytest.raises(GuidetuneError, match="provides no positive pairs"):
        _reg().loss(FakeCaptures(acts, mask), {})


def test_a_batch_without_positives_gives_zero_with_a_graph():
    acts, mask, _ = _data()
    acts.requires_grad_(True)
    value = _reg().loss(FakeCaptures(acts, mask), {"gt_pair_id": torch.full((6,), -1)})
    assert float(value) == 0.0 and value.requires_grad


def test_queue_state_is_saved_with_checkpoints_and_restored(tmp_path):
    from types import SimpleNamespace

    from guidetune.finetune.trainer import CheckpointMarker, Term, load_term_states
    from guidetune.runs import RunDir

    acts, mask, pair = _data(3)
    reg = _reg(queue_size=4)
    reg.loss(FakeCaptures(acts, mask), {"gt_pair_id": pair})
    run = RunDir(tmp_path)
    (run.checkpoints / "checkpoint-7").mkdir(parents=True)
    args = SimpleNamespace(process_index=0, world_size=1)
    CheckpointMarker(run, [Term("contrastive", 1.0, reg)]).on_save(args, SimpleNamespace(
        global_step=7, is_world_process_zero=True), None)
    assert run.last_checkpoint() == run.checkpoints / "checkpoint-7"
    fresh = _reg(queue_size=4)
    load_term_states([Term("contrastive", 1.0, fresh)], run.last_checkpoint(), rank=0)
    assert torch.equal(fresh._queues["L"], reg._queues["L"])
