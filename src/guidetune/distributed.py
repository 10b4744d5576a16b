"""Several processes for the analyses: which share of the data is this process's, and who writes.

``torchrun --nproc_per_node N -m guidetune.cli analyze neurons ...`` and ``accelerate launch -m
guidetune.cli ...`` start N copies of the command; :func:`process_group` joins them through accelerate
(NCCL on GPUs, gloo on CPUs), each process takes every N-th batch, the totals are all-reduced, and only
the main process (rank 0) writes files. Launched plainly, it is one process and nothing changes.
"""
from __future__ import annotations

import os


def launched_world() -> int:
    """Number of processes the launcher started (1 when not launched by torchrun/accelerate/MPI)."""
    for key in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1


def process_group(device=None) -> tuple[int, int]:
    """(rank, world size) of this process, joining the process group when there are several.

    ``device``: the resolved device the model runs on; a CPU device means gloo even on a GPU machine."""
    if launched_world() <= 1:
        return 0, 1
    import torch
    from accelerate import PartialState

    before_joining()
    cpu = not torch.cuda.is_available() or (device is not None and getattr(device, "type", str(device)) == "cpu")
    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes


def before_joining() -> None:
    """Import ``torch._dynamo`` before this process joins a process group (when launched with several).

    Why: imported after the group exists (transformers imports it when it loads a model), dynamo keeps
    about ten references to the default group (torch 2.13), so ``destroy_process_group`` cannot free the
    gloo backend and its worker threads live on until the interpreter shuts down. A worker that drops a
    finished collective's tensors at that moment needs the GIL and aborts the whole process ("terminate
    called without an active exception", SIGABRT: twice on CI in a two-process neuron scan; 3 of 14
    launches of a minimal script here, core dump read with gdb), and the launcher reports the command as
    failed. Imported first, it holds none and the group ends cleanly (the launched-process tests check
    that no gloo thread is left)."""
    if launched_world() > 1:
        import torch._dynamo  # noqa: F401


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def end_together(world: int, work):
    """``work()``; with several processes and when it returned, then a barrier, so that no process returns
    (and exits) while the main one is still writing the output set.

    Why: when any process fails, the launcher stops the others with SIGTERM; a process that had finished
    and failed at exit (see :func:`before_joining`) stopped the main one while it still wrote its files.
    Ending together, the processes only exit once every output is written. After an error, no barrier:
    the others may be inside a collective that will never match, and the launcher stops them anyway."""
    result = work()
    if world > 1:
        barrier()
    return result


def leave() -> bool:
    """Leave the process group, if this process joined one; True if it did (the CLI calls it as a command
    ends; scripts using the API under a launcher call ``torch.distributed.destroy_process_group()``
    themselves). A process that exits with its gloo group alive can abort at exit. Imports nothing new."""
    import sys

    ended = False
    ds = sys.modules.get("deepspeed.comm")
    if ds is not None and ds.is_initialized():
        # DeepSpeed's own: it also drops the references DeepSpeed keeps to its groups (not all of them in
        # DeepSpeed 0.19.8: one gloo group lives on, which is why the CLI then skips the shutdown)
        ds.destroy_process_group()
        ended = True
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        ended = True
    return ended
