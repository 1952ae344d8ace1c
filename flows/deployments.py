"""The deployments `steward serve` keeps running: retraining on its cron schedule and on drift events,
monitoring on its cron schedule, and signed anchors of the audit chain on theirs (when configured).

Every deployment allows one run at a time. A run that would overlap a running one is cancelled rather
than queued, so an hourly monitor that keeps reporting drift cannot pile up retrains behind a slow one.
Cron strings are evaluated in UTC.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Schedule

from core.config import SERVED, StewardConfig
from core.errors import BadInputError
from flows.anchor import anchor_audit
from flows.events import DRIFT_EVENT, model_resource_id
from flows.monitor import monitor
from flows.retrain import retrain
from governance.anchors import load_private_key

ONE_RUN_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


@dataclass(frozen=True)
class ServedDeployments:
    """What `steward serve` serves; `monitor` is None when the config names no `monitoring.current`, `anchor`
    when it sets no `audit.anchor_cron`."""

    retrain: RunnerDeployment
    monitor: RunnerDeployment | None
    anchor: RunnerDeployment | None

    def all(self) -> list[RunnerDeployment]:
        return [deployment for deployment in (self.retrain, self.monitor, self.anchor) if deployment is not None]


def cron_schedule(key: str, cron: str) -> Schedule:
    """The config's cron string as a Prefect schedule; a bad string is a one-line error naming `key`."""
    try:
        return Cron(cron, timezone="UTC", slug=key.replace(".", "-").replace("_", "-"))
    except ValueError:
        raise BadInputError(
            f"key '{key}': '{cron}' is not a cron schedule (five fields: minute hour day month weekday, "
            "for example '0 3 * * 1')"
        ) from None


def retrain_on_drift(model_name: str, parameters: dict[str, Any]) -> DeploymentEventTrigger:
    """Run the retrain deployment whenever the monitor reports drift of this model."""
    return DeploymentEventTrigger(
        name=f"{model_name}-retrain-on-drift",
        description=f"Retrain {model_name} when `steward monitor` detects drift",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": model_resource_id(model_name)},
        parameters=parameters,
    )


def build_deployments(config: StewardConfig, config_path: Path) -> ServedDeployments:
    """The retrain, monitor and anchor deployments of one config (nothing is sent to Prefect here). The registry
    is not a parameter (Prefect shows parameters, a password included): runs resolve it as every command does."""
    name = config.name
    retrain_schedule = cron_schedule("schedule.retrain_cron", config.schedule.retrain_cron)
    monitor_schedule = cron_schedule("schedule.monitor_cron", config.schedule.monitor_cron)
    parameters = {"config_path": str(config_path.resolve())}
    retraining = _deployment(
        retrain, f"{name}-retrain", f"Retrain {name}: on schedule.retrain_cron, and on {DRIFT_EVENT}",
        retrain_schedule, parameters, name, triggers=[retrain_on_drift(name, parameters)],
    )
    monitoring = None
    if config.monitoring.current is not None:
        current = SERVED if config.monitoring.current_is_served else str(config.resolve(config.monitoring.current))
        monitoring = _deployment(
            monitor, f"{name}-monitor", f"Check {name}'s current batch for drift on schedule.monitor_cron",
            monitor_schedule, {**parameters, "current_path": current}, name,
        )
    return ServedDeployments(retraining, monitoring, _anchor_deployment(config, parameters))


def _anchor_deployment(config: StewardConfig, parameters: dict[str, Any]) -> RunnerDeployment | None:
    """Signed anchors on `audit.anchor_cron`; the key is loaded here so a bad one fails at start-up, not hours
    later in a scheduled run."""
    audit = config.audit
    if audit.anchor_cron is None or audit.anchor_key is None:
        return None
    schedule = cron_schedule("audit.anchor_cron", audit.anchor_cron)
    load_private_key(config.resolve(audit.anchor_key))
    return _deployment(
        anchor_audit, f"{config.name}-audit-anchor",
        f"Sign a digest of the audit chain head of {config.name}'s registry on audit.anchor_cron",
        schedule, parameters, config.name,
    )


def _deployment(
    flow: Flow, name: str, description: str, schedule: Schedule, parameters: dict[str, Any], model_name: str,
    triggers: list[DeploymentEventTrigger] | None = None,
) -> RunnerDeployment:
    return flow.to_deployment(
        name=name,
        description=description,
        schedule=schedule,
        concurrency_limit=ONE_RUN_AT_A_TIME,
        parameters=parameters,
        triggers=triggers,
        tags=["steward", model_name],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def require_prefect_server() -> None:
    """Schedules and triggers are evaluated by a Prefect server; a temporary in-process one has neither."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise BadInputError(
            "steward serve needs a Prefect server: run `prefect server start`, then set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )


def serve_until_stopped(deployments: ServedDeployments) -> None:
    """Register the deployments and run their scheduled and triggered runs until SIGINT or SIGTERM.

    Prefect pauses served schedules on shutdown by default, which would silently stop the cron
    schedules of a deployment that a worker or the next `steward serve` could still run; keep them.
    """
    # Prefect 3.8's SIGTERM handler calls the async `Runner.stop` without awaiting it before exiting;
    # the shutdown itself is clean, so its "never awaited" warning would only alarm whoever reads the log.
    warnings.filterwarnings("ignore", message="coroutine 'Runner.astop' was never awaited", category=RuntimeWarning)
    serve(*deployments.all(), pause_on_shutdown=False)
