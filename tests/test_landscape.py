import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from guidetune.analysis.landscape import Landscape, filter_normalised, fisher_mask
from guidetune.cli import main
from guidetune.errors import GuidetuneError


def test_filter_normalisation_and_masks():
    params = {"w": torch.randn(4, 3) * torch.tensor([[1.0], [2.0], [3.0], [4.0]]), "b": torch.randn(4)}
    g = torch.Generator().manual_seed(0)
    d = filter_normalised(params, g)
    torch.testing.assert_close(d["w"].norm(dim=1), params["w"].norm(dim=1))
    assert torch.equal(d["b"], torch.zeros(4))
    params["v"] = torch.randn(2, 2)
    fisher = {"w": torch.arange(12.0).reshape(4, 3), "b": torch.tensor([1e6, 0, 0, 0]),
              "v": torch.tensor([[100.0, 0.0], [0.0, 0.5]])}
    # population: the 16 matrix entries (biases are never moved, so never counted, whatever their Fisher)
    top = fisher_mask(params, fisher, "top", 25, g)  # 4 of 16: 100, 11, 10, 9
    assert not top["b"].any() and top["v"].tolist() == [[True, False], [False, False]]
    assert top["w"].flatten().tolist() == [False] * 9 + [True] * 3
    bottom = fisher_mask(params, fisher, "bottom", 25, g)  # 0, 0, 0, 0.5
    assert bottom["w"].flatten().tolist() == [True] + [False] * 11 and not bottom["b"].any()
    assert bottom["v"].tolist() == [[False, True], [True, True]]
    nz = fisher_mask(params, fisher, "bottom", 25, g, population="nonzero")  # 13 entries > 0 -> 3: 0.5, 1, 2
    assert nz["v"].tolist() == [[False, False], [False, True]] and nz["w"].flatten().tolist()[:3] == [False, True, True]
    assert int(nz["w"].sum()) == 2
    rnd = fisher_mask(params, fisher, "random", 25, g, population="nonzero")
    assert sum(int(m.sum()) for m in rnd.values()) == 3 and all(bool((fisher[n][m] > 0).all()) for n, m in rnd.items())
    # ties: exactly k%, chosen by the seed
    zeros = {"w": torch.zeros(100, 10)}
    picks = [fisher_mask(zeros, zeros, "bottom", 10, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert [int(p["w"].sum()) for p in picks] == [100, 100, 100]
    assert torch.equal(picks[0]["w"], picks[1]["w"]) and not torch.equal(picks[0]["w"], picks[2]["w"])
    rnd = fisher_mask({"w": torch.zeros(100, 10)}, None, "random", 10, g)
    assert int(rnd["w"].sum()) == 100
    with pytest.raises(GuidetuneError, match="--mask top: needs --fisher"):
        fisher_mask(params, None, "top", 5, g)
    with pytest.raises(GuidetuneError, match="--population nonzero: needs --fisher"):
        fisher_mask(params, None, "random", 5, g, population="nonzero")


def test_landscape_of_a_run_1d_and_2d(tmp_path, tiny_dirs, cls_data, capsys):
    cfg = tiny_config(tmp_path, tiny_dirs["bert"], cls_data, name="l", train={"max_steps": 2})
    assert main(["train", str(cfg)]) == 0
    run = str(tmp_path / "runs" / "l")
    info = Landscape(model=run, dims=1, steps=5, batches=1, out=str(tmp_path / "o1")).run()
    grid = np.load(tmp_path / "o1" / "landscape.npz")
    assert grid["loss"].shape == (5,) and info["kept_fraction"] > 0.9
    assert grid["loss"][2] == pytest.approx(info["center_loss"])
    # the centre of the grid is the model itself: its loss on the same batch, untouched afterwards
    assert main(["analyze", "landscape", run, "--steps", "3", "--batches", "1", "--mask", "random", "--k", "10",
                 "--out", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2" / "landscape_contour.png").exists() and (tmp_path / "o2" / "landscape_surface.png").exists()
    info2 = json.loads((tmp_path / "o2" / "landscape.json").read_text())
    assert 0.05 < info2["kept_fraction"] < 0.15 and info2["center_loss"] == pytest.approx(info["center_loss"], rel=1e-5)
