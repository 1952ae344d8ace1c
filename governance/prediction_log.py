"""The prediction log: what model servers answered, in SQL (the registry database, or `serving.log_url`).

Rows are appended in batches by each server's writer thread (never on the request path) and never updated,
so several replicas can share one PostgreSQL database; rows older than `serving.log_retention` are deleted.
`steward monitor --current served` reads a window of it as the current batch.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import delete, insert, select

from governance.db import open_migrated, reachable
from governance.models import ServedPrediction
from governance.records import ServedPredictionIn, ServedPredictionRecord
from governance.redact import mask_url


class PredictionLog:
    """A handle on the prediction log's database; open with `PredictionLog.open(url)`, close when done."""

    def __init__(self, engine, masked_url: str) -> None:
        self._engine = engine
        self.url = masked_url

    @classmethod
    def open(cls, url: str) -> PredictionLog:
        """Connect and bring the schema to the newest migration (the log shares the registry's schema)."""
        return cls(open_migrated(url, "prediction log"), mask_url(url))

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def append(self, rows: list[ServedPredictionIn]) -> int:
        """Insert the rows in one transaction; how many."""
        if not rows:
            return 0
        with reachable(self._engine), self._engine.begin() as conn:
            conn.execute(insert(ServedPrediction), [asdict(row) for row in rows])
        return len(rows)

    def window(self, model_name: str, since: datetime) -> list[ServedPredictionRecord]:
        """The model's rows served since `since`, oldest first."""
        with reachable(self._engine), self._engine.connect() as conn:
            rows = conn.execute(self._since(select(*ServedPrediction.__table__.columns), model_name, since))
            return [ServedPredictionRecord(**row) for row in rows.mappings()]

    def window_texts(self, model_name: str, since: datetime) -> list[str | None]:
        """Only the texts of the model's rows served since `since`, oldest first (None where not logged):
        what `--current served` needs, without the probabilities."""
        with reachable(self._engine), self._engine.connect() as conn:
            return list(conn.execute(self._since(select(ServedPrediction.text), model_name, since)).scalars())

    @staticmethod
    def _since(stmt, model_name: str, since: datetime):
        return (stmt.where(ServedPrediction.model_name == model_name, ServedPrediction.served_at >= since)
                .order_by(ServedPrediction.served_at, ServedPrediction.id))

    def purge(self, older_than: datetime) -> int:
        """Delete every row served before `older_than` (the retention window); how many."""
        with reachable(self._engine), self._engine.begin() as conn:
            return conn.execute(delete(ServedPrediction).where(ServedPrediction.served_at < older_than)).rowcount
