"""``guidetune analyze landscape``: loss along filter-normalised random directions, masked by Fisher rank.

Directions follow Li et al. 2018 ("Visualizing the Loss Landscape of Neural Nets"): a Gaussian direction
d, rescaled filter by filter (each output row of a weight matrix, each embedding row) to the norm of the
same filter of the weights; one-dimensional parameters (biases, norms) get no perturbation. The
direction is then restricted by a mask: ``all`` parameters, the ``top`` or ``bottom`` k% by empirical
Fisher (a ``guidetune fisher`` file of this model), or k% chosen at ``random`` (the control), k% of a
population that is all weight-matrix entries or only those with Fisher > 0 (see :func:`fisher_mask`). The loss
is the task loss of the model at theta + a d1 (+ b d2), averaged over a fixed set of batches.
Outputs: ``landscape.npz`` (the grid, so plots can be redrawn), ``landscape.json`` and PNGs (1-D: line;
2-D: contour and surface).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import GuidetuneError
from ..layers.names import unwrap
from ..runs import atomic_write
from ..spec import check, finish
from . import ANALYSES
from .common import save_fig, save_npz


def filter_normalised(params: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction with every filter scaled to the norm of the weights' filter (biases: 0)."""
    out = {}
    for n, p in params.items():
        if p.dim() <= 1:
            out[n] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        rows_p = p.reshape(p.shape[0], -1).norm(dim=1, keepdim=True)
        rows_d = d.reshape(d.shape[0], -1).norm(dim=1, keepdim=True).clamp_min(1e-12)
        out[n] = (d.reshape(d.shape[0], -1) * rows_p / rows_d).reshape(p.shape)
    return out


def fisher_mask(params: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor] | None, kind: str, k: float,
                gen: torch.Generator, population: str = "all") -> dict[str, torch.Tensor]:
    """Boolean masks selecting exactly k% of the *population*: the top / bottom k% by Fisher, or k% at random.

    The population is every entry of the matrices the directions move (parameters with >= 2 dimensions;
    biases and norms get no perturbation, so they are never counted), and with ``population="nonzero"``
    only entries with Fisher > 0: the ones the data touches. Unused embedding rows have Fisher exactly 0 --
    for MiniLM on short questions about half of all parameters -- so without it a bottom-k% mask is a
    set of rows no input uses, and its surface is flat by construction. Ties are broken in a seeded random
    order, so the mask always holds exactly k% (rounded down, at least one entry).
    """
    names = list(params)
    movable = {n: params[n].dim() >= 2 for n in names}
    if kind == "all":
        return {n: torch.full_like(params[n], movable[n], dtype=torch.bool) for n in names}
    if kind in ("top", "bottom") and fisher is None:
        raise GuidetuneError(f"--mask {kind}: needs --fisher (a guidetune fisher file of this model)")
    if population == "nonzero" and fisher is None:
        raise GuidetuneError("--population nonzero: needs --fisher (a guidetune fisher file of this model)")
    sizes = [params[n].numel() for n in names]
    member = torch.cat([torch.full((size,), movable[n]) for n, size in zip(names, sizes)])
    if population == "nonzero":
        member &= torch.cat([fisher[n].flatten() > 0 for n in names])
    idx = member.nonzero().flatten()
    if idx.numel() == 0:
        raise GuidetuneError(f"--mask {kind}: no parameter in the population '{population}'")
    m = max(1, int(idx.numel() * k / 100))
    perm = idx[torch.randperm(idx.numel(), generator=gen)]  # random order first: ties fall randomly
    if kind == "random":
        chosen = perm[:m]
    else:
        values = torch.cat([fisher[n].flatten().float() for n in names])[perm]
        chosen = perm[torch.topk(values, m, largest=kind == "top").indices]
    flat = torch.zeros(member.numel(), dtype=torch.bool)
    flat[chosen] = True
    return {n: part.view_as(params[n]) for n, part in zip(names, flat.split(sizes))}


@ANALYSES.register("landscape")
@dataclass
class Landscape:
    """1-D / 2-D loss surfaces around a model along filter-normalised directions, masked by Fisher rank."""

    model: str = field(default="", metadata={"help": "a run directory, or a model (then give config)"})
    config: str | None = field(default=None, metadata={"help": "experiment config naming the task and data"})
    fisher: str | None = field(default=None, metadata={"help": "Fisher file for the top/bottom masks"})
    mask: Literal["all", "top", "bottom", "random"] = "all"
    k: float = field(default=5.0, metadata={"help": "percent of the population the mask keeps"})
    population: Literal["all", "nonzero"] = field(default="all", metadata={
        "help": "entries the k% is taken from: all weight-matrix entries, or those with Fisher > 0"})
    dims: Literal[1, 2] = 2
    steps: int = 11
    range: float = 1.0
    batches: int = 4
    split: Literal["train", "eval"] = "eval"
    seed: int = 0
    out: str = "analysis/landscape"
    trust_remote_code: bool = field(default=False, metadata={"help": "run code shipped with a model (unsafe)"})
    allow_pickle: bool = field(default=False, metadata={"help": "allow pickled weights (unsafe)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    dtype: str | None = field(default=None, metadata={"help": "float32 | bfloat16 | float16 (default: float32)"})

    def __post_init__(self):
        e: list[str] = []
        check(e, bool(self.model), "model: give a run directory or a model")
        check(e, 0 < self.k <= 100, f"k: must be in (0, 100], got {self.k}")
        check(e, self.steps >= 3, f"steps: must be >= 3, got {self.steps}")
        check(e, self.range > 0, f"range: must be > 0, got {self.range}")
        finish(e)

    def _load(self):
        from ..config import load_config
        from ..experiment import load_run, prepare
        from ..runs import RunDir

        if RunDir(self.model).exists():
            _, task, model, _ = load_run(self.model, trust_remote_code=self.trust_remote_code,
                                         allow_pickle=self.allow_pickle)
            return task, model
        if not self.config:
            raise GuidetuneError("analyze landscape: a model name needs --config (an experiment file with its task)")
        cfg = load_config(self.config, [f"model.name={self.model}", f"model.trust_remote_code={self.trust_remote_code}",
                                        f"model.allow_pickle={self.allow_pickle}"])
        task, model, _ = prepare(cfg)
        return task, model

    def run(self) -> dict:
        """Compute the surface and write it to ``out`` as one output set (temp directory renamed, manifest last)."""
        from ..runs import describe_input, output_set

        inputs = {"model": describe_input(self.model), "config": describe_input(self.config) if self.config else None,
                  "fisher": describe_input(self.fisher) if self.fisher else None}
        with output_set(self.out, inputs) as out:
            return self._run(out)

    @torch.no_grad()
    def _run(self, out: Path) -> dict:
        from ..tasks.base import strip_extras

        from ..devices import place, to_device

        task, model = self._load()
        model, dev = place(model, self.device, self.dtype)
        model.eval()
        feats = task.dataset(self.split)
        bs = 16
        batches = [to_device(strip_extras(task.collate(feats[i:i + bs]))[0], dev)
                   for i in range(0, min(len(feats), bs * self.batches), bs)]
        hf = unwrap(model)
        params = {n: p for n, p in hf.named_parameters() if p.dtype.is_floating_point}
        fisher = None
        if self.fisher:
            from .fisher_estimate import load

            fisher, _ = load(self.fisher, model)
        gen = torch.Generator().manual_seed(self.seed)
        # Directions and masks are drawn on the CPU in float32 (the same on every device), then moved.
        base = {n: p.detach().float().cpu() for n, p in params.items()}
        masks = fisher_mask(base, fisher, self.mask, self.k, gen, self.population)
        dirs = []
        for _ in range(self.dims):
            d = filter_normalised(base, gen)
            dirs.append({n: (d[n] * masks[n]).to(params[n].device, params[n].dtype) for n in d})
        base = {n: p.detach().clone() for n, p in params.items()}
        alphas = np.linspace(-self.range, self.range, self.steps)
        grid_shape = (self.steps,) * self.dims
        loss = np.zeros(grid_shape)
        try:
            for idx in np.ndindex(*grid_shape):
                coeff = [alphas[i] for i in idx]
                for n, p in params.items():
                    p.copy_(base[n] + sum(c * d[n] for c, d in zip(coeff, dirs)))
                loss[idx] = np.mean([float(model(**b).loss) for b in batches])
        finally:
            for n, p in params.items():
                p.copy_(base[n])
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        save_npz(out / "landscape.npz", alphas=alphas, loss=loss, dims=np.array(self.dims))
        info = {"model": self.model, "mask": self.mask, "k": self.k, "population": self.population,
                "perturbed": kept, "kept_fraction": kept / total,
                "dims": self.dims, "steps": self.steps, "range": self.range, "center_loss": float(loss[(self.steps // 2,) * self.dims]),
                "max_loss": float(loss.max()), "batches": len(batches)}
        atomic_write(out / "landscape.json", json.dumps(info, indent=1))
        self._plot(out, alphas, loss, info)
        return info

    def _plot(self, out: Path, alphas, loss, info) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        title = (f"{Path(str(info['model'])).name or info['model']}: mask {info['mask']}"
                 + (f" {info['k']:g}%" if info["mask"] != "all" else ""))
        if self.dims == 1:
            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.plot(alphas, loss, marker=".")
            ax.set_xlabel("alpha (step along the filter-normalised direction)")
            ax.set_ylabel(f"task loss on {self.split} batches (nats)")
            ax.set_title(title, fontsize=9)
            save_fig(fig, out / "landscape_1d.png")
            return
        a, b = np.meshgrid(alphas, alphas, indexing="ij")
        fig, ax = plt.subplots(figsize=(4.8, 4))
        cs = ax.contourf(a, b, loss, levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax, label=f"task loss on {self.split} batches (nats)")
        ax.set_xlabel("alpha (direction 1)")
        ax.set_ylabel("beta (direction 2)")
        ax.set_title(title, fontsize=9)
        save_fig(fig, out / "landscape_contour.png")
        fig = plt.figure(figsize=(5.5, 4.5))
        ax = fig.add_subplot(projection="3d")
        surf = ax.plot_surface(a, b, loss, cmap="viridis")
        ax.set_xlabel("alpha")
        ax.set_ylabel("beta")
        ax.set_zlabel("loss (nats)")
        fig.colorbar(surf, ax=ax, shrink=0.6, label="task loss (nats)")
        ax.set_title(title, fontsize=9)
        save_fig(fig, out / "landscape_surface.png")
