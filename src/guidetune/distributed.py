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

    cpu = not torch.cuda.is_available() or (device is not None and getattr(device, "type", str(device)) == "cpu")
    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def leave(ok: bool = True) -> None:
    """Leave the process group at the end of a launched analysis.

    ``ok`` (the analysis finished in every process): first wait for every process, so that none tears its
    group down and exits while the main process is still writing the output set. A process that left early
    aborted now and then in the C++ runtime at exit ("terminate called without an active exception", seen
    on CI with the gloo backend), which the launcher reports as a failed run although the files were
    right. After an error no barrier: the other processes may be inside a collective that will never
    match, and the launcher stops them anyway."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def run_and_leave(world: int, work):
    """``work()``, then :func:`leave` when several processes run (with the barrier only if it returned)."""
    if world <= 1:
        return work()
    try:
        result = work()
    except BaseException:
        leave(ok=False)
        raise
    leave()
    return result
