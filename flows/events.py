"""The Prefect events Steward emits, and the resource they are about (deployment triggers match on both)."""

from __future__ import annotations

from governance.records import AliasMove

DRIFT_EVENT = "steward.drift.detected"  # a drift check asks for a retrain
MODEL_PROMOTED_EVENT = "steward.model.promoted"  # an alias moved: promote, rollback or the gate's own move


def model_resource_id(model_name: str) -> str:
    """The Prefect event resource a model's events are about."""
    return f"steward.model.{model_name}"


def announce_alias_move(move: AliasMove) -> None:
    """`steward.model.promoted` for an alias move, when a Prefect API is there to take it (a command run
    without a Prefect server or flow run has nobody listening, and starting one for an event would not pay)."""
    from prefect.context import FlowRunContext
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    if FlowRunContext.get() is None and not PREFECT_API_URL.value():
        return
    emit_event(
        event=MODEL_PROMOTED_EVENT,
        resource={"prefect.resource.id": model_resource_id(move.model_name),
                  "prefect.resource.name": move.model_name},
        payload={"model": move.model_name, "alias": move.alias, "version": move.version,
                 "previous_version": move.previous_version, "action": move.action, "actor": move.actor},
    )
