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
    fisher = {"w": torch.arange(12.0).reshape(4, 3), "b": torch.tensor([100.0, -1, -1, -1])}
    top = fisher_mask(params, fisher, "top", 25, g)  # 4 of 16 values: 100, 11, 10, 9
    assert int(top["b"].sum()) == 1 and top["w"].flatten().tolist()[-3:] == [True, True, True]
    bottom = fisher_mask(params, fisher, "bottom", 25, g)
    assert int(bottom["b"].sum()) == 3 and int(bottom["w"].sum()) == 1
    rnd = fisher_mask({"w": torch.zeros(1000)}, None, "random", 10, g)
    assert 50 < int(rnd["w"].sum()) < 150
    with pytest.raises(GuidetuneError, match="--mask top: needs --fisher"):
        fisher_mask(params, None, "top", 5, g)


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
