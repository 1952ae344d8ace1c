"""The prediction log on SQLite and PostgreSQL: replicas append to one table, a window reads it back in
order, retention deletes what is older, and an unreachable database is a one-line error."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import BadInputError
from governance.prediction_log import PredictionLog
from governance.records import ServedPredictionIn


def rows(replica: str, count: int, served_at: datetime, version: int = 1) -> list[ServedPredictionIn]:
    return [ServedPredictionIn("tickets", version, served_at + timedelta(milliseconds=i), f"{replica}-{i}",
                               f"text {replica} {i}", "printer", 0.75, {"printer": 0.75, "network": 0.25})
            for i in range(count)]


def test_two_replicas_share_one_log_and_a_window_reads_it_in_order(registry_url: str) -> None:
    now = datetime.now(UTC)
    replicas = [PredictionLog.open(registry_url) for _ in range(2)]
    try:
        writers = [threading.Thread(target=log.append, args=(rows(name, 50, now),))
                   for log, name in zip(replicas, ("a", "b"), strict=True)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        replicas[0].append(rows("old", 5, now - timedelta(days=40), version=0))
        window = replicas[1].window("tickets", now - timedelta(minutes=1))
        assert len(window) == 100 and {row.version for row in window} == {1}
        assert [row.served_at for row in window] == sorted(row.served_at for row in window)
        assert window[0].probabilities == {"printer": 0.75, "network": 0.25}
        assert replicas[0].window("other-model", now - timedelta(days=365)) == []

        assert replicas[0].purge(now - timedelta(days=30)) == 5
        assert len(replicas[1].window("tickets", now - timedelta(days=365))) == 100
    finally:
        for log in replicas:
            log.close()


def test_an_unreachable_log_database_is_a_one_line_error() -> None:
    with pytest.raises(BadInputError, match="cannot open prediction log postgresql") as raised:
        PredictionLog.open("postgresql+psycopg2://nobody:secret@127.0.0.1:9/none?connect_timeout=2")
    assert "secret" not in str(raised.value) and "\n" not in str(raised.value)
