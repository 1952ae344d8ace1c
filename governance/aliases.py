"""Aliases and promotion: who may point which alias where, and the roles that let the database say so too."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from core.errors import BadInputError, CheckFailedError
from core.vocabulary import CHAMPION
from governance.events import AliasMoved, ModelPromoted, PromotionRefused, RolesInitialised
from governance.models import Alias, AliasHistory, ModelVersion, RegisteredModel, utcnow
from governance.records import AliasMove, ModelVersionRecord
from governance.roles import RoleGrant, init_roles
from governance.store import RegistryStore, core, subject_of


class AliasStore(RegistryStore):
    def set_alias(self, model_name: str, version: int, alias: str, *, reason: str = "") -> AliasMove:
        """Point any alias at a version, except the champion of a model that requires approval."""
        with self._write() as session:
            model, row = self._version(session, model_name, version)
            if alias == CHAMPION and model.require_approval:
                raise CheckFailedError(
                    f"{model_name!r} requires approval: make {model_name}:{version} {CHAMPION} with "
                    "`steward registry promote`, as an approver who did not train it"
                )
            move = self._move_alias(session, model, row, alias, "set", reason)
            self._event(session, subject_of(model_name, version), _moved(move))
            return move

    def promote(
        self, model_name: str, version: int, *, alias: str = CHAMPION, approver: str | None = None, reason: str = ""
    ) -> AliasMove:
        """Point ``alias`` at the version, approved by this handle's identity.

        ``approver``, when given, is a claim checked against that identity: a different name is bad input,
        never recorded as the approver. A model that requires approval refuses an approval by the author
        of the version's training run (the refusal itself is audited).
        """
        identity = self.identity
        claimed = (approver or "").strip()
        if claimed and claimed != identity.name:
            raise BadInputError(
                f"--approver {claimed!r} is not who is acting: this registry knows you as {identity.name!r} "
                f"({identity.source}); an approval is recorded as the identity that makes it"
            )
        with self._write() as session:
            model, row = self._version(session, model_name, version)
            author = self._run(session, row.run_id).author
            if not (model.require_approval and identity.name == author):
                move = self._move_alias(session, model, row, alias, "promote", reason)
                payload = ModelPromoted(**asdict(_moved(move)), approver=identity.name, author=author)
                self._event(session, subject_of(model_name, version), payload)
                return move
            refused = PromotionRefused(alias, version, reason, approver=identity.name, author=author)
            self._event(session, subject_of(model_name, version), refused)
        raise CheckFailedError(
            f"promotion of {model_name}:{version} refused: {model_name!r} requires approval by someone other "
            f"than the run's author ({author})"
        )

    def rollback(self, model_name: str, *, reason: str = "") -> AliasMove:
        """Move the champion back to the version that held it before the current one was given it."""
        with self._write() as session:
            model = self._model(session, model_name)
            current = session.get(Alias, (model.id, CHAMPION))
            if current is None:
                raise CheckFailedError(f"model {model_name!r} has no {CHAMPION} to roll back")
            previous_id = session.scalar(
                select(AliasHistory.previous_version_id)
                .where(
                    AliasHistory.model_id == model.id,
                    AliasHistory.alias == CHAMPION,
                    AliasHistory.version_id == current.version_id,
                    AliasHistory.action != "rollback",
                )
                .order_by(AliasHistory.id.desc())
                .limit(1)
            )
            if previous_id is None:
                version = session.get_one(ModelVersion, current.version_id).version
                raise CheckFailedError(f"model {model_name!r} had no {CHAMPION} before version {version}")
            target = session.get_one(ModelVersion, previous_id)
            move = self._move_alias(session, model, target, CHAMPION, "rollback", reason)
            self._event(session, subject_of(model_name, target.version), _moved(move))
            return move

    def init_roles(self) -> list[RoleGrant]:
        """PostgreSQL: the reader, trainer and approver roles and their grants (``governance.roles``)."""
        with self._write() as session:
            roles = init_roles(session.connection())
            self._event(session, "registry", RolesInitialised([role.name for role in roles]))
            return roles

    def alias_history(self, model_name: str) -> list[AliasMove]:
        """Every alias move of the model, oldest first: who pointed which alias where, and why."""
        previous = aliased(ModelVersion)
        with self._read() as session:
            model = self._model(session, model_name)
            rows = session.execute(
                select(
                    AliasHistory.alias,
                    ModelVersion.version,
                    previous.version,
                    AliasHistory.action,
                    AliasHistory.actor,
                    AliasHistory.reason,
                    AliasHistory.created_at,
                )
                .join(ModelVersion, ModelVersion.id == AliasHistory.version_id)
                .outerjoin(previous, previous.id == AliasHistory.previous_version_id)
                .where(AliasHistory.model_id == model.id)
                .order_by(AliasHistory.id)
            ).all()
        return [AliasMove(model_name, *row) for row in rows]

    def alias_version(self, model_name: str, alias: str) -> ModelVersionRecord | None:
        """The version `alias` points at; None when the model or the alias does not exist yet."""
        with self._read() as session:
            model = self._find_model(session, model_name)
            if model is None:
                return None
            row = core(
                session,
                ModelVersion.records()
                .join(Alias, Alias.version_id == ModelVersion.id)
                .where(Alias.model_id == model.id, Alias.alias == alias),
            ).first()
        return None if row is None else ModelVersion.to_record(row)

    def _move_alias(
        self, session: Session, model: RegisteredModel, target: ModelVersion, alias: str, action: str, reason: str
    ) -> AliasMove:
        if not alias or len(alias) > 100:
            raise BadInputError(f"alias must be 1-100 characters, got {alias!r}")
        current = session.get(Alias, (model.id, alias))
        previous_id = None if current is None else current.version_id
        actor = self.identity.name
        if current is None:
            session.add(Alias(model_id=model.id, alias=alias, version_id=target.id))
        else:
            current.version_id = target.id
        history = AliasHistory(
            model_id=model.id,
            alias=alias,
            version_id=target.id,
            previous_version_id=previous_id,
            action=action,
            actor=actor,
            reason=reason,
            created_at=utcnow(),
        )
        session.add(history)
        previous = None if previous_id is None else session.get_one(ModelVersion, previous_id).version
        return AliasMove(
            model_name=model.name,
            alias=alias,
            version=target.version,
            previous_version=previous,
            action=action,
            actor=actor,
            reason=reason,
            created_at=history.created_at,
        )


def _moved(move: AliasMove) -> AliasMoved:
    return AliasMoved(move.alias, move.version, move.previous_version, move.action, move.reason)
