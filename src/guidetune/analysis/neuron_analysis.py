"""The ``neurons`` analysis: run :mod:`.neurons` over a corpus for one model or several, write tables and plots.

Outputs in ``out``: ``summary.json``; per model ``neurons_<model>.csv`` (one row per neuron) and
``stats_<model>.npz`` (the raw counters); ``top_<concept>.csv``/``.md`` (the baseline's top neurons by
KT-score, with each compared model's KT-score for the same neuron ids); ``firing_rates.png``
(histogram of sentence firing rates per model) and, when comparing, ``comparison.png``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import GuidetuneError
from ..runs import atomic_write
from . import ANALYSES
from .common import batched, load_any, read_corpus, save_fig, save_npz
from .neurons import Keywords, activation_name, collect, skipped_ids, concept_scores, ffn_layer, summarize, top_neurons

log = logging.getLogger(__name__)
BUILTIN_CORPUS = "guidetune:corpus/topics.txt"
BUILTIN_CONCEPTS = "guidetune:corpus/concepts.yaml"


def read_concepts(path: str) -> dict[str, list[str]]:
    from ..tasks.base import data_path

    p = data_path(path, "--concepts")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise GuidetuneError(f"--concepts: YAML syntax error in {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise GuidetuneError(f"--concepts: {p} must map concept names to keyword lists")
    return {str(k): [str(w) for w in v] for k, v in data.items()}


@ANALYSES.register("neurons")
@dataclass
class NeuronAnalysis:
    """FFN neuron firing statistics, dead neurons, topic (KT-score) neurons; models compared by neuron id."""

    models: list[str] = field(default_factory=lambda: ["minilm"], metadata={"help": "models or runs; first = baseline"})
    corpus: str = field(default=BUILTIN_CORPUS, metadata={"help": "text file or JSONL (text field)"})
    concepts: str = field(default=BUILTIN_CONCEPTS, metadata={"help": "YAML {concept: [keywords]}"})
    layer: str = field(default="encoder.middle.ffn.act", metadata={"help": "an *.ffn.act layer"})
    threshold: float = 0.0
    quantile: float | None = field(default=None, metadata={"help": "per-neuron quantile threshold (GELU)"})
    calibration: int = 200
    sentence_fraction: float = 0.0
    general_rate: float = 0.5
    consistent_in: float = 0.5
    consistent_out: float = 0.1
    top_k: int = 10
    min_support: int = 3
    text_field: str = "text"
    skip_tokens: str = field(default="special", metadata={
        "help": "tokens not counted besides padding: special (BOS/EOS/CLS/SEP), none, or a comma-separated list"})
    batch_size: int = 64
    max_length: int = 128
    out: str = "analysis/neurons"
    trust_remote_code: bool = field(default=False, metadata={"help": "run code shipped with a model (unsafe)"})
    allow_pickle: bool = field(default=False, metadata={"help": "allow pickled weights (unsafe)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    dtype: str | None = field(default=None, metadata={"help": "float32 | bfloat16 | float16 (default: float32)"})
    device_map: str | None = field(default=None, metadata={"help": "'auto': spread a large model (accelerate)"})

    def __post_init__(self):
        from ..spec import check, finish

        e: list[str] = []
        check(e, self.quantile is None or 0 < self.quantile < 1, f"--quantile: must be in (0, 1), got {self.quantile}")
        check(e, 0 <= self.sentence_fraction <= 1,
              f"--sentence-fraction: must be in [0, 1], got {self.sentence_fraction}")
        for name in ("top_k", "batch_size", "calibration", "max_length"):
            check(e, getattr(self, name) > 0, f"--{name.replace('_', '-')}: must be > 0, got {getattr(self, name)}")
        finish(e)

    def run(self) -> dict:
        """Write the analysis to ``out`` as one output set (temp directory renamed into place, manifest last)."""
        from ..devices import resolve_device
        from ..distributed import end_together, process_group
        from ..runs import describe_input, output_set
        from ..tasks.base import data_path

        rank, world = process_group(resolve_device(self.device))

        def work():
            inputs = {"models": [describe_input(m) for m in self.models], "layer": self.layer,
                      "corpus": {"path": self.corpus, **describe_input(data_path(self.corpus, "--corpus"))},
                      "concepts": {"path": self.concepts,
                                   **describe_input(data_path(self.concepts, "--concepts"))}}
            with output_set(self.out, inputs, enabled=rank == 0) as out:
                return self._run(out)

        return end_together(world, work)

    def _run(self, out: Path) -> dict:
        from ..devices import resolve_device
        from ..distributed import process_group

        keywords = Keywords(read_concepts(self.concepts))
        rank, world = process_group(resolve_device(self.device))
        main = rank == 0
        results, scores_by, names, shapes = {}, {}, [], []
        from ..models import resolve_name
        from ..runs import RunDir

        for ref in self.models:  # every model named is loadable before the first one is scanned
            if RunDir(ref).exists():
                from ..experiment import check_run

                check_run(ref, self.trust_remote_code, self.allow_pickle)
            else:
                resolve_name(ref)
        for ref in self.models:
            label, model, tok = load_any(ref, trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle,
                                         device=self.device, dtype=self.dtype, device_map=self.device_map)
            layer = ffn_layer(model, self.layer)
            texts = (t for _, t, _ in read_corpus(self.corpus, self.text_field))
            counters, thr = collect(model, tok, batched(texts, self.batch_size), layer, keywords,
                                    threshold=self.threshold, quantile=self.quantile, calibration=self.calibration,
                                    sentence_fraction=self.sentence_fraction, max_length=self.max_length,
                                    skip_tokens=self.skip_tokens,
                                    rank=rank, world=world)
            shapes.append((ref, type(model).__name__, layer, counters.n))
            if len({(s[2], s[3]) for s in shapes}) > 1:
                raise GuidetuneError(f"--compare: models must share the architecture; {shapes[0][0]} has "
                                     f"{shapes[0][3]} neurons at {shapes[0][2]}, {ref} has {counters.n} at {layer}")
            label = _unique(label, names)
            names.append(label)
            summary = summarize(counters, self.general_rate)
            scores = concept_scores(counters, self.consistent_in, self.consistent_out)
            summary["consistent_neurons"] = {c: int(s["consistent"].sum()) for c, s in scores.items()}
            summary["activation"] = _check_activation(model, self.threshold, self.quantile)
            summary["skipped_tokens"] = tok.convert_ids_to_tokens(skipped_ids(tok, self.skip_tokens))
            summary["layer"], summary["threshold"] = layer, ("quantile %.3f" % self.quantile if self.quantile
                                                             is not None else self.threshold)
            results[label], scores_by[label] = summary, scores
            if main:  # every process holds the reduced totals; one writes them
                save_npz(out / f"stats_{_safe(label)}.npz", thresholds=thr, **counters.arrays())
                self._neuron_csv(out / f"neurons_{_safe(label)}.csv", counters, scores)
        base = names[0]
        top = {c: top_neurons(scores_by[base], c, self.top_k, self.min_support) for c in keywords.names}
        payload = {"produced_by": self._provenance(), "models": results, "top_neurons": top,
                   "kt_of_top": {c: {m: [float(scores_by[m][c]["kt"][i]) for i in ids] for m in names}
                                 for c, ids in top.items()}}
        if world > 1:
            payload["processes"] = world  # the corpus was split over this many processes and the counts reduced
        if main:
            for concept, ids in top.items():
                self._top_tables(out, concept, ids, names, scores_by)
            self._plots(out, names, results, scores_by, top)
            atomic_write(out / "summary.json", json.dumps(payload, indent=1))
        else:
            payload["rank"] = rank  # not written: tells the command line this process does not print
        return payload

    def _provenance(self) -> dict:
        """Which layer, threshold, corpus (path + hash) and token policy produced these numbers."""
        from ..runs import describe_input
        from ..tasks.base import data_path

        return {"layer": self.layer, "threshold": self.threshold, "quantile": self.quantile,
                "sentence_fraction": self.sentence_fraction, "skip_tokens": self.skip_tokens,
                "corpus": {"path": self.corpus, **describe_input(data_path(self.corpus, "--corpus"))},
                "concepts": {"path": self.concepts, **describe_input(data_path(self.concepts, "--concepts"))}}

    def _neuron_csv(self, path: Path, c, scores) -> None:
        s = max(c.sentences, 1)
        head = ["neuron", "token_rate", "sentence_rate", "mean_act", "max_act"]
        for name in scores:
            head += [f"{name}_kt", f"{name}_recall", f"{name}_consistent"]
        rows = [",".join(head)]
        tf, sf, asum, amax = (x.numpy() for x in (c.token_fires, c.sentence_fires, c.act_sum, c.act_max))
        for i in range(c.n):
            cells = [str(i), f"{tf[i] / max(c.tokens, 1):.5f}", f"{sf[i] / s:.5f}", f"{asum[i] / max(c.tokens, 1):.5f}",
                     f"{amax[i]:.4f}"]
            for sc in scores.values():
                cells += [f"{sc['kt'][i]:.4f}", f"{sc['recall'][i]:.4f}", str(int(sc["consistent"][i]))]
            rows.append(",".join(cells))
        atomic_write(path, "\n".join(rows) + "\n")

    def _top_tables(self, out: Path, concept: str, ids: list[int], names: list[str], scores_by: dict) -> None:
        base = scores_by[names[0]][concept]
        head = ["neuron", "n", "recall", "consistent"] + [f"KT {m}" for m in names]
        csv = [",".join(head)]
        md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i in ids:
            cells = [str(i), str(int(base["n"][i])), f"{base['recall'][i]:.3f}", "yes" if base["consistent"][i] else "no"]
            cells += [f"{scores_by[m][concept]['kt'][i]:.3f}" for m in names]
            csv.append(",".join(cells))
            md.append("| " + " | ".join(cells) + " |")
        atomic_write(out / f"top_{_safe(concept)}.csv", "\n".join(csv) + "\n")
        atomic_write(out / f"top_{_safe(concept)}.md", "\n".join(md) + "\n")

    def _plots(self, out: Path, names, results, scores_by, top) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for m in names:
            stats = np.load(out / f"stats_{_safe(m)}.npz")
            rate = stats["sentence_fires"] / max(int(stats["sentences"]), 1)
            ax.hist(rate, bins=40, range=(0, 1), histtype="step", label=f"{m} (dead {results[m]['dead_fraction']:.1%})")
        ax.set_xlabel("fraction of sentences the neuron fires on")
        ax.set_ylabel("neurons (count)")
        ax.set_title(f"firing rates at {results[names[0]]['layer']}", fontsize=9)
        ax.legend(fontsize=7, title="model (dead fraction)", title_fontsize=7)
        save_fig(fig, out / "firing_rates.png")
        if len(names) < 2:
            return
        concepts = list(top)
        fig, axes = plt.subplots(1, len(concepts) + 1, figsize=(3.6 * (len(concepts) + 1), 3.4), squeeze=False)
        ax = axes[0][0]
        ax.bar(range(len(names)), [results[m]["dead_fraction"] for m in names])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title("dead-neuron fraction", fontsize=9)
        ax.set_ylabel("fraction of neurons")
        for ax, c in zip(axes[0][1:], concepts):
            kt = [np.mean([scores_by[m][c]["kt"][i] for i in top[c]]) if top[c] else 0 for m in names]
            ax.bar(range(len(names)), kt)
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
            ax.set_title(f"mean KT of top {c} neurons", fontsize=9)
            ax.set_ylabel("KT-score (mean over the baseline's top neurons)", fontsize=7)
        save_fig(fig, out / "comparison.png")


def _check_activation(model, threshold: float, quantile: float | None) -> str | None:
    """The model's FFN activation; warns when a fixed threshold of 0 meets a non-ReLU activation."""
    act = activation_name(model)
    if quantile is None and threshold == 0 and act is not None and "relu" not in act.lower():
        log.warning("threshold 0 with a %s activation: %s outputs are rarely exactly 0, so nearly every neuron "
                    "'fires'; use --quantile (e.g. 0.9) or a positive --threshold", act, act)
    return act


def _unique(label: str, taken: list[str]) -> str:
    n, new = 1, label
    while new in taken:
        n += 1
        new = f"{label}-{n}"
    return new


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
