"""Training with N processes: torch DistributedDataParallel launched through `torchrun`.

The parent (the Prefect flow, which owns the registry and the audit log) stays the orchestrator. A
training task that is asked for N > 1 processes writes a job spec (`job.json`) into a job folder and runs

    python -m torch.distributed.run --standalone --nproc_per_node N -m tasks.distributed <job folder>

Every worker joins the process group (gloo on CPU, NCCL on CUDA), runs the stage's own training loop
with its `Ranks` (each rank takes its share of every global batch; gradients are averaged by DDP), and
rank 0 alone writes the model, the checkpoints and `result.json`, which the parent reads back into the
stage's result type. Workers never open the registry. A failed worker leaves `error-<rank>.json`; the
parent turns the first one into a one-line error naming the rank and the worker log.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import BadInputError, StewardError, exception_line

if TYPE_CHECKING:
    import torch

    from tasks.data import TextTable
    from tasks.modeling import Device

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
LOG_FILE = "workers.log"
ERROR_PREFIX = "error-"
# The stage modules a job can name; each has `run_job(job: dict, ranks: Ranks) -> dict` (the result as JSON).
STAGE_MODULES = {"finetune": "tasks.finetune", "pretrain": "tasks.pretrain"}

T = TypeVar("T")


class WorkerFailedError(StewardError):
    """A training worker failed; carries the worker's exit code (a Steward error's own, else 1)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Ranks:
    """This process's place in a training run; the default is the single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of a global batch: every world_size-th item, starting at its rank."""
        return list(items[self.rank :: self.world_size])

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed element-wise over every rank (itself when there is one process)."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(values)
        return values

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, module: torch.nn.Module, device: Device) -> torch.nn.Module:
        """The module DDP-wrapped (gradients averaged over ranks in backward) when there are several ranks."""
        if self.world_size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.torch_device.index] if device.torch_device.type == "cuda" else None
        return DistributedDataParallel(
            module, device_ids=device_ids, broadcast_buffers=False, gradient_as_bucket_view=True
        )


SINGLE_PROCESS = Ranks()


def table_to_json(table: TextTable) -> dict[str, Any]:
    return {**asdict(table), "source": str(table.source)}


def table_from_json(data: dict[str, Any]) -> TextTable:
    from tasks.data import TextTable

    return TextTable(**{**data, "source": Path(data["source"])})


def require_batch_per_rank(batch_size: int, nproc: int, section: str) -> None:
    """Each rank takes batch_size / nproc examples of every global batch, so it needs at least one."""
    if batch_size < nproc:
        raise BadInputError(
            f"{section}.batch_size {batch_size} is smaller than --nproc {nproc}: each process needs at least "
            "one example of every batch"
        )


def launch(stage: str, job: dict[str, Any], nproc: int, job_dir: Path) -> dict[str, Any]:
    """Run `stage` on `nproc` torchrun workers and return rank 0's result; the job folder is removed on
    success and kept (with the worker log) on failure. Raises `WorkerFailedError` naming the first failure."""
    if job_dir.exists():
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    (job_dir / JOB_FILE).write_text(json.dumps({"stage": stage, "job": job}))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "tasks.distributed", str(job_dir),
    ]
    sys.stderr.write(f"  {stage}: {nproc} processes (torchrun), worker log {job_dir / LOG_FILE}\n")
    with (job_dir / LOG_FILE).open("wb") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_worker_environment(nproc))
    if finished.returncode != 0 or not (job_dir / RESULT_FILE).is_file():
        raise launch_failure(stage, job_dir, finished.returncode)
    result = json.loads((job_dir / RESULT_FILE).read_text())
    shutil.rmtree(job_dir, ignore_errors=True)
    return result


def _worker_environment(nproc: int) -> dict[str, str]:
    """The parent's environment, with the machine's cores split between the workers (torchrun would
    otherwise pin every worker to one thread)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    environment.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    return environment


def launch_failure(stage: str, job_dir: Path, returncode: int) -> WorkerFailedError:
    """The one-line error of a failed launch: the first worker's own record, else torchrun's reason."""
    log = job_dir / LOG_FILE
    errors = sorted(job_dir.glob(f"{ERROR_PREFIX}*.json"), key=lambda path: path.stat().st_mtime_ns)
    if not errors:
        return WorkerFailedError(
            f"{stage} failed: torchrun exited with code {returncode}: {_last_line(log)} (log: {log})"
        )
    first = json.loads(errors[0].read_text())  # the earliest: the others often just lost their peer
    return WorkerFailedError(
        f"{stage} failed in worker rank {first['rank']}: {first['error']} (log: {log})", first["exit_code"]
    )


def _last_line(log: Path) -> str:
    """torchrun's own reason when it failed before any worker could say: its root-cause rank and exit code
    (with the signal), and a C++ abort message if a worker printed one; else the log's last line."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip().strip("=-")]
    aborts = [line for line in lines if line.startswith("terminate called")]
    if "Root Cause (first observed failure):" in lines:
        cause = lines[lines.index("Root Cause (first observed failure):") + 1 :]
        fields = [line for line in cause if line.split(":")[0].strip() in ("rank", "exitcode")][:2]
        return "; ".join(" ".join(field.split()) for field in aborts[:1] + fields)
    return lines[-1] if lines else "no output"


def _join_process_group() -> Ranks:
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return ranks


def _run_worker(job_dir: Path) -> int:
    """One worker: join the group, run the stage, leave the group. A failure at any of the three leaves
    `error-<rank>.json` (rank from torchrun's environment, which holds before the group exists)."""
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    try:
        ranks = _join_process_group()
        try:
            spec = json.loads((job_dir / JOB_FILE).read_text())
            result = importlib.import_module(STAGE_MODULES[spec["stage"]]).run_job(spec["job"], ranks)
            if ranks.is_main:
                (job_dir / RESULT_FILE).write_text(json.dumps(result))
        finally:
            dist.destroy_process_group()
        return 0
    except Exception as exc:
        traceback.print_exc()
        record = {"rank": rank, "error": exception_line(exc), "exit_code": getattr(exc, "exit_code", 1)}
        (job_dir / f"{ERROR_PREFIX}{rank}.json").write_text(json.dumps(record))
        return 1


def _exit_without_teardown(code: int) -> None:
    """Leave at once once the work and its files are done: on a loaded machine, interpreter teardown after
    the process group is gone can abort in C++ ("terminate called without an active exception", SIGABRT)
    while gloo's threads wind down, which torchrun reports as a failed run although every file was written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_without_teardown(_run_worker(Path(sys.argv[1])))
