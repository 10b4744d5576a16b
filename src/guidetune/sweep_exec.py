"""Where a sweep's runs execute: in this process, in N local worker processes, or as SLURM jobs (submitit).

``guidetune sweep FILE --workers N`` runs N runs at once, each in its own process from a
``concurrent.futures`` pool: on a GPU machine every worker sees one GPU through ``CUDA_VISIBLE_DEVICES``
(round-robin when there are more workers than GPUs); on CPUs each gets an equal share of the cores
(``OMP_NUM_THREADS`` and ``torch.set_num_threads``). ``--launcher slurm`` submits every run as a SLURM job
through submitit (``pip install guidetune[slurm]``) and waits for them. Either way a run is the ordinary
``run_training`` of its resolved config, so it writes its own checkpoints: a worker or job killed
mid-run leaves a resumable run directory, and re-running the same sweep command continues it. The sweep
writes its summaries only after every run finished.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .errors import GuidetuneError

log = logging.getLogger(__name__)
LAUNCHERS = ("local", "slurm")
SUBMITIT_HINT = "--launcher slurm needs submitit: pip install guidetune[slurm]"


def check_workers(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise GuidetuneError(f"--workers: must be an integer >= 1 (runs at once), got {workers!r}")
    return workers


def check_launcher(workers, launcher: str) -> None:
    """The one-line errors of ``--workers`` and ``--launcher``, raised before a sweep starts anything."""
    check_workers(workers)
    if launcher not in LAUNCHERS:
        raise GuidetuneError(f"--launcher: '{launcher}' is not a launcher; allowed: {', '.join(LAUNCHERS)}")
    if launcher == "slurm":
        _submitit()


def _submitit():
    # On import, submitit configures logging with dictConfig, which shuts down every logging handler of the
    # process (logging.config clears existing handlers): the CLI's and other libraries' -- absl's (imported
    # through rouge-score) then closes the stream it was created with. NOCONFIG, submitit's own switch,
    # leaves logging alone; its records reach the root logger's handler instead. A user's setting is kept.
    if "submitit" not in sys.modules:
        os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    try:
        import submitit
    except ImportError:
        raise GuidetuneError(SUBMITIT_HINT) from None
    return submitit


def run_one(config: dict, source: str | None, resume: bool, rerun_changed: bool, threads: int | None = None) -> str:
    """One sweep run in this process (a pool worker, a SLURM job, or the sweep itself); returns its directory."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .config import parse_config
    from .experiment import run_training

    cfg = parse_config(config, source=source)
    run_training(cfg, resume=resume, rerun_changed=rerun_changed)
    return str(cfg.run_dir)


def _init_worker(slots, threads: int | None) -> None:
    """Pool initializer, before torch is imported in the worker: its GPU or its share of the CPU threads."""
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[key] = str(threads)


def plan_resources(workers: int) -> tuple[list, int | None]:
    """(GPU id per worker slot or None, CPU threads per worker or None)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        return [i % gpus for i in range(workers)], None
    return [None] * workers, max(1, (os.cpu_count() or 1) // workers)


def execute(jobs: list[tuple], workers: int = 1, launcher: str = "local", folder: str | Path | None = None,
            slurm: dict | None = None, cluster: str | None = None) -> None:
    """Run ``jobs`` (tuples ``(config dict, source, resume, rerun_changed)``); raise once all have ended
    if any failed. ``cluster`` (Python API): submitit's executor kind, "slurm" (default), "local" or "debug"."""
    check_launcher(workers, launcher)
    if launcher == "slurm":
        return _slurm(jobs, folder, slurm or {}, cluster or "slurm")
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            run_one(*job)
        return None
    return _pool(jobs, workers)


def _start_method(gpus: list) -> str:
    """How pool workers start. With GPUs: ``spawn``, a fresh interpreter (CUDA state cannot cross a fork).
    On Linux CPUs: ``fork``, so that each worker starts with torch, transformers and
    guidetune already imported instead of spending seconds importing them again -- as PyTorch's own
    DataLoader workers do. The parent has run no torch operation yet (no OpenMP pool to inherit); each
    worker sets its own thread count before its run."""
    if any(g is not None for g in gpus) or not sys.platform.startswith("linux"):
        return "spawn"  # (macOS: fork after system frameworks are loaded is unsafe, Python's default is spawn)
    from . import experiment  # noqa: F401  (imported once here, inherited by every forked worker)

    return "fork"


def _slots(manager, gpus: list):
    """A queue each pool worker takes its GPU id (or None) from, once, when it starts."""
    q = manager.Queue()
    for g in gpus:
        q.put(g)
    return q


def _pool(jobs: list[tuple], workers: int) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    workers = min(workers, len(jobs))
    gpus, threads = plan_resources(workers)
    ctx = mp.get_context(_start_method(gpus))
    failed: list[str] = []
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                       initargs=(_slots(manager, gpus), threads)) as pool:
        futures = {pool.submit(run_one, *job, threads): job for job in jobs}
        for fut in as_completed(futures):
            name = futures[fut][0]["name"]
            try:
                fut.result()
                print(f"sweep: {name} finished", flush=True)
            except BrokenProcessPool:
                failed.append(f"{name}: its worker process died")
            except Exception as e:  # noqa: BLE001 -- reported below, after every run has ended
                failed.append(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    _raise_failed(failed, len(jobs))


def _slurm(jobs: list[tuple], folder, params: dict, cluster: str) -> None:
    import shutil

    submitit = _submitit()
    folder = Path(folder or ".") / ".submitit"
    if cluster == "slurm":
        if shutil.which("sbatch") is None:
            raise GuidetuneError("--launcher slurm: no SLURM here (sbatch not found); run the sweep on the cluster's "
                                 "login node, or use --workers N for local parallel runs")
        executor = submitit.SlurmExecutor(folder=str(folder))
        executor.update_parameters(job_name="guidetune", **params)
    elif cluster == "local":  # submitit's stand-ins, for tests and dry runs of a cluster set-up
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=int(params.get("timeout_min", params.get("time", 60 * 24))))
    else:
        executor = submitit.DebugExecutor(folder=str(folder))
    submitted = [(job[0]["name"], executor.submit(run_one, *job)) for job in jobs]
    print(f"sweep: submitted {len(submitted)} job(s) to submitit {cluster} (logs in {folder}); waiting", flush=True)
    failed = []
    for name, job in submitted:
        try:
            job.result()
            print(f"sweep: {name} finished (job {job.job_id})", flush=True)
        except Exception as e:  # noqa: BLE001 -- submitit re-raises the job's error (or its death)
            failed.append(f"{name} (job {job.job_id}): {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
    _raise_failed(failed, len(jobs))


def _raise_failed(failed: list[str], total: int) -> None:
    if failed:
        raise GuidetuneError(f"sweep: {len(failed)} of {total} run(s) failed ({'; '.join(failed[:3])}"
                             f"{'; ...' if len(failed) > 3 else ''}); no summary written. Finished runs are kept "
                             "and killed ones resume: run the same sweep command again")


def parse_slurm_options(items: list[str] | None) -> dict:
    """``--slurm key=value`` pairs for submitit's SlurmExecutor (time=120 [minutes], partition=gpu,
    gpus_per_node=1, cpus_per_task=8, mem=32G, ...)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GuidetuneError(f"--slurm: expected key=value such as timeout_min=120, got '{item}'")
        out[key.strip()] = yaml.safe_load(value)
    return out
