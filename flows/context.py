"""What a flow carries from stage to stage: the config, the registry, the run and its folders."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from core.config import StewardConfig, load_config, resolve_registry_url
from core.errors import log as steward_log
from governance.events import StageCompleted, StageFailed, StageResumed, StageStarted
from governance.registry import STALE_RUN_ERROR, Registry, RunRecord

TRACKED_PACKAGES = (
    "steward", "torch", "transformers", "datasets", "accelerate", "safetensors", "great-expectations",
    "evidently", "prefect", "sqlalchemy", "alembic", "pandas", "scikit-learn", "numpy",
)


@dataclass(frozen=True)
class Workspace:
    """The folders a run writes to, all under `<config folder>/.steward/`."""

    root: Path

    @classmethod
    def for_config(cls, config: StewardConfig) -> Workspace:
        return cls(config.workdir / ".steward")

    @property
    def pretrain_cache(self) -> Path:
        return self.root / "cache" / "pretrain"

    @property
    def results(self) -> Path:
        """Prefect's result storage for the tasks it caches (`flows.steps.cached`)."""
        return self.root / "cache" / "prefect-results"

    @contextmanager
    def claimed_work_dir(self, stage: str, run_id: str) -> Iterator[Path]:
        """Where a stage checkpoints: `work/<stage>`, stable across runs so the next run resumes an
        interrupted one. A run that finds it held by another live run (an OS lock, released even by
        kill -9) works in a private folder instead, removed afterwards, so the two never mix checkpoints."""
        shared = self.root / "work" / stage
        shared.parent.mkdir(parents=True, exist_ok=True)
        with (shared.parent / f"{stage}.lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                private = shared.with_name(f"{stage}-{run_id}")
                try:
                    yield private
                finally:
                    shutil.rmtree(private, ignore_errors=True)
                return
            yield shared

    def model_dir(self, model_name: str, run_id: str) -> Path:
        return self.root / "models" / model_name / run_id

    def reports_dir(self, model_name: str) -> Path:
        return self.root / "reports" / model_name


@dataclass(frozen=True)
class RunContext:
    config: StewardConfig
    registry: Registry
    run: RunRecord
    workspace: Workspace

    @property
    def subject(self) -> str:
        """Audit subject of the run's events: the model name, so `audit log NAME` shows them."""
        return self.config.name


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def code_version() -> str:
    """The git commit of the Steward checkout (with '+dirty' for local edits), else its package version."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"steward {metadata.version('steward')}"
    return f"{commit}+dirty" if dirty else commit


def prefect_flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def start_run_context(config: StewardConfig, registry: Registry, kind: str) -> RunContext:
    run = registry.start_run(
        kind=kind,
        model_name=config.name,
        config=config.snapshot(),
        seed=config.seed,
        code_version=code_version(),
        package_versions=package_versions(),
        flow_run_id=prefect_flow_run_id(),
    )
    return RunContext(config, registry, run, Workspace.for_config(config))


def progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


@contextmanager
def stage(context: RunContext, name: str) -> Iterator[None]:
    """Audit events stage_started / stage_completed / stage_failed around one stage of a run."""
    audit, run_id = context.registry.audit, context.run.id
    audit.append(context.subject, StageStarted(run_id, name))
    progress(f"▶ {name}")
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        audit.append(context.subject, StageFailed(run_id, name, str(exc) or type(exc).__name__))
        progress(f"✗ {name} failed after {time.perf_counter() - started:.1f}s")
        raise
    seconds = round(time.perf_counter() - started, 3)
    audit.append(context.subject, StageCompleted(run_id, name, seconds))
    progress(f"✓ {name} ({seconds:.1f}s)")


def audit_resumptions(context: RunContext, positions: dict[str, tuple[str, int | None]]) -> None:
    """A `stage_resumed` event for each stage that continued an interrupted run's checkpoint
    (`positions`: stage → (unit, where it resumed), None when it started from scratch)."""
    for name, (unit, position) in positions.items():
        if position is not None:
            payload = StageResumed(context.run.id, name, **{f"resumed_from_{unit}": position})
            context.registry.audit.append(context.subject, payload)


@contextmanager
def tracked_run(config: StewardConfig, registry: Registry, kind: str) -> Iterator[RunContext]:
    """A registry run that ends completed, or failed with the error when anything raises."""
    context = start_run_context(config, registry, kind)
    try:
        yield context
    except BaseException as exc:
        registry.finish_run(context.run.id, status="failed", error=str(exc) or type(exc).__name__)
        raise
    registry.finish_run(context.run.id, status="completed")


def show_crashed_in_prefect(dead_runs: list[RunRecord]) -> None:
    """Runs whose process died stay 'Running' in Prefect forever; set their flow runs to Crashed.
    Best effort: a flow run this Prefect server does not know (another server's) is left alone."""
    import httpx
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    flow_run_ids = [run.flow_run_id for run in dead_runs if run.flow_run_id]
    if not flow_run_ids:
        return
    with get_client(sync_client=True) as client:
        for flow_run_id in flow_run_ids:
            state = Crashed(message=f"Steward: the run's process died ({STALE_RUN_ERROR}); found by a later run")
            with contextlib.suppress(ObjectNotFound, httpx.HTTPError, ValueError):
                client.set_flow_run_state(flow_run_id, state, force=True)


class _RunLogHandler(logging.Handler):
    """Hands the `steward` logger's records (warnings about the data, say) to the Prefect run's log."""

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        with contextlib.suppress(MissingContextError):
            get_run_logger().log(record.levelno, record.getMessage())


@contextmanager
def opened_registry(config_path: str) -> Iterator[tuple[StewardConfig, Registry]]:
    """The validated config and the registry it resolves to, closed afterwards; meanwhile Steward's own log
    records go to the Prefect run's log too."""
    config = load_config(config_path)
    registry = Registry.open(resolve_registry_url(config))
    show_crashed_in_prefect(registry.runs_found_dead)
    handler = _RunLogHandler()
    steward_log.addHandler(handler)
    try:
        yield config, registry
    finally:
        steward_log.removeHandler(handler)
        registry.close()


@contextmanager
def flow_run(config_path: str, kind: str) -> Iterator[RunContext]:
    """What every single-stage flow starts with: config, registry and a tracked run."""
    with opened_registry(config_path) as (config, registry), tracked_run(config, registry, kind) as run:
        yield run


def prefect_ui_url() -> str | None:
    """The Prefect UI's address when one is configured (PREFECT_UI_URL, or derived from PREFECT_API_URL)."""
    from prefect.settings import PREFECT_UI_URL

    value = PREFECT_UI_URL.value()
    return value.rstrip("/") if value else None
