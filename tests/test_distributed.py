"""`steward pretrain|finetune --nproc 2`: two torchrun workers (gloo on CPU) train what one process trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tasks.finetune import FineTuneJob, fine_tune
from tests.test_flow_retrain import registry_for, run_json, write_project
from tests.test_tasks_finetune import PARAMS, VALIDATION, tickets

# Relative tolerance between the one- and two-process loss curves. Without dropout the two runs see the
# same batches, masks, initial weights and loss normalisation; they differ only in the order of the
# floating-point sums (DDP averages two half-batch gradients). Measured on these runs: below 1e-6
# relative at every step and in the perplexities. 1e-4 leaves a hundredfold margin and still fails at
# once if a rank trained on the wrong share of a batch or the gradients were not averaged.
CURVE_TOLERANCE = 1e-4
# Fine-tuning's loss falls near 1e-4 within a few epochs (the head starts as the linear probe); there the
# same float noise is 1e-8 absolute, above 1e-4 relative.
CURVE_FLOOR = 1e-6


@pytest.fixture(scope="module")
def dropout_free_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with dropout off: dropout draws different noise in each process, nothing else does."""
    model_dir = tmp_path_factory.mktemp("no-dropout") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model_dir / "config.json").write_text(json.dumps(config))
    return model_dir


def train(capsys: pytest.CaptureFixture[str], config: Path, *nproc: str) -> tuple[dict, dict]:
    """`steward pretrain` then `steward finetune` (which reuses the adapted checkpoint)."""
    code, pretrained = run_json(capsys, "pretrain", "--config", str(config), *nproc)
    assert code == 0, worker_logs(config)
    assert pretrained["cache_hit"] is False
    code, finetuned = run_json(capsys, "finetune", "--config", str(config), *nproc)
    assert code == 0, worker_logs(config)
    return pretrained, finetuned


def worker_logs(config: Path) -> str:
    """What the torchrun workers printed (kept on failure), for the assertion message."""
    logs = sorted(config.parent.glob(".steward/work/*.workers/workers.log"))
    return "\n".join(f"{log}:\n{log.read_text(errors='replace')[-4000:]}" for log in logs) or "no worker log"


def losses(points: list) -> list[float]:
    return [loss for _, loss in points]


@pytest.mark.usefixtures("prefect_harness")
def test_two_processes_train_the_same_model_as_one(
    tmp_path: Path, dropout_free_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single_round = {"self_training": {"enabled": False}}  # one fine-tuning of the 150 labelled rows per run
    one = write_project(tmp_path / "one", dropout_free_model, finetuning=single_round)
    two = write_project(tmp_path / "two", dropout_free_model, finetuning=single_round)
    pretrained_one, finetuned_one = train(capsys, one)
    pretrained_two, finetuned_two = train(capsys, two, "--nproc", "2")

    assert [step for step, _ in pretrained_two["loss_curve"]] == list(range(1, 7))
    expected = losses(pretrained_one["loss_curve"])
    assert losses(pretrained_two["loss_curve"]) == pytest.approx(expected, rel=CURVE_TOLERANCE)
    for key in ("perplexity_before", "perplexity_after"):
        assert pretrained_two[key] == pytest.approx(pretrained_one[key], rel=CURVE_TOLERANCE)
    assert pretrained_two["trained_tokens"] == pretrained_one["trained_tokens"] == 6 * 8 * 32

    assert finetuned_two["metrics"]["macro_f1"] == pytest.approx(finetuned_one["metrics"]["macro_f1"])
    assert finetuned_two["metrics"]["accuracy"] == pytest.approx(finetuned_one["metrics"]["accuracy"])
    curves = []
    for config, outcome in ((one, finetuned_one), (two, finetuned_two)):
        with registry_for(config) as registry:
            assert [v.version for v in registry.list_versions("tickets")] == [1]
            curves.append(registry.curve(outcome["run_id"], "finetune_loss"))
            assert registry.audit.verify().ok
    assert len(curves[1]) == len(curves[0]) and len(curves[0]) % 19 == 0  # whole epochs of 150 examples / 8
    assert losses(curves[1]) == pytest.approx(losses(curves[0]), rel=CURVE_TOLERANCE, abs=CURVE_FLOOR)
    assert Path(finetuned_two["artifact_path"], "model.safetensors").is_file()
    assert not (two.parent / ".steward" / "work" / "finetune.workers").exists()  # removed after success


def test_a_last_batch_smaller_than_the_world_gives_the_same_training(
    tmp_path: Path, dropout_free_model: Path
) -> None:
    """145 examples in batches of 8 end with a batch of one: rank 1's share is empty, and it still takes
    part in the gradient all-reduce (with a zero-weight loss)."""
    train = tickets("train", 145, 1)
    params = PARAMS.model_copy(update={"epochs": 2})
    one = fine_tune(FineTuneJob(dropout_free_model, train, VALIDATION, params, 11, tmp_path / "one", "macro_f1"))
    two = fine_tune(FineTuneJob(dropout_free_model, train, VALIDATION, params, 11, tmp_path / "two", "macro_f1"),
                    nproc=2)
    assert len(two.loss_curve) == len(one.loss_curve) == 2 * 19
    assert losses(two.loss_curve) == pytest.approx(losses(one.loss_curve), rel=CURVE_TOLERANCE)
    assert [score.accuracy for score in two.epoch_scores] == [score.accuracy for score in one.epoch_scores]
    assert two.trained_tokens == one.trained_tokens
    assert {path.name for path in two.model_dir.iterdir()} == {path.name for path in one.model_dir.iterdir()}


@pytest.mark.usefixtures("prefect_harness")
def test_a_failed_worker_is_one_line_and_registers_nothing(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    # The label check would load the broken base before any worker: this test is about the workers.
    config = write_project(tmp_path / "project", broken, pretraining={"enabled": False},
                           validation={"label_issues": "off"})

    code, payload = run_json(capsys, "finetune", "--config", str(config), "--nproc", "2")

    assert code == 1 and payload["ok"] is False
    assert payload["error"].startswith("finetune failed in worker rank ")
    assert "\n" not in payload["error"]
    log = Path(payload["error"].rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file()
    with registry_for(config) as registry:
        assert registry.list_models() == []
        assert registry.audit.events("tickets")[-1].event_type == "run_failed"


@pytest.mark.usefixtures("prefect_harness")
def test_more_processes_than_examples_per_batch_is_bad_input(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_project(tmp_path, tiny_model_dir, pretraining={"enabled": False}, finetuning={"batch_size": 2})
    code, payload = run_json(capsys, "finetune", "--config", str(config), "--nproc", "4")
    assert code == 2
    assert payload["error"] == (
        "finetuning.batch_size 2 is smaller than --nproc 4: each process needs at least one example of every batch"
    )


TORCHRUN_SUMMARY = """\
terminate called without an active exception
W1202 14:49:09.352000 21020 api.py:1028] Sending process 21024 closing signal SIGTERM
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
=======================================================
tasks.distributed FAILED
-------------------------------------------------------
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 21024)  (SIGTERM)
-------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-02_14:49:09
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -6 (pid: 21025)  (SIGABRT)
  error_file: <N/A>
=======================================================
"""


def test_a_torchrun_failure_without_an_error_record_names_its_root_cause(tmp_path: Path) -> None:
    """torchrun's own summary, when no worker could write `error-<rank>.json` (it died in C++)."""
    from tasks.distributed import LOG_FILE, launch_failure

    (tmp_path / LOG_FILE).write_text(TORCHRUN_SUMMARY)
    message = str(launch_failure("pretrain", tmp_path, 1))
    assert message.startswith("pretrain failed: torchrun exited with code 1: terminate called")
    assert "rank : 1 (local_rank: 1); exitcode : -6 (pid: 21025) (SIGABRT)" in message and "\n" not in message
