"""PostgreSQL stopped in the middle of a flow: one clear error line, no partial version, an intact chain.

The shared server at 127.0.0.1:5432 is never touched: the test makes its own throwaway cluster
(initdb into a temp dir, as the `postgres` OS user when running as root), starts it on a free port,
and stops it with `pg_ctl stop -m immediate` (a crash, as far as PostgreSQL can tell) while a real
`steward run` subprocess is fine-tuning.
"""

from __future__ import annotations

import getpass
import glob
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from governance.registry import STALE_RUN_ERROR, Registry
from steward.cli import main
from tests.conftest import require
from tests.test_bad_input import one_error_line
from tests.test_flow_retrain import write_project

STAGE_TIMEOUT_S = 300


def _postgres_bin() -> Path | None:
    """The newest Debian-packaged server binaries, else an initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this test alone; `as_owner` runs its tools as the cluster's OS user."""

    bin_dir: Path
    data_dir: Path
    port: int
    as_owner: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/steward"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_owner, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args],
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", options, "-l", str(self.data_dir / "server.log"), "-w", "start")

    def crash(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        require(False, "PostgreSQL's server binaries (initdb, pg_ctl)")
    as_owner: list[str] = []
    data_dir = Path(tempfile.mkdtemp(prefix="steward-pg-"))
    if getpass.getuser() == "root":  # initdb refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            require(False, "a 'postgres' OS user to own a private cluster (initdb refuses root)")
        shutil.chown(data_dir, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    server = PrivatePostgres(bin_dir, data_dir / "cluster", _free_port(), as_owner)
    subprocess.run([*as_owner, str(bin_dir / "initdb"), "-D", str(server.data_dir), "-A", "trust", "-U", "postgres",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    server.start()
    try:
        admin = create_engine(server.url.replace("/steward", "/postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE steward"))
        admin.dispose()
        yield server
    finally:
        subprocess.run([*as_owner, str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)


def _stage_started(url: str, stage: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            payloads = conn.execute(
                text("SELECT payload FROM audit_events WHERE event_type = 'stage_started'")
            ).scalars().all()
        return any(f'"stage":"{stage}"' in payload for payload in payloads)
    except DBAPIError:  # the flow has not created the schema yet
        return False
    finally:
        engine.dispose()


def wait_for_stage(process: subprocess.Popen, url: str, stage: str) -> None:
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while not _stage_started(url, stage):
        assert process.poll() is None, f"the run ended before '{stage}' started"
        assert time.monotonic() < deadline, f"'{stage}' did not start within the time limit"
        time.sleep(0.2)


@pytest.mark.slow
def test_postgres_stopped_mid_flow_fails_cleanly_and_leaves_a_verifiable_chain(
    tmp_path: Path, tiny_model_dir: Path, steward_env: dict[str, str], private_postgres: PrivatePostgres,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir, pretraining={"enabled": False}, finetuning={"epochs": 3})
    command = [sys.executable, "-m", "steward.cli", "run", "--config", str(config), "--registry", private_postgres.url]
    process = subprocess.Popen(command, env=steward_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_stage(process, private_postgres.url, "fine-tuning")
        private_postgres.crash()
        out, err = process.communicate(timeout=STAGE_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 2
    message = one_error_line(err)
    assert message.startswith(f"registry postgresql+psycopg2://postgres@127.0.0.1:{private_postgres.port}/steward "
                              "is unavailable: ")
    assert out == ""

    private_postgres.start()
    assert main(["audit", "verify", "--registry", private_postgres.url]) == 0
    capsys.readouterr()
    with Registry.open(private_postgres.url) as registry:
        assert registry.list_models() == []
        (run_id,) = [e.payload["run_id"] for e in registry.audit.events("tickets") if e.event_type == "run_started"]
        run = registry.get_run(run_id)
        assert (run.status, run.error) == ("failed", STALE_RUN_ERROR)
        assert registry.audit.verify().ok
