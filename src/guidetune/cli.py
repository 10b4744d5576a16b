"""Command line: ``guidetune train | eval | ls | validate | demo`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .devices import add_device_args
from .errors import ConfigError, GuidetuneError


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on the current ``sys.stderr`` at each record (as logging's own last-resort handler)."""

    def __init__(self):
        logging.Handler.__init__(self)  # not StreamHandler's, which would bind one stream for good

    @property
    def stream(self):
        return sys.stderr


def _setup_logging(verbose: bool) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():
        # Progress bars (tqdm: the Trainer's, the analyses') redraw ten times a second; in a log file
        # each redraw is a line. Not on a terminal, draw at most one every 30 s (and the last one).
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    # The handler writes to whatever sys.stderr is when a record is emitted, not to the stream of the first
    # call: a notebook, or a test that captures stderr and then closes its capture, must not leave the root
    # logger writing into a closed file. Only our own handler is replaced on a second main(): other
    # libraries' handlers are left alone, not closed -- logging.basicConfig(force=True) closes them, and
    # absl's handler (imported through rouge-score) then closes the stream it was created with, which
    # may be the caller's sys.stderr of that time.
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("guidetune").setLevel(logging.INFO)
    level = "info" if verbose else "error"
    if "transformers" in sys.modules:  # else the variable sets it on import, without importing it now
        import transformers

        transformers.logging.set_verbosity(getattr(transformers.logging, level.upper()))
    else:
        os.environ["TRANSFORMERS_VERBOSITY"] = level


def cmd_train(a) -> int:
    from .config import load_config
    from .experiment import run_training

    cfg = load_config(a.config, a.overrides)
    if a.allow_pickle:
        cfg.model.allow_pickle = True
    results = run_training(cfg, resume=a.resume, rerun_changed=a.rerun_changed)
    print(_format_metrics(cfg.name, results))
    return 0


def cmd_eval(a) -> int:
    from .experiment import evaluate_run

    if a.task:
        from .task_eval import evaluate_model

        res = evaluate_model(a.run_dir, a.task, a.data, a.fields, a.out, a.batch_size, device=a.device, dtype=a.dtype,
                             trust_remote_code=a.trust_remote_code, allow_pickle=a.allow_pickle)
        for key, entry in res["tasks"].items():
            print(_format_metrics(f"{a.run_dir} / {key}", entry))
        print(f"written: {res['out']}/results.json (+ predictions_*.jsonl)")
        return 0
    if a.data or a.fields or a.out:
        raise GuidetuneError("eval: --data, --fields and --out go with --task (e.g. --task multiple_choice --data x.csv)")
    metrics = evaluate_run(a.run_dir, a.batch_size, trust_remote_code=a.trust_remote_code, allow_pickle=a.allow_pickle,
                           device=a.device, dtype=a.dtype)
    print(_format_metrics(a.run_dir, {"metrics": metrics}))
    return 0


def _format_metrics(title: str, results: dict) -> str:
    m = results.get("metrics", {})
    return f"{title}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())


def cmd_validate(a) -> int:
    from .validate import validate_file

    errors = validate_file(a.config, a.overrides, quick=a.quick)
    if errors:
        raise ConfigError(errors)
    print(f"{a.config}: OK" + (" (--quick: model, tokenizer, data and layer names not checked)" if a.quick else ""))
    return 0


def cmd_ls(a) -> int:
    from .listing import list_layers, list_registry, list_all

    if a.what is None:
        print(list_all())
    elif a.what == "layers":
        if not a.model:
            raise GuidetuneError("ls layers: give a model, e.g. guidetune ls layers minilm")
        if a.verify:
            from .listing import verify_layers

            text, ok = verify_layers(a.model, a.head, a.trust_remote_code)
            print(text)
            return 0 if ok else 1
        print(list_layers(a.model, a.head, a.trust_remote_code))
    elif a.what == "models":
        from .listing import list_models

        print(list_models(a.fisher))
    else:
        print(list_registry(a.what))
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo

    run_demo(a.output_dir, a.which)
    return 0


def cmd_sweep(a) -> int:
    from .sweep import run_sweep

    seeds = None
    if a.seeds is not None:
        try:
            seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
        except ValueError:
            raise ConfigError([f"--seeds: expected comma-separated integers such as 0,1,2, got '{a.seeds}'"])
    from .sweep_exec import parse_slurm_options

    out = run_sweep(a.sweep, dry_run=a.dry_run, seeds=seeds, rerun_changed=a.rerun_changed, workers=a.workers,
                    launcher=a.launcher, slurm=parse_slurm_options(a.slurm))
    if not a.dry_run:
        print((out / "summary.md").read_text())
        print(f"written: {out}/summary.md, summary.csv, runs.csv, summary.png")
    return 0


def cmd_report(a) -> int:
    from .report import write_report

    path = write_report(a.run_dirs, a.out)
    print(f"written: {path}")
    return 0


def cmd_compare(a) -> int:
    from .compare import run_compare

    _, md = run_compare(a.runs, a.vs, a.out, a.metrics)
    print(md)
    if a.out:
        print(f"written: {a.out}/ (compare.md, compare.csv, compare.html)")
    return 0


def cmd_analyze_attention(a) -> int:
    from .analysis.attention import AttentionAnalysis

    res = AttentionAnalysis(models=a.models, corpus=a.corpus, sentence=a.sentence, token_set=a.token_set,
                            layers=a.layers, text_field=a.text_field, batch_size=a.batch_size, out=a.out,
                            trust_remote_code=a.trust_remote_code, allow_pickle=a.allow_pickle,
                            device=a.device, dtype=a.dtype).run()
    if "mass" in res:
        print((Path(a.out) / "attention_mass.md").read_text())
    print(f"written: {a.out}/ (attention.json" + (", attention_mass.csv/.md/.png" if "mass" in res else "")
          + (", head_view.html, heads_*.png" if "head_view" in res else "") + ")")
    return 0


def cmd_analyze_neurons(a) -> int:
    from .analysis.neuron_analysis import BUILTIN_CONCEPTS, BUILTIN_CORPUS, NeuronAnalysis

    res = NeuronAnalysis(models=[a.model] + (a.compare or []), corpus=a.corpus or BUILTIN_CORPUS,
                         concepts=a.concepts or BUILTIN_CONCEPTS, layer=a.layer, threshold=a.threshold,
                         quantile=a.quantile, sentence_fraction=a.sentence_fraction, top_k=a.top_k,
                         text_field=a.text_field, batch_size=a.batch_size, out=a.out, skip_tokens=a.skip_tokens,
                         trust_remote_code=a.trust_remote_code, allow_pickle=a.allow_pickle,
                         device=a.device, dtype=a.dtype, device_map=a.device_map).run()
    if res.get("rank", 0):
        return 0  # several processes: the main one prints
    for name, s in res["models"].items():
        print(f"{name}: {s['layer']}, {s['sentences']} sentences, dead {s['dead_fraction']:.2%}, "
              f"general {s['general_neurons']}, consistent {s['consistent_neurons']}")
    for concept in res["top_neurons"]:
        print(f"\ntop {concept} neurons:\n" + (Path(a.out) / f"top_{concept}.md").read_text())
    print(f"written: {a.out}/ (summary.json, neurons_*.csv, top_*.csv/.md, firing_rates.png"
          + (", comparison.png)" if a.compare else ")"))
    if a.ablate_top:
        from .analysis.ablate_cmd import ablate_concepts

        print("\n" + ablate_concepts(a) + f"written: {a.out}/ablation/ (ablation.md, ablation_<concept>.json/.md)")
    return 0


def cmd_analyze_ablate(a) -> int:
    from .analysis.ablate_cmd import markdown, run_ablate

    res = run_ablate(a)
    print(markdown(res) + f"written: {a.out}/ (ablation.json, ablation.md)")
    return 0


def _check_fisher_args(a) -> None:
    """Command-line values checked before any model or data is loaded (the estimate can take hours)."""
    errors = []
    if a.fraction is not None and not 0 < a.fraction <= 1:
        errors.append(f"--fraction: must be in (0, 1], got {a.fraction}")
    for name in ("max_samples", "batch_size", "max_length"):
        value = getattr(a, name, None)
        if value is not None and value < 1:
            errors.append(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
    if a.reliability:
        try:
            fracs = [float(x) for x in a.reliability.split(",")]
        except ValueError:
            fracs = None
        if not fracs or not all(0 < f <= 1 for f in fracs):
            errors.append(f"--reliability: expected comma-separated fractions in (0, 1] such as 0.1,0.5,1, "
                          f"got '{a.reliability}'")
    out = Path(a.out)
    if out.is_dir():
        errors.append(f"--out: '{out}' is a directory; give a file name such as {out / 'fisher.safetensors'}")
    blocker = next((p for p in out.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        errors.append(f"--out: cannot write '{out}': '{blocker}' is a file, not a directory")
    if errors:
        raise ConfigError(errors)


def cmd_fisher(a) -> int:
    from .analysis.fisher_cmd import run_fisher

    _check_fisher_args(a)
    res = run_fisher(a)
    if res.get("rank", 0) != 0:
        return 0
    print(f"Fisher from {res['n']} samples written: {res['out']} (+ {Path(res['out']).with_suffix('.json').name})")
    if "plot" in res:
        print(f"plot: {res['plot']}")
    if "reliability" in res:
        print((Path(a.out).with_name(Path(a.out).stem + "_reliability.md")).read_text())
    return 0


def cmd_analyze_landscape(a) -> int:
    from .analysis.landscape import Landscape

    info = Landscape(model=a.model, config=a.config, fisher=a.fisher, mask=a.mask, k=a.k, population=a.population,
                     dims=a.dims, steps=a.steps, range=a.range, batches=a.batches, seed=a.seed, out=a.out,
                     trust_remote_code=a.trust_remote_code, allow_pickle=a.allow_pickle,
                     device=a.device, dtype=a.dtype).run()
    print(f"loss at the centre {info['center_loss']:.4f}, max {info['max_loss']:.4f}; perturbed "
          f"{info['perturbed']:,} entries ({info['kept_fraction']:.2%} of parameters); written: {a.out}/ (landscape.npz, .json, PNGs)")
    return 0


def _trust_flags(p: argparse.ArgumentParser) -> None:
    """The only way to let a loaded model or run directory run code: the loader's own command line."""
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run Python code shipped with a model or run directory (only if you trust who made it)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled model weights (unsafe)")


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (``error: guidetune eval: argument --batch-size: ...``)."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="guidetune", description="Interpretability-guided fine-tuning of transformers.")
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fine-tune as a config file says", description="Fine-tune as CONFIG says; "
                       "key=value overrides change fields (train.lr=1e-4, regularizers.0.weight=0).")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="key=value overrides")
    t.add_argument("--resume", action="store_true", help="continue the run from its last complete checkpoint")
    t.add_argument("--allow-pickle", action="store_true", help="allow pickled model weights (unsafe)")
    t.add_argument("--rerun-changed", action="store_true",
                   help="if the run exists with another configuration or data, delete it and train again")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run, or any model on any task (no training)",
                       description="guidetune eval RUN_DIR: the run's model on its task (results.json 'eval'). "
                       "guidetune eval MODEL_OR_RUN --task TASK [--data FILE]: any model (HF directory, hub id, "
                       "minilm, or a run) on tasks; writes results.json and predictions_*.jsonl to --out.")
    e.add_argument("run_dir", metavar="MODEL_OR_RUN")
    e.add_argument("--task", action="append", help="task name, task YAML or experiment config (repeatable)")
    e.add_argument("--data", action="append", help="evaluation file: one for all tasks, or one per --task ('-': the task's own)")
    e.add_argument("--fields", help="field mapping, e.g. prompt=input,classes=options,answer_index=label")
    e.add_argument("--out", help="output directory (default: evals/<model>, or <run>/evals)")
    e.add_argument("--batch-size", type=int, default=None)
    _trust_flags(e)
    add_device_args(e)
    e.set_defaults(fn=cmd_eval)

    v = sub.add_parser("validate", help="check a config, reporting every error at once")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*")
    v.add_argument("--quick", action="store_true",
                   help="schema, plug-in parameters, file paths and output_dir only: no model config, tokenizer or "
                        "data is read (about a second; the full check rejects everything train would)")
    v.set_defaults(fn=cmd_validate)

    ls = sub.add_parser("ls", help="list regularizers, tasks, analyses, or a model's layers",
                        description="guidetune ls [regularizers|tasks|analyses|models|layers MODEL [--verify]]")
    ls.add_argument("what", nargs="?", choices=["regularizers", "tasks", "analyses", "models", "layers"])
    ls.add_argument("model", nargs="?", help="for 'layers': model directory, hub id or alias")
    ls.add_argument("--head", default="encoder", help="head to load for 'layers' (default: bare model)")
    ls.add_argument("--trust-remote-code", action="store_true")
    ls.add_argument("--verify", action="store_true",
                    help="for 'layers': compare every canonical tensor with eager attention / hidden states; "
                         "exit 1 on any difference")
    ls.add_argument("--fisher", action="store_true",
                    help="for 'models': check Fisher's per-sample rules on a tiny model of each type")
    ls.set_defaults(fn=cmd_ls)

    sw = sub.add_parser("sweep", help="base config x variants x grid x seeds; resumable; summary tables",
                        description="Run every configuration of SWEEP (see guidetune.sweep for the format), "
                        "skipping finished runs, then write summary.csv/.md/.png.")
    sw.add_argument("sweep")
    sw.add_argument("--dry-run", action="store_true", help="validate and list the runs without training")
    sw.add_argument("--seeds", help="comma-separated seeds replacing the file's (e.g. 0,1 first, all later)")
    sw.add_argument("--rerun-changed", action="store_true",
                    help="run again the runs made with another configuration or data (else: stop and list them)")
    sw.add_argument("--workers", type=int, default=1, help="runs at once on this machine, each in its own process "
                    "with its own GPU (CUDA_VISIBLE_DEVICES) or share of the CPU cores (default 1)")
    sw.add_argument("--launcher", default="local", choices=["local", "slurm"],
                    help="slurm: one SLURM job per run through submitit (pip install guidetune[slurm])")
    sw.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                    help="submitit SlurmExecutor parameter for --launcher slurm, e.g. time=120 (minutes), "
                    "partition=gpu, gpus_per_node=1, cpus_per_task=8 (repeatable)")
    sw.set_defaults(fn=cmd_sweep)

    rp = sub.add_parser("report", help="one self-contained HTML report over run directories")
    rp.add_argument("run_dirs", nargs="+")
    rp.add_argument("--out", default="report.html")
    rp.set_defaults(fn=cmd_report)

    cm = sub.add_parser("compare", help="differences between variants: 95%% intervals, seed test, Holm",
                        description="Per metric: A - B with a paired bootstrap interval over the test items "
                        "(from predictions.jsonl) and across seeds, a permutation test over seeds, Holm over the table.")
    cm.add_argument("runs", nargs="+", help="run directories of variant A (one per seed)")
    cm.add_argument("--vs", nargs="+", required=True, help="run directories of variant B")
    cm.add_argument("--metrics", nargs="+", help="metrics to compare (default: every metric all runs report)")
    cm.add_argument("--out", help="directory for compare.md/.csv/.html")
    cm.set_defaults(fn=cmd_compare)

    fi = sub.add_parser("fisher", help="diagonal empirical Fisher of a model on a data sub-sample",
                        description="Per-sample gradients in batches; streaming; saves per-parameter Fisher "
                        "(safetensors) and per-tensor / per-layer / per-dropout-site aggregates (JSON).")
    fi.add_argument("model")
    fi.add_argument("--data", help="text lines (mlm/clm) or JSONL/CSV (seq2seq: source/target; "
                    "task: text/label, read by the classification task as in training)")
    fi.add_argument("--task", help="task YAML (a task mapping, or a config's task:): samples built as training "
                    "builds them (GLUE directories, text pairs, regression)")
    fi.add_argument("--objective", help="mlm | clm | seq2seq | task (default with --task: the task's)")
    fi.add_argument("--text-pair-field", help="second text column (pairs, with token type ids as in training)")
    fi.add_argument("--fields", help="field mapping NAME=COLUMN,... (e.g. text=sentence1,text_pair=sentence2)")
    fi.add_argument("--regression", action="store_true", help="real-valued labels (squared error, as STS-B)")
    fi.add_argument("--device-map", help="'auto': accelerate spreads a model too large for one device")
    fi.add_argument("--fraction", type=float, default=None, help="seeded sub-sample fraction (default 1.0)")
    fi.add_argument("--max-samples", type=int, default=None)
    fi.add_argument("--out", default="fisher.safetensors")
    fi.add_argument("--plot", action="store_true", help="per-layer distribution PNG next to --out")
    fi.add_argument("--reliability", help="comma-separated fractions compared to the reference (seed Table 1)")
    fi.add_argument("--reference", type=float, help="reference fraction (default: the largest)")
    fi.add_argument("--seed", type=int, default=0)
    fi.add_argument("--batch-size", type=int, default=32)
    fi.add_argument("--max-length", type=int, default=128)
    fi.add_argument("--text-field", default="text")
    fi.add_argument("--label-field", default="label")
    fi.add_argument("--trust-remote-code", action="store_true")
    add_device_args(fi)
    fi.set_defaults(fn=cmd_fisher)

    an = sub.add_parser("analyze", help="analyses: attention, neurons, landscape")
    asub = an.add_subparsers(dest="analysis", required=True)
    at = asub.add_parser("attention", help="attention mass on a token set per layer/head; one sentence's heads",
                         description="Models or run directories side by side (the first is the baseline).")
    at.add_argument("models", nargs="+")
    at.add_argument("--corpus", help="text file (one sentence a line) or JSONL")
    at.add_argument("--sentence", help="one sentence: per-head heatmaps and an HTML head view")
    at.add_argument("--token-set", default="negation", help="negation | order | addition | emphasis | word file")
    at.add_argument("--layers", nargs="+", help="attention sites (default: all self-attention)")
    at.add_argument("--text-field", default="text")
    at.add_argument("--batch-size", type=int, default=32)
    at.add_argument("--out", default="analysis/attention")
    _trust_flags(at)
    add_device_args(at)
    at.set_defaults(fn=cmd_analyze_attention)

    ne = asub.add_parser("neurons", help="FFN neuron firing, dead neurons, topic (KT-score) neurons",
                         description="Neuron statistics of one *.ffn.act layer over a corpus (streamed); "
                         "--compare adds models or runs of the same architecture (matched by neuron id).")
    ne.add_argument("model")
    ne.add_argument("--compare", nargs="+", help="fine-tuned models or run directories")
    ne.add_argument("--corpus", help="text file or JSONL (default: the built-in topic corpus)")
    ne.add_argument("--concepts", help="YAML {concept: [keywords]} (default: the built-in concepts)")
    ne.add_argument("--layer", default="encoder.middle.ffn.act")
    ne.add_argument("--threshold", type=float, default=0.0, help="fires when activation > this (ReLU: 0)")
    ne.add_argument("--quantile", type=float, help="per-neuron quantile threshold instead (GELU models)")
    ne.add_argument("--sentence-fraction", type=float, default=0.0,
                    help="fires on a sentence when on >= this fraction of its tokens (0: any token)")
    ne.add_argument("--top-k", type=int, default=10)
    ne.add_argument("--text-field", default="text")
    ne.add_argument("--skip-tokens", default="special", help="tokens not counted besides padding: special "
                    "(BOS/EOS/CLS/SEP; [UNK] counts), none, or a comma-separated list such as [CLS],[SEP],[UNK]")
    ne.add_argument("--batch-size", type=int, default=64)
    ne.add_argument("--out", default="analysis/neurons")
    _trust_flags(ne)
    add_device_args(ne)
    ne.add_argument("--device-map", choices=["auto"], help="spread a model too large for one GPU "
                    "over the GPUs and the CPU (accelerate); model names/paths only")
    ne.add_argument("--ablate-top", type=int, default=0, metavar="K",
                    help="per concept, ablate its top-K neurons vs K random ones (causal check; see analyze ablate)")
    ne.add_argument("--ablate-method", default="zero", choices=["zero", "mean", "resample"])
    ne.add_argument("--draws", type=int, default=20, help="random-neuron control draws for --ablate-top")
    ne.set_defaults(fn=cmd_analyze_neurons)

    ab = asub.add_parser("ablate", help="knock out neurons, heads or block outputs; metrics vs a random control",
                         description="Replace units (zero | mean | resample) and report every metric before and "
                         "after, against --draws draws of as many random units of the same layer (each draw is "
                         "one more evaluation).")
    ab.add_argument("model", help="a run directory (its own task) or a model name/path")
    ab.add_argument("--units", required=True, help="e.g. encoder.layers.3.ffn.act:12,45 | encoder.layers.2.attn:0,1 | "
                    "@analysis/neurons:top10:STEM | @RUN:guided | encoder.layers.3; join several with ';'")
    ab.add_argument("--task", help="experiment config (YAML) whose task is evaluated, or 'corpus' (default: the "
                    "run's task; for a model: corpus)")
    ab.add_argument("--method", default="zero", choices=["zero", "mean", "resample"])
    ab.add_argument("--draws", type=int, default=20, help="random-unit control draws (0: no control)")
    ab.add_argument("--reference", help="corpus for mean/resample values (default: the built-in topic corpus)")
    ab.add_argument("--corpus", help="--task corpus: sentences measured (default: the built-in topic corpus)")
    ab.add_argument("--concepts", help="--task corpus: YAML {concept: [keywords]} (default: built-in)")
    ab.add_argument("--text-field", default="text")
    ab.add_argument("--batch-size", type=int, default=32)
    ab.add_argument("--seed", type=int, default=0)
    ab.add_argument("--out", default="analysis/ablate")
    _trust_flags(ab)
    add_device_args(ab)
    ab.set_defaults(fn=cmd_analyze_ablate)

    la = asub.add_parser("landscape", help="1-D/2-D loss surface along filter-normalised directions",
                         description="Li et al. 2018 directions restricted to all parameters, the top/bottom k%% "
                         "by Fisher, or k%% at random (control).")
    la.add_argument("model", help="a run directory, or a model name/path (then --config)")
    la.add_argument("--config", help="experiment config giving the task and data")
    la.add_argument("--fisher", help="Fisher file (for --mask top/bottom)")
    la.add_argument("--mask", default="all", choices=["all", "top", "bottom", "random"])
    la.add_argument("--k", type=float, default=5.0, help="percent of the population perturbed by the mask")
    la.add_argument("--population", default="all", choices=["all", "nonzero"],
                    help="k%% of all weight-matrix entries, or of those with Fisher > 0 (the data touches them)")
    la.add_argument("--dims", type=int, default=2, choices=[1, 2])
    la.add_argument("--steps", type=int, default=11)
    la.add_argument("--range", type=float, default=1.0)
    la.add_argument("--batches", type=int, default=4)
    la.add_argument("--seed", type=int, default=0)
    la.add_argument("--out", default="analysis/landscape")
    _trust_flags(la)
    add_device_args(la)
    la.set_defaults(fn=cmd_analyze_landscape)

    d = sub.add_parser("demo", help="the packaged demo on MiniLM (plain vs. regularized)",
                       description="belief: SpARC on the built-in mini belief bank (adapter, + L1, + L1 + "
                       "contrastive); sentiment: full fine-tuning with and without L1.")
    d.add_argument("--output-dir", default="runs/demo")
    d.add_argument("--which", choices=["belief", "sentiment"], default="belief")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _setup_logging(args.verbose)
    from .distributed import launched_world, leave

    try:
        rc = _run(args)
    finally:
        ended = leave()  # under torchrun / accelerate launch: the process group ends with the command
    if ended and launched_world() > 1:
        _exit_launched(rc)
    return rc


def _run(args) -> int:
    try:
        return args.fn(args)
    except GuidetuneError as e:
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `guidetune ls layers M | head`: the reader left; no traceback, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own exit flush fails otherwise
        return 141


def _exit_launched(rc: int) -> None:
    """End a launched process here: the exit handlers run (W&B's finish, logging's flush, ...) and the
    streams are flushed, but not the interpreter's own teardown. Why: a library imported after the
    process group was joined can keep references to it (DeepSpeed; and torch._dynamo, which guidetune
    imports first for that reason), so leaving the group does not always stop gloo's worker threads; one
    of them that drops a finished collective's tensors while the interpreter tears itself down aborts the
    process ("terminate called without an active exception"), and the launcher then reports the command
    as failed and stops the other processes."""
    import atexit
    import contextlib

    atexit._run_exitfuncs()  # what a normal exit runs first; CPython's, as torch requires CPython
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing left to flush
            stream.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
