"""The registry API: one face over a store per concern (``governance.runs``, ``.versions``, ``.aliases``,
``.evaluations``, ``.drift_reports``), all on one database and its audit log (``governance.store``).

Every mutating call runs in one transaction that holds the registry write lock and appends its audit
event on the same connection, so a change and its audit event commit or fail together.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from core.errors import RegistryUnavailableError
from governance.aliases import AliasStore
from governance.audit import AuditLog, ChainVerification
from governance.db import open_migrated
from governance.drift_reports import DriftStore
from governance.evaluations import EvaluationStore
from governance.records import (
    REFERENCE_SAMPLED_FROM_BASE,
    AliasMove,
    ArtifactFileRecord,
    ClassScore,
    CompressedFormIn,
    CompressedFormRecord,
    DatasetRecord,
    DocumentScores,
    DriftReportRecord,
    EvaluationDetailIn,
    EvaluationDetailRecord,
    GateDecisionRecord,
    LanguageModelEvaluationIn,
    LanguageModelEvaluationRecord,
    ModelSummary,
    ModelVersionDetail,
    ModelVersionRecord,
    PromptAnswer,
    ReliabilityBin,
    RunRecord,
    ValidationResultIn,
    ValidationResultRecord,
)
from governance.redact import mask_url
from governance.runs import STALE_RUN_ERROR, RunStore, process_alive, this_host
from governance.versions import VersionStore

__all__ = [
    "REFERENCE_SAMPLED_FROM_BASE",
    "STALE_RUN_ERROR",
    "AliasMove",
    "ArtifactFileRecord",
    "AuditLog",
    "ChainVerification",
    "ClassScore",
    "CompressedFormIn",
    "CompressedFormRecord",
    "DatasetRecord",
    "DocumentScores",
    "DriftReportRecord",
    "EvaluationDetailIn",
    "EvaluationDetailRecord",
    "GateDecisionRecord",
    "LanguageModelEvaluationIn",
    "LanguageModelEvaluationRecord",
    "ModelSummary",
    "ModelVersionDetail",
    "ModelVersionRecord",
    "PromptAnswer",
    "Registry",
    "ReliabilityBin",
    "RunRecord",
    "ValidationResultIn",
    "ValidationResultRecord",
    "mask_url",
    "process_alive",
    "this_host",
]


class Registry(RunStore, VersionStore, AliasStore, EvaluationStore, DriftStore):
    """A handle on one registry database. Open with ``Registry.open(url)``; close when done."""

    @classmethod
    def open(cls, url: str) -> Registry:
        """Connect, upgrade the schema to the newest migration, and fail the runs whose process died."""
        registry = cls(open_migrated(url, "registry"), mask_url(url))
        registry.runs_found_dead = registry._sweep_dead_runs()
        return registry

    def _sweep_dead_runs(self) -> list[RunRecord]:
        """`fail_dead_runs` as housekeeping on open: a registry user who may only read skips it."""
        try:
            return self.fail_dead_runs()
        except (SQLAlchemyError, RegistryUnavailableError):
            return []

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
