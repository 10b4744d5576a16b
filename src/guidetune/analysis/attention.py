"""``guidetune analyze attention``: where heads look, before and after fine-tuning.

* Corpus mode: for every layer and head, the attention *mass* on a token set -- for each sentence the
  mean over its (non-padding) query positions of the probability on set tokens, averaged over the
  sentences that contain at least one set token. Models side by side (the first is the baseline), as
  a CSV/Markdown table and a heatmap PNG (layer x head, one panel per model plus the difference).
* Sentence mode: every head's attention on one sentence as a PNG grid, and a self-contained HTML head
  view (inline script, no network) to browse models, layers and heads, in the spirit of BertViz.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import GuidetuneError
from ..layers.capture import Capture
from ..layers.names import LayerScheme
from ..patterns import TokenSet
from ..runs import atomic_write
from . import ANALYSES
from ..devices import to_device
from .common import batched, load_any, model_device, read_corpus, save_fig


def default_layers(model) -> list[str]:
    """Self-attention of the encoder (BERT, T5) or of the decoder (GPT-2, LLaMA)."""
    scheme = LayerScheme.from_model(model)
    stack = "encoder" if "encoder" in scheme.counts else "decoder"
    return scheme.expand(f"{stack}.layers.*.attn.probs")


def _forward(model, enc: dict) -> None:
    if getattr(model.config, "is_encoder_decoder", False):
        model.get_encoder()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    else:
        model(**enc)


@torch.no_grad()
def attention_mass(model, tok, texts, token_set: TokenSet, names: list[str], batch_size: int = 32,
                   max_length: int = 128) -> tuple[np.ndarray, int]:
    """([layer, head] mean attention mass on the set, number of sentences counted)."""
    cap = Capture(model, names, detach=True)
    dev = model_device(model)
    sums, count = None, 0
    for chunk in batched(texts, batch_size):
        enc = dict(tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length))
        on_set = token_set.mask(enc["input_ids"]) & enc["attention_mask"].bool()  # [batch, key]
        keep = on_set.any(1)
        if not keep.any():
            continue
        with cap as captures:
            _forward(model, to_device(enc, dev))
        on_set = on_set.to(dev)
        rows = []
        for name in cap.names:
            p = captures[name]  # [batch, head, query, key]
            q_mask = captures.token_mask(name).float()  # [batch, query]
            mass = (p * on_set[:, None, None, :]).sum(-1)  # [batch, head, query]
            rows.append((mass * q_mask[:, None]).sum(-1) / q_mask.sum(-1, keepdim=True).clamp_min(1))
        per_sentence = torch.stack(rows, dim=1).float().cpu()[keep]  # [kept, layer, head]
        sums = per_sentence.sum(0) if sums is None else sums + per_sentence.sum(0)
        count += int(keep.sum())
    if not count:
        raise GuidetuneError(f"--corpus: no sentence contains a word of the token set '{token_set.name}'")
    return (sums / count).numpy(), count


@ANALYSES.register("attention")
@dataclass
class AttentionAnalysis:
    """Attention mass on a token set per layer and head (models side by side), or one sentence's heads."""

    models: list[str] = field(default_factory=lambda: ["minilm"], metadata={"help": "models or runs; first = baseline"})
    corpus: str | None = field(default=None, metadata={"help": "text file (one sentence a line) or JSONL"})
    sentence: str | None = field(default=None, metadata={"help": "one sentence for the head view"})
    token_set: str = field(default="negation", metadata={"help": "built-in set or word-list file"})
    layers: list[str] | None = field(default=None, metadata={"help": "attention sites (default: self-attention)"})
    text_field: str = "text"
    batch_size: int = 32
    max_length: int = 128
    out: str = "analysis/attention"
    trust_remote_code: bool = field(default=False, metadata={"help": "run code shipped with a model (unsafe)"})
    allow_pickle: bool = field(default=False, metadata={"help": "allow pickled weights (unsafe)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    dtype: str | None = field(default=None, metadata={"help": "float32 | bfloat16 | float16 (default: float32)"})

    def run(self) -> dict:
        if not (self.corpus or self.sentence):
            raise GuidetuneError("analyze attention: give --corpus FILE or --sentence TEXT")
        from ..runs import describe_input, output_set
        from ..tasks.base import data_path

        inputs = {"models": [describe_input(m) for m in self.models], "sentence": self.sentence,
                  "token_set": self.token_set, "layers": self.layers}
        if self.corpus:
            inputs["corpus"] = {"path": self.corpus, **describe_input(data_path(self.corpus, "--corpus"))}
        with output_set(self.out, inputs) as out:  # written as a unit: temp directory renamed, manifest last
            return self._run(out)

    def _run(self, out: Path) -> dict:
        loaded = [load_any(m, trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle,
                           device=self.device, dtype=self.dtype) for m in self.models]
        _check_same_shape(loaded)
        result: dict = {"models": [label for label, _, _ in loaded]}
        if self.corpus:
            result["mass"] = self._corpus(loaded, out)
        if self.sentence:
            result["head_view"] = self._sentence(loaded, out)
        atomic_write(out / "attention.json", json.dumps(result, indent=1, default=float))
        return result

    def _corpus(self, loaded, out: Path) -> dict:
        texts = [t for _, t, _ in read_corpus(self.corpus, self.text_field)]
        if not texts:
            raise GuidetuneError(f"--corpus: '{self.corpus}' is empty")
        masses, labels, n = [], [], 0
        for label, model, tok in loaded:
            names = LayerScheme.from_model(model).expand(self.layers) if self.layers else default_layers(model)
            mass, n = attention_mass(model, tok, texts, TokenSet.load(self.token_set, tok), names,
                                     self.batch_size, self.max_length)
            masses.append(mass)
            labels.append(label)
        _write_tables(out, labels, masses, names)
        _heatmaps(out / "attention_mass.png", labels, masses, self.token_set)
        return {"token_set": self.token_set, "sentences": n, "layers": names,
                "per_model": {lab: m.tolist() for lab, m in zip(labels, masses)}}

    @torch.no_grad()
    def _sentence(self, loaded, out: Path) -> str:
        views = {}
        for label, model, tok in loaded:
            names = LayerScheme.from_model(model).expand(self.layers) if self.layers else default_layers(model)
            enc = dict(tok([self.sentence], return_tensors="pt", truncation=True, max_length=self.max_length))
            with Capture(model, names, detach=True) as cap:
                _forward(model, to_device(enc, model_device(model)))
            probs = np.stack([cap[n][0].float().cpu().numpy() for n in names])  # [layer, head, query, key]
            tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
            views[label] = {"tokens": tokens, "layers": names, "attn": np.round(probs, 3).tolist()}
            _head_grid(out / f"heads_{_safe(label)}.png", probs, tokens, label)
            marks = TokenSet.load(self.token_set, tok).mask(enc["input_ids"])[0].tolist()
            views[label]["marked"] = marks
        page = out / "head_view.html"
        atomic_write(page, _HEAD_VIEW.replace("__DATA__", json.dumps(views)).replace(
            "__TITLE__", html.escape(self.sentence)))
        return str(page)


def _check_same_shape(loaded) -> None:
    shapes = {(type(m).__name__, LayerScheme.from_model(m).counts.get("encoder"), LayerScheme.from_model(m).counts.get("decoder"))
              for _, m, _ in loaded}
    if len({s[1:] for s in shapes}) > 1:
        raise GuidetuneError(f"analyze: the models differ in shape ({sorted(shapes)}); compare models of one architecture")


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def _write_tables(out: Path, labels, masses, names) -> None:
    lines = ["layer,head," + ",".join(labels) + (",delta" if len(labels) > 1 else "")]
    md = ["| layer | head | " + " | ".join(labels) + (" | delta |" if len(labels) > 1 else " |"),
          "|" + "---|" * (len(labels) + 2 + (len(labels) > 1))]
    for li, name in enumerate(names):
        for h in range(masses[0].shape[1]):
            vals = [m[li, h] for m in masses]
            extra = [vals[-1] - vals[0]] if len(vals) > 1 else []
            lines.append(f"{name},{h}," + ",".join(f"{v:.4f}" for v in vals + extra))
            md.append(f"| {name} | {h} | " + " | ".join(f"{v:.3f}" for v in vals + extra) + " |")
    atomic_write(out / "attention_mass.csv", "\n".join(lines) + "\n")
    atomic_write(out / "attention_mass.md", "\n".join(md) + "\n")


def _heatmaps(path: Path, labels, masses, set_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(zip(labels, masses))
    if len(masses) > 1:
        panels.append((f"{labels[-1]} - {labels[0]}", masses[-1] - masses[0]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    vmax = max(float(m.max()) for m in masses)
    for ax, (label, m) in zip(axes[0], panels):
        diff = " - " in label
        im = ax.imshow(m, cmap="RdBu_r" if diff else "viridis", aspect="auto",
                       vmin=-abs(m).max() if diff else 0, vmax=abs(m).max() if diff else vmax)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, fraction=0.046, label="difference in mass" if diff else "mean attention mass")
    fig.suptitle(f"attention mass on '{set_name}' tokens (mean over queries and sentences)", fontsize=10)
    save_fig(fig, path)


def _head_grid(path: Path, probs: np.ndarray, tokens: list[str], label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers, n_heads = probs.shape[:2]
    labelled = len(tokens) <= 24  # token labels on the axes of short sentences (else unreadable)
    size = 1.3 if not labelled else max(1.3, 0.13 * len(tokens) + 0.6)
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(size * n_heads + 1, size * n_layers + 0.6), squeeze=False)
    im = None
    for li in range(n_layers):
        for h in range(n_heads):
            ax = axes[li][h]
            im = ax.imshow(probs[li, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(len(tokens)) if labelled and li == n_layers - 1 else [],
                          tokens if labelled and li == n_layers - 1 else [], rotation=90, fontsize=5)
            ax.set_yticks(range(len(tokens)) if labelled and h == 0 else [],
                          tokens if labelled and h == 0 else [], fontsize=5)
            if li == 0:
                ax.set_title(f"head {h}", fontsize=7)
            if h == 0:
                ax.set_ylabel(f"layer {li}\nquery", fontsize=7)
            if li == n_layers - 1:
                ax.set_xlabel("key", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes, fraction=0.02, label="attention probability")
    fig.suptitle(f"{label}: {' '.join(tokens)[:120]}", fontsize=8)
    save_fig(fig, path)


_HEAD_VIEW = """<!doctype html><html><head><meta charset="utf-8"><title>head view: __TITLE__</title>
<style>body{font-family:sans-serif;margin:1.5em}select{margin-right:1em}text{font-size:13px}
.marked{fill:#c0392b;font-weight:bold}</style></head><body>
<h2>Attention head view</h2><p>__TITLE__</p>
<label>model <select id="model"></select></label><label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<p style="color:#666;font-size:12px">Lines go from each query token (left) to the key tokens it attends to
(right); opacity = attention probability. Red tokens belong to the token set.</p>
<svg id="view" width="520" height="600"></svg>
<script>
const DATA = __DATA__;
const $ = id => document.getElementById(id);
const esc = t => String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
function fill(sel, items) { sel.innerHTML = items.map((t, i) => `<option value="${i}">${esc(t)}</option>`).join(""); }
function draw() {
  const v = DATA[$("model").value], L = +$("layer").value, H = +$("head").value;
  const a = v.attn[L][H], toks = v.tokens, svg = $("view"), dy = 22, x1 = 150, x2 = 370;
  svg.setAttribute("height", 30 + dy * toks.length);
  let s = "";
  toks.forEach((t, i) => {
    const cls = v.marked[i] ? "marked" : "";
    s += `<text x="${x1 - 8}" y="${30 + dy * i}" text-anchor="end" class="${cls}">${esc(t)}</text>`;
    s += `<text x="${x2 + 8}" y="${30 + dy * i}" class="${cls}">${esc(t)}</text>`;
  });
  a.forEach((row, q) => row.forEach((p, k) => {
    if (p > 0.01) s += `<line x1="${x1}" y1="${26 + dy * q}" x2="${x2}" y2="${26 + dy * k}" stroke="#2c7fb8" stroke-width="2" stroke-opacity="${p}"/>`;
  }));
  svg.innerHTML = s;
}
function pickModel() {
  const v = DATA[$("model").value];
  fill($("layer"), v.layers); fill($("head"), v.attn[0].map((_, h) => "head " + h)); draw();
}
$("model").innerHTML = Object.keys(DATA).map(k => `<option value="${esc(k)}">${esc(k)}</option>`).join("");
$("model").onchange = pickModel; $("layer").onchange = draw; $("head").onchange = draw; pickModel();
</script></body></html>
"""
