"""Drift reports: what each check found, and what it decided about retraining."""

from __future__ import annotations

from sqlalchemy import select

from core.errors import BadInputError
from core.results import DriftResult
from core.vocabulary import RETRAIN_DECISIONS, RetrainDecisionName
from governance.events import DriftChecked
from governance.models import DriftReport
from governance.records import DriftReportRecord
from governance.store import RegistryStore


class DriftStore(RegistryStore):
    def record_drift_report(self, result: DriftResult, *, model_name: str, retrain: RetrainDecisionName,
                            current: str, reference: str, run_id: str | None = None,
                            version_id: int | None = None) -> DriftReportRecord:
        """Store a drift check (`current` and `reference` say what was compared) with its retrain decision."""
        if retrain not in RETRAIN_DECISIONS:
            raise BadInputError(f"retrain must be one of {', '.join(RETRAIN_DECISIONS)}, not {retrain!r}")
        with self._write() as session:
            if run_id is not None:
                self._run(session, run_id)
            if version_id is not None:
                self._version_by_id(session, version_id)
            row = DriftReport.from_result(result, model_name=model_name, retrain=retrain, current=current,
                                          reference=reference, run_id=run_id, version_id=version_id)
            session.add(row)
            session.flush()
            session.refresh(row)  # hand back details as stored: NaN -> null, odd objects -> str
            record = row.to_record()
            self._event(session, model_name, DriftChecked.of(record))
            return record

    def drift_reports(self, model_name: str) -> list[DriftReportRecord]:
        with self._read() as session:
            rows = session.scalars(
                select(DriftReport).where(DriftReport.model_name == model_name).order_by(DriftReport.id)
            )
            return [row.to_record() for row in rows]
