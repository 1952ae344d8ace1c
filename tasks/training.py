"""The one training loop behind every stage: continued pretraining, fine-tuning, and each objective.

A stage is a recipe (`Recipe`): its phases, the module whose forward gives the loss, a step's batch and
loss, and what to evaluate every `interval` steps. This loop owns everything else, nanoGPT-style:

- the run key and resume → barrier → stale-checkpoint cleanup (a changed config never resumes);
- the step: backward of this rank's share × world size (DDP averages, so the gradient is the
  one-process gradient of the global batch), clip, optimizer step, schedule step;
- the per-step losses, kept on the device and all-reduced once per segment (a segment ends where the
  loop must look up: a phase boundary, an evaluation, the end);
- checkpoints every `interval` steps (rank 0 alone writes), progress, and the training clock.

With N processes (`tasks.distributed`) every rank runs this same loop; `Ranks` says which share is whose.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tasks import checkpoints
from tasks.distributed import Ranks
from tasks.modeling import Device, TrainingClock, adamw

if TYPE_CHECKING:
    import torch

WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
LR_WARMUP_FRACTION = 0.06  # of a phase's steps, the learning rate's linear warm-up from 0
SEED_STRIDE = 1_000_003  # a per-epoch or per-step seed is seed × SEED_STRIDE + index: distinct, reproducible

StepCallback = Callable[[int, float], None]  # (step, loss) after every optimizer step
IntervalCallback = Callable[[int], None]  # (step) after each interval's checkpoint


def derived_seed(seed: int, index: int) -> int:
    """The seed of one epoch's order or one step's masks: depends on (seed, index) alone."""
    return seed * SEED_STRIDE + index


@dataclass(frozen=True)
class Phase:
    """A stretch of steps with one optimizer: which parameters train, at what learning rate and schedule."""

    name: str
    steps: int
    learning_rate: float
    warmup_steps: int = 0
    schedule: Literal["constant", "linear"] = "constant"  # after warm-up: hold, or decay linearly to 0
    frozen: torch.nn.Module | None = None  # a submodule that stays frozen in this phase

    @classmethod
    def warmed_up(cls, name: str, steps: int, learning_rate: float,
                  schedule: Literal["constant", "linear"] = "constant") -> Phase:
        """A phase whose first `LR_WARMUP_FRACTION` of steps warm the learning rate up."""
        return cls(name, steps, learning_rate, math.ceil(LR_WARMUP_FRACTION * steps), schedule)


class Recipe:
    """What a stage supplies to the loop. A recipe sets the attributes and writes `phases` and `step_loss`; the
    rest has defaults for a stage that evaluates nothing and keeps no state of its own."""

    run_key: str  # hash of every input: a checkpoint resumes only a run with the same key
    output_dir: Path  # where checkpoints go
    interval: int  # steps between evaluations and checkpoints
    model: torch.nn.Module  # the weights a checkpoint saves
    loss_module: torch.nn.Module  # what DDP wraps (its forward runs inside `step_loss`)
    checkpoint_trainable_only = False  # True: a checkpoint keeps the training weights alone (the rest is frozen)

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def step_loss(self, trainer: torch.nn.Module, step: int) -> tuple[torch.Tensor, int]:
        """This rank's share of step `step`'s global mean loss, and the global batch's real tokens."""
        raise NotImplementedError

    def begin_phase(self, phase: Phase) -> None:
        """Called before the first step of each phase (also after a resume into it)."""

    def set_trainable(self, phase: Phase) -> None:
        """Which parameters `phase` trains: every one but those of `phase.frozen` (a LoRA recipe: its adapters)."""
        self.model.requires_grad_(True)
        if phase.frozen is not None:
            phase.frozen.requires_grad_(False)

    def evaluate(self, step: int) -> bool:
        """End of an interval (every rank): evaluate; True stops training early."""
        return False

    def checkpoint_index(self, step: int) -> int:
        """The number in the checkpoint's folder name (`checkpoint-<n>`): a step, an epoch."""
        return step

    def state(self) -> dict[str, Any]:
        """The stage's own bookkeeping (JSON) that a resumed run restores."""
        return {}

    def extra_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """Weight sets besides the model to store in a checkpoint (e.g. the best epoch's)."""
        return {}

    def restore(self, state: dict[str, Any], found: checkpoints.FoundCheckpoint) -> None:
        """Take back what `state` and `extra_weights` saved."""


@dataclass
class LoopResult:
    steps: int  # optimizer steps taken, all phases, resumed ones included
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    resumed_from_step: int | None = None
    trained_tokens: int = 0  # real tokens through this call's steps, all ranks together
    training_seconds: float = 0.0  # wall time of the steps alone


@dataclass(frozen=True)
class _Record:
    """A checkpoint's JSON record."""

    run_key: str
    step: int
    phase: int
    loss_curve: list[tuple[int, float]]
    stage: dict[str, Any]
    trainable_only: bool = False  # the checkpoint's model file holds the trainable weights alone


class TrainingLoop:
    def __init__(self, recipe: Recipe, ranks: Ranks, device: Device, name: str,
                 on_step: StepCallback | None = None, on_interval: IntervalCallback | None = None) -> None:
        self.recipe, self.ranks, self.device, self.name = recipe, ranks, device, name
        self.on_step, self.on_interval = on_step, on_interval
        self.phases = recipe.phases()
        self.ends = [sum(phase.steps for phase in self.phases[: i + 1]) for i in range(len(self.phases))]
        self.result = LoopResult(steps=0)
        self.clock = TrainingClock(device)

    def run(self) -> LoopResult:
        from tqdm.auto import tqdm

        phase_index, trainer_state = self._resume_or_start()
        optimizer, scheduler, trainer = self._begin(phase_index)
        if trainer_state is not None:
            optimizer.load_state_dict(trainer_state["optimizer"])
            scheduler.load_state_dict(trainer_state["scheduler"])
        total, stopped = self.ends[-1], False
        progress = tqdm(total=total, initial=self.result.steps, desc=self.name, file=sys.stderr,
                        disable=not sys.stderr.isatty() or not self.ranks.is_main)
        while self.result.steps < total and not stopped:
            if self.result.steps == self.ends[phase_index]:
                phase_index += 1
                optimizer, scheduler, trainer = self._begin(phase_index)
            done = self.result.steps
            self._segment(trainer, optimizer, scheduler, self._segment_end(phase_index))
            progress.update(self.result.steps - done)
            progress.set_postfix(loss=f"{self.result.loss_curve[-1][1]:.3f}")
            if self.result.steps % self.recipe.interval == 0 or self.result.steps == total:
                stopped = self.recipe.evaluate(self.result.steps)
                if self.result.steps < total and not stopped:
                    self._checkpoint(phase_index, optimizer, scheduler)
        progress.close()
        self.result.training_seconds = self.clock.seconds
        return self.result

    def _segment_end(self, phase_index: int) -> int:
        next_interval = (self.result.steps // self.recipe.interval + 1) * self.recipe.interval
        return min(self.ends[phase_index], next_interval)

    def _segment(self, trainer: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, end: int) -> None:
        import torch

        shares = []
        trainer.train()
        with self.clock.running():
            while self.result.steps < end:
                share, tokens = self.recipe.step_loss(trainer, self.result.steps)
                (share * self.ranks.world_size).backward()
                trainable = [p for p in self.recipe.model.parameters() if p.requires_grad]
                torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                shares.append(share.detach())
                self.result.steps += 1
                self.result.trained_tokens += tokens
                if self.on_step is not None:  # single process only: its share is the whole loss
                    self.on_step(self.result.steps, float(shares[-1]))
            losses = self.ranks.all_sum(torch.stack(shares).double()).tolist()
        first = self.result.steps - len(losses) + 1
        self.result.loss_curve += list(enumerate(losses, start=first))

    def _begin(self, phase_index: int) -> tuple[torch.optim.Optimizer, Any, torch.nn.Module]:
        """The phase's optimizer and schedule; DDP is set up anew, as it tracks the parameters that train."""
        from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

        phase = self.phases[phase_index]
        model = self.recipe.model
        self.recipe.set_trainable(phase)
        optimizer = adamw([p for p in model.parameters() if p.requires_grad], phase.learning_rate, WEIGHT_DECAY)
        if phase.schedule == "linear":
            scheduler = get_linear_schedule_with_warmup(optimizer, phase.warmup_steps, phase.steps)
        else:
            scheduler = get_constant_schedule_with_warmup(optimizer, phase.warmup_steps)
        self.recipe.begin_phase(phase)
        return optimizer, scheduler, self.ranks.wrap(self.recipe.loss_module, self.device)

    def _resume_or_start(self) -> tuple[int, dict[str, Any] | None]:
        """Restore the newest checkpoint of this run key, else clear stale ones: the phase index to go on
        in, and the saved optimizer and scheduler state (None on a fresh start)."""
        found = checkpoints.latest_checkpoint(self.recipe.output_dir, self.recipe.run_key)
        self.ranks.barrier()  # every rank has looked before rank 0 clears stale checkpoints
        if found is None:
            if self.ranks.is_main:
                checkpoints.remove_checkpoints(self.recipe.output_dir)
            return 0, None
        record = _Record(**found.record)
        trainer_state = checkpoints.restore(found, self.recipe.model, self.device.torch_device)
        self.recipe.restore(record.stage, found)
        self.result.steps = self.result.resumed_from_step = record.step
        self.result.loss_curve = [(int(step), float(loss)) for step, loss in record.loss_curve]
        return record.phase, trainer_state

    def _checkpoint(self, phase_index: int, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        if self.ranks.is_main:
            record = _Record(self.recipe.run_key, self.result.steps, phase_index, self.result.loss_curve,
                             self.recipe.state(), self.recipe.checkpoint_trainable_only)
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            checkpoints.write_checkpoint(
                self.recipe.output_dir, self.recipe.checkpoint_index(self.result.steps), self.recipe.model, state,
                asdict(record), self.recipe.extra_weights(), self.recipe.checkpoint_trainable_only,
            )
        if self.on_interval is not None:
            self.on_interval(self.result.steps)


def train(recipe: Recipe, ranks: Ranks, device: Device, name: str, on_step: StepCallback | None = None,
          on_interval: IntervalCallback | None = None) -> LoopResult:
    """Run `recipe` to its end (or its early stop) on this rank; see the module docstring."""
    return TrainingLoop(recipe, ranks, device, name, on_step, on_interval).run()
