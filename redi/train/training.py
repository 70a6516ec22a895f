"""One training engine for every objective of the registry (``redi.train.losses``): SFT
(stage 1) and DPO, SimPO, REDI (stage 2) differ only in their registry entries.

Built on accelerate: ``scripts/launch.sh N`` runs it as N processes, under
``accelerate launch`` with DeepSpeed ZeRO-2 (configs/) on GPUs, or under
``torchrun`` on a CPU machine (gloo; ZeRO-2 or plain DDP), and as one plain
process for N <= 1. The same optimizer everywhere (``redi.train.optim``), bf16 on GPU,
fp32 on CPU. On GPUs micro-batches are packed without padding (PyTorch's varlen
FlashAttention, ``redi.model.attention``); on a CPU they are padded rows under SDPA.

An optimizer step sees ``global_batch`` examples (= ``micro_batch`` x accumulation
x processes) in the order the run's ``data_order`` gives (``redi.train.train_data.run_plan``:
the file's, or the permutation and step count of the authors' Trainer); its loss is
the objective's per-example loss summed (``redi.train.step.micro_loss``) and normalised by
the step's completion tokens (SFT; ``loss_normalisation``: over all processes, or per
process as the authors' Trainer, ``loss_divisor``) or examples (stage 2). The run folder
(``redi.model.checkpoints``) keeps ``log.csv``, TensorBoard events, checkpoints and, while
running, the latest resume state: a rerun of a killed job continues from it
(``redi.train.resume``). A finished run writes ``manifest.json`` last and deletes its resume
state.

A stop signal (SIGTERM, SIGINT, or SIGUSR1: a scheduler's warning before the time
limit) lets the step in progress finish, saves the state at that step boundary (a
resume point: not one of the run's checkpoints, removed at the next checkpoint)
and ends the process with ``TrainingStopped`` (non-zero exit); the rerun resumes
there with no lost step.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from redi.distributed import distributed_state
from redi.io import naming_file, write_json
from redi.model import attention, checkpoints
from redi.model.checkpoints import init_checkpoint
from redi.model.models import load_causal_lm, load_tokenizer, pad_id
from redi.provenance import provenance
from redi.train import batching, logprobs, losses
from redi.train.optim import make_optimizer, make_scheduler, step_with_update_norm
from redi.train.resume import find_resume_state, fingerprint
from redi.train.step import Stats, micro_loss
from redi.train.train_data import Item, micro_batches, pair_items, run_plan, sft_items

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A NaN/Inf loss or gradient norm: the run stops, its last checkpoint stays."""


class TrainingStopped(RuntimeError):
    """A stop signal: the state was saved at a step boundary; a rerun resumes there."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopSignals:
    """While active (main thread only), a stop signal is recorded instead of killing
    the process mid-step, so the trainer can save at the step boundary; a second one
    stops at once (a user who presses Ctrl-C twice does not want to wait)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            raise TrainingStopped(f"second stop signal ({name}): stopping without saving")
        self.received = signum
        log.warning("%s received: saving the state after this step, then stopping", name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@dataclass
class Hooks:
    """Test hooks: ``after_step(step)`` runs after each optimizer step and checkpoint."""

    after_step: Callable[[int], None] | None = None


@dataclass
class RunSpec:
    """Everything one training run needs (built by ``run_sft``/``run_stage2``).

    The objective is ``params["objective"]`` (SFT runs: ``"sft"``); ``stage`` is
    recorded in the manifest."""

    stage: str  # "sft" | "stage2"
    params: dict[str, Any]
    items: list[Item]
    init: str
    tokenizer: Any
    manifest_path: Path
    log_csv_path: Path
    fingerprint: str
    hooks: Hooks = field(default_factory=Hooks)

    @property
    def run_dir(self) -> Path:
        return self.manifest_path.parent

    @property
    def objective(self) -> str:
        return self.params.get("objective", "sft")


# how a token-mean objective (SFT) normalises a step (`sft.loss_normalisation`)
LOSS_NORMALISATIONS = ("global_tokens", "authors")


def loss_normalisation(params: dict[str, Any]) -> str:
    """The run's ``loss_normalisation``; params without it (written before the key
    existed, hand-made in tests) mean the global token mean."""
    name = params.get("loss_normalisation", "global_tokens")
    if name not in LOSS_NORMALISATIONS:
        raise ValueError(f"loss_normalisation {name!r} is not one of {list(LOSS_NORMALISATIONS)}")
    return name


def loss_divisor(normalisation: str, own_tokens: float, step_tokens: float, world: int) -> float:
    """The divisor ``d`` of one process's summed token losses: the step's loss is the
    sum over processes of (their summed losses) / d.

    ``global_tokens``: the step's completion tokens on all processes (one token mean).
    ``authors``: the pinned HF Trainer's (transformers 4.50): each process divides by
    its own completion tokens of the accumulation window (``num_items_in_batch``,
    not gathered: ``average_tokens_across_devices`` is off by default) and DDP/ZeRO
    average the processes' gradients, so d = own tokens x processes. A process with
    no tokens (only padding micro-batches) contributes 0; 1 keeps d finite.
    """
    if normalisation == "global_tokens":
        return step_tokens
    if normalisation == "authors":
        return max(own_tokens, 1.0) * world
    raise ValueError(f"loss_normalisation {normalisation!r} is not one of "
                     f"{list(LOSS_NORMALISATIONS)}")


def accumulation_steps(params: dict[str, Any], world: int) -> int:
    per_step = params["micro_batch"] * world
    if params["global_batch"] % per_step:
        raise ValueError(f"global_batch {params['global_batch']} is not a multiple of "
                         f"micro_batch {params['micro_batch']} x {world} processes")
    return params["global_batch"] // per_step


def prepare_model(acc: Any, spec: RunSpec, attn: str, total_steps: int, accum: int
                  ) -> tuple[Any, Any, Any]:
    """The model to train (wrapped to give token log-probs), its optimizer and its LR
    schedule, prepared by accelerate (DeepSpeed's "auto" values filled from the run's
    params)."""
    p = spec.params
    plugin = acc.state.deepspeed_plugin
    # DeepSpeed bf16 keeps bf16 weights + an fp32 master copy: load bf16 (the
    # checkpoints are bf16); otherwise fp32 weights (+ autocast on GPU)
    deepspeed_bf16 = plugin is not None and acc.mixed_precision == "bf16"
    dtype = torch.bfloat16 if deepspeed_bf16 else torch.float32
    model = load_causal_lm(spec.init, dtype, attn, bool(p.get("gradient_checkpointing")))
    model.config.use_cache = False
    module = logprobs.TokenLogps(model)
    optimizer = make_optimizer(module.parameters(), p)
    # not prepared: accelerate would step it once per process
    scheduler = make_scheduler(optimizer, total_steps, p["warmup_ratio"])
    if plugin is not None:  # DeepSpeed's "auto" values, from our params
        plugin.deepspeed_config.update({
            "train_micro_batch_size_per_gpu": p["micro_batch"],
            "gradient_accumulation_steps": accum,
            "train_batch_size": p["global_batch"],
            "gradient_clipping": p["max_grad_norm"],
        })
    module, optimizer = acc.prepare(module, optimizer)
    acc.register_for_checkpointing(scheduler)
    return module, optimizer, scheduler


def stop_requested(acc: Any, world: int, stop: StopSignals) -> bool:
    """Whether any process got a stop signal: all ranks must save and stop together."""
    if world == 1:
        return stop.received is not None
    flag = torch.tensor(0.0 if stop.received is None else 1.0, device=acc.device)
    return bool(acc.reduce(flag, reduction="sum") > 0)


def fp32_partitions(optimizer: Any) -> list[torch.Tensor] | None:
    """DeepSpeed ZeRO-1/2's fp32 master weights of this process, else None."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return list(getattr(inner, "single_partition_of_fp32_groups", None) or []) or None


def completion_tokens(items: list[Item], indices: list[int]) -> float:
    """The loss-bearing tokens of the examples ``indices``."""
    return float(sum(s.n_completion for i in indices for s in items[i].seqs))


class Trainer:
    """The optimisation loop, the same for every objective."""

    def __init__(self, spec: RunSpec) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.spec, p = spec, spec.params
        self.objective = losses.objective(spec.objective)
        losses.check_sequence_weights(spec.objective, self.objective, p)
        self.normalisation = loss_normalisation(p)
        state = distributed_state()
        self.world, self.rank = state.num_processes, state.process_index
        self.accum = accumulation_steps(p, self.world)
        self.accelerator = Accelerator(
            mixed_precision="bf16" if torch.cuda.is_available() else "no",
            gradient_accumulation_steps=self.accum,
        )
        set_seed(p["seed"])
        # the same plan on every process and on a rerun: a resumed run continues it
        self.plan, self.steps_per_epoch = run_plan(len(spec.items), p, self.objective.shuffle,
                                                   self.world, self.accum)
        self.total_steps = len(self.plan)
        self.attn, self.packed = attention.training_attention()
        self.pad_id = pad_id(spec.tokenizer)
        self.module, self.optimizer, self.scheduler = prepare_model(
            self.accelerator, spec, self.attn, self.total_steps, self.accum)
        self.device = self.accelerator.device
        self.ckpt_dir = spec.run_dir / "checkpoints"
        self.rows: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.start_step, self.elapsed_before = 0, 0.0
        self._resume()

    @property
    def layout(self) -> dict[str, Any]:
        """How the processes share the work: per-rank resume state depends on it."""
        return {"world_size": self.world, "distributed": self.accelerator.distributed_type.value}

    def _resume(self) -> None:
        acc = self.accelerator
        found = find_resume_state(self.ckpt_dir, self.spec.fingerprint, self.layout,
                                  self.spec.params.get("run"))
        acc.wait_for_everyone()
        if found is None:
            if acc.is_main_process:  # stale, foreign or another layout: start afresh
                for sub in ("checkpoints", "tb"):
                    shutil.rmtree(self.spec.run_dir / sub, ignore_errors=True)
            acc.wait_for_everyone()
            return
        resume_dir, state = found
        # its files match their record (find_resume_state): a failure here is named
        with naming_file(resume_dir, "loading the resume state", checkpoints.TORCH_IO_ERRORS):
            acc.load_state(str(resume_dir))
        self.start_step, self.rows = state["step"], state["rows"]
        self.checkpoints, self.elapsed_before = state["checkpoints"], state["elapsed_s"]
        log.info("resumed %s at step %d/%d from %s", self.spec.params.get("run"),
                 self.start_step, self.total_steps, resume_dir)
        if acc.is_main_process:
            checkpoints.drop_later_checkpoints(self.ckpt_dir, self.start_step)
        acc.wait_for_everyone()

    # -------------------------------------------------------------- one step

    def _forward(self, indices: list[int]) -> tuple[torch.Tensor, Stats]:
        items = [self.spec.items[i] for i in indices]
        batch = batching.make_batch([s for it in items for s in it.seqs], self.packed,
                                    self.pad_id).to(self.device)
        refs = torch.tensor([it.ref for it in items], dtype=torch.float32, device=self.device) \
            if self.objective.needs_ref else None
        return micro_loss(self.module, batch, self.objective, self.spec.params, refs)

    def _normaliser(self, indices: list[int], mine: list[list[int]]) -> float:
        """This process's divisor of its summed losses (``loss_divisor``): a token mean
        under the run's ``loss_normalisation`` (SFT), else the step's examples."""
        if not self.objective.token_mean:
            return float(len(indices))
        own = completion_tokens(self.spec.items, [i for mb in mine for i in mb])
        step_tokens = completion_tokens(self.spec.items, indices)
        return loss_divisor(self.normalisation, own, step_tokens, self.world)

    def _apply_update(self, before: list[torch.Tensor] | None) -> tuple[float, torch.Tensor]:
        """Clip, step (DeepSpeed already stepped inside the last backward) and measure
        the update norm; returns (grad norm, squared update norm of all processes)."""
        acc = self.accelerator
        grad_norm = acc.clip_grad_norm_(self.module.parameters(), self.spec.params["max_grad_norm"])
        if before is None:
            squared = step_with_update_norm(getattr(self.optimizer, "optimizer", self.optimizer))
        else:
            self.optimizer.step()
            with torch.no_grad():
                squared = sum(((t.detach() - b).double().pow(2).sum()
                               for t, b in zip(fp32_partitions(self.optimizer), before, strict=True)),
                              torch.zeros((), dtype=torch.float64, device=self.device))
            squared = acc.reduce(squared, reduction="sum")  # each rank: its partition
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm) if grad_norm is not None else float("nan"), squared

    def _step(self, step: int) -> dict[str, Any]:
        acc, t0 = self.accelerator, time.perf_counter()
        indices = self.plan[step]
        mine = micro_batches(indices, self.spec.params, self.rank, self.world, self.accum)
        norm = self._normaliser(indices, mine)
        # accelerate/DeepSpeed divide by the accumulation steps and average over
        # processes; undo both so the gradient is that of the step's loss, the sum over
        # processes of their summed losses / norm
        scale = self.accum * self.world / norm
        stats, lr = Stats(), self.scheduler.get_last_lr()[0]
        for k, mb in enumerate(mine):
            last = k == self.accum - 1
            with acc.accumulate(self.module):
                # an empty micro-batch (short last step): a dummy forward with weight 0
                loss_sum, mb_stats = self._forward(mb or indices[:1])
                partitions = fp32_partitions(self.optimizer) if last else None
                before = [t.detach().clone() for t in partitions] if partitions else None
                acc.backward(loss_sum * ((1.0 if mb else 0.0) * scale))
                if mb:
                    stats = stats + mb_stats + Stats(loss=loss_sum.detach().double() / norm)
                if last:
                    grad_norm, squared = self._apply_update(before)
        self.scheduler.step()
        stats = Stats.from_tensor(acc.reduce(stats.to_tensor(self.device), reduction="sum"))
        check_finite(self.spec.params.get("run"), step, stats.loss, grad_norm, self.checkpoints)
        return log_row(step + 1, step_epoch(step + 1, self.steps_per_epoch), stats, lr,
                       grad_norm, float(squared.sqrt()), time.perf_counter() - t0)

    # ----------------------------------------------------------- checkpoints

    def _epoch_value(self, step: int) -> float | int:
        if self.objective.epoch_checkpoints and step % self.steps_per_epoch == 0:
            return step // self.steps_per_epoch
        return step_epoch(step, self.steps_per_epoch)

    def _is_checkpoint(self, step: int) -> bool:
        if step == self.total_steps or step % self.spec.params["save_every_steps"] == 0:
            return True
        return self.objective.epoch_checkpoints and step % self.steps_per_epoch == 0

    def _save_checkpoint(self, step: int, elapsed: float) -> None:
        path = self.ckpt_dir / checkpoints.checkpoint_name(step)
        entry = {"step": step, "epoch": self._epoch_value(step), "path": path.as_posix()}
        if step == self.total_steps:
            entry["final"] = True
        listed = [*self.checkpoints, entry]
        self._save_state(step, elapsed, listed)
        if self.accelerator.is_main_process:  # a resume point before it is now superseded
            checkpoints.drop_unlisted(self.ckpt_dir, listed)
        self.checkpoints = listed

    def _save_state(self, step: int, elapsed: float, listed: list[dict[str, Any]]) -> None:
        state = {**self.layout, "fingerprint": self.spec.fingerprint, "step": step,
                 "rows": self.rows, "checkpoints": listed, "elapsed_s": elapsed}
        lm = self.accelerator.unwrap_model(self.module).lm
        checkpoints.save_checkpoint(self.accelerator, lm, self.spec.tokenizer, self.spec.init,
                                    self.ckpt_dir, step, state, self.checkpoints)
        if self.accelerator.is_main_process:
            checkpoints.write_log_csv(self.spec.log_csv_path, self.rows)

    def _stop(self, step: int, elapsed: float) -> None:
        # a checkpoint step is saved already; another step's state is saved like one but
        # not listed, so the manifest and the curves see an uninterrupted run's checkpoints
        if not self._is_checkpoint(step):
            self._save_state(step, elapsed, self.checkpoints)
        raise TrainingStopped(
            f"{self.spec.params.get('run')}: stopped by a signal after step {step}/"
            f"{self.total_steps}; its state is saved in {self.ckpt_dir}: rerun to resume")

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        acc, spec = self.accelerator, self.spec
        progress = checkpoints.Progress(spec.run_dir, self.total_steps, self.start_step,
                                        spec.params.get("run"), acc.is_main_process)
        start = time.perf_counter()
        self.module.train()
        with StopSignals() as stop:
            for step in range(self.start_step, self.total_steps):
                row = self._step(step)
                elapsed = self.elapsed_before + time.perf_counter() - start
                row["elapsed_s"] = round(elapsed, 3)
                self.rows.append(row)
                progress.report(row)
                if self._is_checkpoint(row["step"]):
                    self._save_checkpoint(row["step"], elapsed)
                    progress.flush()
                if stop_requested(self.accelerator, self.world, stop):
                    progress.close()
                    self._stop(row["step"], elapsed)
                if spec.hooks.after_step is not None:
                    spec.hooks.after_step(row["step"])
        progress.close()
        manifest = run_manifest(self, self.elapsed_before + time.perf_counter() - start)
        if acc.is_main_process:
            checkpoints.write_log_csv(spec.log_csv_path, self.rows)
            write_json(spec.manifest_path, manifest)
            # a finished run needs no resume state (12+ GB of optimizer state at paper scale)
            shutil.rmtree(Path(self.checkpoints[-1]["path"]) / "resume", ignore_errors=True)
        acc.wait_for_everyone()
        return manifest


def run_manifest(trainer: Trainer, wall: float) -> dict[str, Any]:
    """The run's ``manifest.json`` (docs/ARCHITECTURE.md, Training)."""
    spec = trainer.spec
    return {
        "run": spec.params.get("run"), "stage": spec.stage, "objective": spec.objective,
        "params": spec.params, "init": str(spec.init), "total_steps": trainer.total_steps,
        "steps_per_epoch": trainer.steps_per_epoch, "checkpoints": trainer.checkpoints,
        "final_checkpoint": trainer.checkpoints[-1]["path"], "log": spec.log_csv_path.as_posix(),
        "wall_time_s": round(wall, 3), "attention": trainer.attn,
        "layout": "packed" if trainer.packed else "padded", **trainer.layout,
        "provenance": provenance(),
    }


# ----------------------------------------------------------------- entries


def run_sft(
    params: dict[str, Any],
    data: str | os.PathLike,
    init: str | os.PathLike,
    manifest: str | os.PathLike,
    log_csv: str | os.PathLike,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """SFT on ``data`` (sft.parquet) from the model folder ``init``."""
    tokenizer = load_tokenizer(init)
    items = sft_items(tokenizer, data, params["max_length"])
    spec = RunSpec("sft", params, items, str(init), tokenizer, Path(manifest), Path(log_csv),
                   fingerprint(params, [data, init]), hooks or Hooks())
    return Trainer(spec).run()


def run_stage2(
    params: dict[str, Any],
    pairs: str | os.PathLike,
    init_manifest: str | os.PathLike,
    manifest: str | os.PathLike,
    log_csv: str | os.PathLike,
    ref_logps: str | os.PathLike | None = None,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """One stage-2 run (objective ``params["objective"]``) from an SFT run's final checkpoint."""
    objective = losses.objective(params["objective"])
    if objective.needs_ref and ref_logps is None:
        raise ValueError(f"objective {params['objective']!r} needs --ref-logps")
    init = init_checkpoint(init_manifest)
    tokenizer = load_tokenizer(init)
    ref = ref_logps if objective.needs_ref else None
    items = pair_items(tokenizer, pairs, params["max_prompt_length"], params["max_length"], ref)
    inputs = [pairs, init_manifest] + ([ref] if ref else [])
    spec = RunSpec("stage2", params, items, init, tokenizer, Path(manifest), Path(log_csv),
                   fingerprint(params, inputs), hooks or Hooks())
    return Trainer(spec).run()


# ------------------------------------------------------------------ rows


def step_epoch(step: int, steps_per_epoch: int) -> float:
    return round(step / steps_per_epoch, 4)


def log_row(step: int, epoch: float, stats: Stats, lr: float, grad_norm: float,
            update_norm: float, seconds: float) -> dict[str, Any]:
    """One ``log.csv`` row (``checkpoints.LOG_COLUMNS``) of optimizer step ``step``."""
    return {
        "step": step, "epoch": epoch, "loss": stats.loss, "lr": lr, "grad_norm": grad_norm,
        "update_norm": update_norm, "lr_x_grad_norm": lr * grad_norm,
        "chosen_logps": stats.ratio("chosen_logps", "n_chosen"),
        "rejected_logps": stats.ratio("rejected_logps", "n_rejected"),
        "reward_margin": stats.ratio("reward_margin", "n_rewards"),
        "reward_accuracy": stats.ratio("reward_correct", "n_rewards"),
        "tokens": int(stats.tokens), "tokens_sq": int(stats.tokens_sq),
        "tokens_per_s": round(stats.tokens / seconds, 1),
        "elapsed_s": None,  # set by Trainer.run
    }


def check_finite(run: str | None, step: int, loss: float, grad_norm: float,
                 saved: list[dict[str, Any]]) -> None:
    """Stop at a NaN/Inf loss or gradient norm, naming the step and the last checkpoint."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    last = saved[-1]["path"] if saved else "none (init model)"
    what = "loss" if not math.isfinite(loss) else "gradient norm"
    raise NonFiniteLossError(f"{run}: non-finite {what} at step {step + 1} (loss={loss}, "
                             f"grad_norm={grad_norm}); stopping. Last good checkpoint: {last}")
