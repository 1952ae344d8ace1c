"""Drift reports: what each check found, and what it decided about retraining."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import select

from governance.events import DriftChecked
from governance.models import DriftReport, utcnow
from governance.records import DriftReportIn, DriftReportRecord
from governance.store import RegistryStore, to_record
from steward.errors import BadInputError
from steward.scores import DRIFT_FINDINGS, RETRAIN_DECISIONS


class DriftStore(RegistryStore):
    def record_drift_report(self, report: DriftReportIn) -> DriftReportRecord:
        if report.finding not in DRIFT_FINDINGS or report.retrain not in RETRAIN_DECISIONS:
            raise BadInputError(f"drift finding must be one of {', '.join(DRIFT_FINDINGS)} and retrain one of "
                                f"{', '.join(RETRAIN_DECISIONS)}, not {report.finding!r} / {report.retrain!r}")
        with self._write() as session:
            if report.run_id is not None:
                self._run(session, report.run_id)
            if report.version_id is not None:
                self._version_by_id(session, report.version_id)
            row = DriftReport(**asdict(report), drift_detected=report.drift_detected, created_at=utcnow())
            session.add(row)
            session.flush()
            session.refresh(row)  # hand back details as stored: NaN -> null, odd objects -> str
            payload = DriftChecked(
                drift_detected=report.drift_detected,
                drift_share=report.drift_share,
                finding=report.finding,
                retrain=report.retrain,
                report_path=report.report_path,
                run_id=report.run_id,
                version_id=report.version_id,
            )
            self._event(session, report.model_name, payload)
            return to_record(DriftReportRecord, row)

    def drift_reports(self, model_name: str) -> list[DriftReportRecord]:
        with self._read() as session:
            rows = session.scalars(
                select(DriftReport).where(DriftReport.model_name == model_name).order_by(DriftReport.id)
            )
            return [to_record(DriftReportRecord, r) for r in rows]
