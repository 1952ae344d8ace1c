"""Continued pretraining of a causal LM with LoRA is as robust as the classifier's stages: a run killed with
SIGKILL resumes from its checkpoint (which holds the adapters alone), and two torchrun workers train what one
process trains."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from steward.cli import main
from tests.test_crash_resume import kill_at_first_checkpoint
from tests.test_distributed import CURVE_TOLERANCE, losses, worker_logs
from tests.test_flow_language_model import registry_for, run_json, write_lm_project

NO_DROPOUT = {"lora": {"r": 8, "alpha": 16, "dropout": 0.0}}  # dropout draws different noise in each process


@pytest.mark.slow
def test_a_killed_lora_run_resumes_from_an_adapter_only_checkpoint(
    tmp_path: Path, tiny_llama_dir: Path, steward_env: dict[str, str], capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_lm_project(tmp_path, tiny_llama_dir,
                              pretraining={"max_steps": 30, "max_epochs": 1_000, "save_steps": 2})
    work_dir = tmp_path / ".steward" / "work" / "pretrain"
    killed_pid, seen_step = kill_at_first_checkpoint(config, steward_env, work_dir)
    with safe_open(str(next(work_dir.glob("checkpoint-*")) / "model.safetensors"), "pt") as checkpoint:
        assert checkpoint.keys() and all("lora_" in key for key in checkpoint.keys())  # noqa: SIM118 - a safetensors handle, not a dict

    code, outcome = run_json(capsys, "run", "--config", str(config))

    assert code == 0 and outcome["version"] == 1
    assert outcome["pretraining_resumed_from_step"] >= seen_step
    with registry_for(config) as registry:
        resumed = [e.payload for e in registry.audit.events("notes") if e.event_type == "stage_resumed"]
        assert [(p["stage"], p["resumed_from_step"]) for p in resumed] == [
            ("continued pretraining", outcome["pretraining_resumed_from_step"])]
        failed = [e.payload for e in registry.audit.events("notes") if e.event_type == "run_failed"]
        assert [p["pid"] for p in failed] == [killed_pid]
        assert registry.audit.verify().ok
    assert list(work_dir.iterdir()) == []


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_two_processes_train_the_same_adapter_as_one(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    results = []
    for name, nproc in (("one", []), ("two", ["--nproc", "2"])):
        config = write_lm_project(tmp_path / name, tiny_llama_dir, pretraining={"max_steps": 6, **NO_DROPOUT})
        code, result = run_json(capsys, "pretrain", "--config", str(config), *nproc)
        assert code == 0, worker_logs(config)
        results.append(result)
    one, two = results
    assert [step for step, _ in two["loss_curve"]] == list(range(1, 7))
    assert losses(two["loss_curve"]) == pytest.approx(losses(one["loss_curve"]), rel=CURVE_TOLERANCE)
    assert two["perplexity_after"] == pytest.approx(one["perplexity_after"], rel=CURVE_TOLERANCE)
    assert two["trained_tokens"] == one["trained_tokens"] == 6 * 8 * 32
    assert sorted(p.name for p in Path(two["model_dir"]).iterdir() if p.suffix == ".safetensors") == [
        "adapter_model.safetensors"]


def test_validate_on_a_language_model_config_says_what_to_run_instead(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_lm_project(tmp_path, tiny_llama_dir)
    assert main(["validate", "--config", str(config)]) == 2
    assert "is validated, adapted and evaluated by `steward run`" in capsys.readouterr().err
