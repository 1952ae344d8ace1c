"""Registered models, their versions, artifacts, lineage and compressed forms."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import BadInputError
from core.vocabulary import COMPRESSION_STATUSES, FORMS
from governance.events import CompressionJudged, ModelCreated, VersionRegistered
from governance.models import (
    Alias,
    ArtifactFile,
    CompressedForm,
    Dataset,
    GateDecision,
    ModelVersion,
    RegisteredModel,
    VersionDataset,
    utcnow,
)
from governance.records import (
    CompressedFormIn,
    CompressedFormRecord,
    ModelSummary,
    ModelVersionDetail,
    ModelVersionRecord,
)
from governance.store import (
    RegistryStore,
    check_sha256,
    core,
    finite_metrics,
    subject_of,
)


class VersionStore(RegistryStore):
    def register_version(
        self,
        *,
        model_name: str,
        run_id: str,
        artifact_path: str,
        files: dict[str, str],
        base_model: str,
        parent_version: int | None = None,
        datasets: dict[str, int] | None = None,
        require_approval: bool = False,
    ) -> ModelVersionRecord:
        """Register the next version (max + 1, numbered under the write lock) with its files and datasets.

        ``files`` maps paths relative to ``artifact_path`` to sha256; ``datasets`` maps role to dataset id.
        The model is created on first registration; ``require_approval`` updates its promotion policy.
        """
        check_sha256(files)
        datasets = datasets or {}
        with self._write() as session:
            self._run(session, run_id)
            model = self._model_for_registration(session, model_name, require_approval)
            parent = self._version(session, model_name, parent_version)[1] if parent_version is not None else None
            dataset_rows = {role: self._dataset(session, dataset_id) for role, dataset_id in datasets.items()}
            latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
            version = ModelVersion(
                model_id=model.id,
                version=(latest or 0) + 1,
                artifact_path=artifact_path,
                base_model=base_model,
                parent_version_id=parent.id if parent else None,
                run_id=run_id,
                created_by=self.identity.name,
            )
            session.add(version)
            session.flush()
            session.add_all(_artifact_files(version.id, artifact_path, files))
            session.add_all(
                VersionDataset(version_id=version.id, role=role, dataset_id=dataset_id)
                for role, dataset_id in datasets.items()
            )
            payload = VersionRegistered(
                version_id=version.id,
                run_id=run_id,
                artifact_path=artifact_path,
                base_model=base_model,
                parent_version=parent_version,
                files=files,
                datasets={role: row.fingerprint for role, row in dataset_rows.items()},
                require_approval=model.require_approval,
            )
            self._event(session, subject_of(model_name, version.version), payload)
            return self._version_by_id(session, version.id)

    def _model_for_registration(self, session: Session, name: str, require_approval: bool) -> RegisteredModel:
        model = self._find_model(session, name)
        if model is None:
            model = RegisteredModel(name=name, require_approval=require_approval, created_at=utcnow())
            session.add(model)
            self._event(session, name, ModelCreated(require_approval))
        # A registration can make promotion need approval, never lift it: a trainer's config must not
        # switch off the four-eyes rule (lifting it is an approver's UPDATE, see `steward registry init-roles`).
        model.require_approval = model.require_approval or require_approval
        return model

    def list_models(self) -> list[ModelSummary]:
        stats = (
            select(
                ModelVersion.model_id,
                func.max(ModelVersion.version).label("latest"),
                func.count().label("count"),
            )
            .group_by(ModelVersion.model_id)
            .subquery()
        )
        with self._read() as session:
            rows = session.execute(
                select(RegisteredModel, stats.c.latest, stats.c.count)
                .outerjoin(stats, stats.c.model_id == RegisteredModel.id)
                .order_by(RegisteredModel.name)
            ).all()
            aliases: dict[int, dict[str, int]] = {}
            alias_rows = session.execute(
                select(Alias.model_id, Alias.alias, ModelVersion.version).join(
                    ModelVersion, ModelVersion.id == Alias.version_id
                )
            )
            for model_id, alias, version in alias_rows:
                aliases.setdefault(model_id, {})[alias] = version
        return [
            ModelSummary(
                name=model.name,
                latest_version=latest,
                version_count=count or 0,
                aliases=aliases.get(model.id, {}),
                created_at=model.created_at,
                require_approval=model.require_approval,
                description=model.description,
            )
            for model, latest, count in rows
        ]

    def requires_approval(self, model_name: str) -> bool:
        """Whether promoting the model's champion needs an approver who is not the author (False if unknown)."""
        with self._read() as session:
            model = self._find_model(session, model_name)
            return model is not None and model.require_approval

    def list_versions(self, model_name: str, limit: int | None = None) -> list[ModelVersionRecord]:
        """Versions of a model, newest first."""
        with self._read() as session:
            model = self._model(session, model_name)
            stmt = ModelVersion.records().where(ModelVersion.model_id == model.id).order_by(ModelVersion.version.desc())
            rows = core(session, stmt.limit(limit)).all()
        return [ModelVersion.to_record(row) for row in rows]

    def get_version(self, model_name: str, version: int) -> ModelVersionDetail:
        with self._read() as session:
            _, row = self._version(session, model_name, version)
            files = session.scalars(
                select(ArtifactFile).where(ArtifactFile.version_id == row.id).order_by(ArtifactFile.relative_path)
            )
            datasets = session.execute(
                select(VersionDataset.role, Dataset)
                .join(Dataset, Dataset.id == VersionDataset.dataset_id)
                .where(VersionDataset.version_id == row.id)
            )
            aliases = session.scalars(select(Alias.alias).where(Alias.version_id == row.id).order_by(Alias.alias)).all()
            decisions = GateDecision.records().where(GateDecision.candidate_version_id == row.id)
            gate = session.execute(decisions.order_by(GateDecision.id.desc())).first()
            return ModelVersionDetail(
                version=self._version_by_id(session, row.id),
                files=[file.to_record() for file in files],
                datasets={role: dataset.to_record() for role, dataset in datasets},
                metrics=self._metrics(session, row.id),
                aliases=list(aliases),
                run=self._run(session, row.run_id).to_record(),
                gate_decision=None if gate is None else GateDecision.to_record(gate),
                forms=self._forms(session, row.id),
            )

    def record_compressed_form(self, form: CompressedFormIn) -> CompressedFormRecord:
        """Store a compressed form and the compression gate's verdict; one audit event, `compression_<status>`,
        carrying the sha256 of every file of the form."""
        if form.form not in FORMS or form.status not in COMPRESSION_STATUSES:
            raise BadInputError(f"form must be one of {', '.join(FORMS)} and status one of "
                                f"{', '.join(COMPRESSION_STATUSES)}, not {form.form!r} / {form.status!r}")
        check_sha256(form.files)
        with self._write() as session:
            self._run(session, form.run_id)
            version = self._version_by_id(session, form.version_id)
            row = CompressedForm.from_form(replace(form, metrics=finite_metrics(form.metrics)))
            session.add(row)
            session.flush()
            payload = CompressionJudged(
                run_id=form.run_id, form=form.form, method=form.method, status=form.status, reasons=list(form.reasons),
                size_bytes=form.size_bytes, sha256=form.files, agreement=form.metrics.get("agreement"),
                metric_drop=form.metrics.get("metric_drop"),
            )
            self._event(session, subject_of(version.model_name, version.version), payload)
            return row.to_record()

    @staticmethod
    def _forms(session: Session, version_id: int) -> list[CompressedFormRecord]:
        """The latest record of each form of the version, in form order."""
        rows = session.scalars(
            select(CompressedForm).where(CompressedForm.version_id == version_id).order_by(CompressedForm.id)
        )
        latest = {row.form: row for row in rows}
        return [latest[name].to_record() for name in FORMS if name in latest]


def _artifact_files(version_id: int, artifact_path: str, files: dict[str, str]) -> list[ArtifactFile]:
    """File rows; sizes are read from disk when the artifact is reachable from here."""
    root = Path(artifact_path)
    rows = []
    for relative, digest in sorted(files.items()):
        path = root / relative
        size = path.stat().st_size if path.is_file() else None
        rows.append(ArtifactFile(version_id=version_id, relative_path=relative, sha256=digest, size_bytes=size))
    return rows
