"""Concurrent runs of one config never share a checkpoint folder; an interrupted run's folder is resumable."""

from __future__ import annotations

from pathlib import Path

from flows.context import Workspace


def test_second_live_run_gets_a_private_folder_and_the_shared_one_comes_back(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / ".steward")
    shared = workspace.root / "work" / "finetune"
    with workspace.claimed_work_dir("finetune", "run-a") as first:
        assert first == shared
        with workspace.claimed_work_dir("finetune", "run-b") as second:
            assert second == shared.with_name("finetune-run-b")
            second.mkdir()
            (second / "checkpoint").write_text("b's epoch 1")
        assert not second.exists()  # removed: nobody could resume from it
    with workspace.claimed_work_dir("finetune", "run-c") as third:
        assert third == shared  # free again, so the next run resumes whatever run-a left
