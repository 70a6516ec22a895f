"""One training engine for SFT (stage 1) and stage 2 (DPO, SimPO, REDI).

Built on accelerate: ``scripts/launch.sh N`` runs it as N processes, under
``accelerate launch`` with DeepSpeed ZeRO-2 (configs/) on GPUs, or under
``torchrun`` on a CPU machine (gloo; ZeRO-2 or plain DDP), and as one plain
process for N <= 1. The same optimizer everywhere (AdamW, 10 % linear warmup
then linear decay to 0, clipping; ``redi.config.OPTIMIZER``), bf16 on GPU, fp32
on CPU. On GPUs micro-batches are packed without padding (PyTorch's varlen
FlashAttention, ``redi.attention``); on a CPU they are padded rows under SDPA
(see ``redi.batching``).

Losses, per optimizer step (a global batch of ``global_batch`` examples =
``micro_batch x accumulation x processes``):

* SFT: completion-only NLL, a token mean over all completion tokens of the step;
* stage 2: the objective's per-pair loss (``redi.losses``), a mean over the
  step's pairs; chosen and rejected of every pair go through one forward.

Run folder ``results/train/<run>/`` (docs/ARCHITECTURE.md): ``manifest.json``
(written last), ``log.csv`` (one row per step), ``tb/`` (TensorBoard) and
``checkpoints/step-NNNNNN/`` (Hugging Face folders). While the run is going,
only the latest checkpoint keeps ``resume/`` (accelerate state: optimizer,
scheduler, RNG + the trainer state: step, data position, log rows); a rerun of
a killed job continues from it when the run's fingerprint (params, input
files, training code) is unchanged, and starts afresh otherwise. A finished
run deletes its last ``resume/``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from redi import attention, batching, logprobs, losses
from redi.batching import TokenSeq
from redi.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

LOG_COLUMNS = [
    "step",
    "epoch",
    "loss",
    "lr",
    "grad_norm",
    "update_norm",
    "lr_x_grad_norm",
    "chosen_logps",
    "rejected_logps",
    "reward_margin",
    "reward_accuracy",
    "tokens",
    "tokens_per_s",
    "elapsed_s",
]
# code whose change invalidates a resume state (besides params and inputs)
_CODE_MODULES = ("training", "batching", "logprobs", "losses", "prompts", "attention")
_HASH_LIMIT = 64 * 2**20  # bigger input files are fingerprinted by size + mtime


class NonFiniteLossError(RuntimeError):
    """A NaN/Inf loss or gradient norm: the run stops, its last checkpoint stays."""


@dataclass
class Item:
    """One training example: ``(sequence,)`` for SFT, ``(chosen, rejected)`` for stage 2."""

    seqs: tuple[TokenSeq, ...]
    ref: tuple[float, float] | None = None


@dataclass
class Hooks:
    """Test hooks: ``after_step(step)`` runs after each optimizer step and checkpoint."""

    after_step: Callable[[int], None] | None = None


# ----------------------------------------------------------------------- data


def read_parquet_columns(path: str | os.PathLike, columns: list[str]) -> dict[str, list]:
    import pyarrow.parquet as pq  # lighter than pandas on the critical start-up path

    return pq.read_table(path, columns=columns).to_pydict()


def sft_items(tokenizer: Any, path: str | os.PathLike, max_length: int) -> list[Item]:
    rows = read_parquet_columns(path, ["problem", "response"])
    prompts = batching.encode_prompts(tokenizer, rows["problem"])
    completions = batching.encode_completions(tokenizer, rows["response"], batching.SFT_SUFFIX)
    return [
        Item((batching.sft_sequence(p, c, max_length),))
        for p, c in zip(prompts, completions, strict=True)
    ]


def pair_items(
    tokenizer: Any,
    path: str | os.PathLike,
    max_prompt_length: int,
    max_length: int,
    ref_path: str | os.PathLike | None = None,
) -> list[Item]:
    rows = read_parquet_columns(path, ["problem", "chosen", "rejected"])
    prompts = batching.encode_prompts(tokenizer, rows["problem"])
    chosen = batching.encode_completions(tokenizer, rows["chosen"], batching.STAGE2_SUFFIX)
    rejected = batching.encode_completions(tokenizer, rows["rejected"], batching.STAGE2_SUFFIX)
    refs: list[tuple[float, float] | None] = [None] * len(prompts)
    if ref_path is not None:
        ref = read_parquet_columns(
            ref_path, ["pair_index", "ref_chosen_logps", "ref_rejected_logps"]
        )
        if sorted(ref["pair_index"]) != list(range(len(prompts))):
            raise ValueError(f"{ref_path} does not cover the {len(prompts)} pairs of {path}")
        for i, c, r in zip(
            ref["pair_index"], ref["ref_chosen_logps"], ref["ref_rejected_logps"], strict=True
        ):
            refs[i] = (float(c), float(r))
    return [
        Item(batching.pair_sequences(p, c, r, max_prompt_length, max_length), ref)
        for p, c, r, ref in zip(prompts, chosen, rejected, refs, strict=True)
    ]


def step_plan(
    n_items: int, global_batch: int, epochs: int, shuffle_seed: int | None
) -> list[list[int]]:
    """Item indices of every optimizer step. File order, or a seeded permutation per
    epoch (``shuffle_seed + epoch``, so a resumed run sees the same order). The
    last batch of an epoch may be smaller (as HF Trainer)."""
    plan = []
    for epoch in range(epochs):
        if shuffle_seed is None:
            order = list(range(n_items))
        else:
            gen = torch.Generator().manual_seed(shuffle_seed + epoch)
            order = torch.randperm(n_items, generator=gen).tolist()
        plan += [order[i : i + global_batch] for i in range(0, n_items, global_batch)]
    return plan


def rank_micro_batches(indices: list[int], rank: int, world: int, accum: int) -> list[list[int]]:
    """This process's ``accum`` micro-batches of one step (some may be empty in a
    short last step: every process still runs ``accum`` forwards)."""
    mine = indices[rank::world]
    base, extra = divmod(len(mine), accum)
    out, pos = [], 0
    for k in range(accum):
        size = base + (1 if k < extra else 0)
        out.append(mine[pos : pos + size])
        pos += size
    return out


# ---------------------------------------------------------------- fingerprint


def _digest(path: Path) -> Any:
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): _digest(p)
            for p in sorted(path.rglob("*"))
            if p.is_file()
        }
    stat = path.stat()
    if stat.st_size > _HASH_LIMIT:
        return [stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(params: dict[str, Any], inputs: list[str | os.PathLike]) -> str:
    """What a resume state must match: params, input files and the training code."""
    code_dir = Path(__file__).parent
    blob = {
        "params": params,
        "inputs": {str(p): _digest(Path(p)) for p in inputs},
        "code": {m: _digest(code_dir / f"{m}.py") for m in _CODE_MODULES},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------- model


def distributed_state() -> Any:
    """accelerate's process state, also for ``torchrun`` on a machine without CUDA.

    There accelerate does not pick up the torchrun world by itself; creating the
    state with a CPU backend first makes it (gloo: ``cpu=True`` for DDP,
    ``backend="gloo"`` for DeepSpeed, whose accelerator is then ``DS_ACCELERATOR=cpu``).
    """
    from accelerate import PartialState

    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return PartialState()
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return PartialState(backend="gloo")
    return PartialState(cpu=True)


def load_model(
    path: str | os.PathLike,
    dtype: torch.dtype,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
) -> Any:
    from transformers import AutoModelForCausalLM

    if attn_implementation == attention.VARLEN:
        attention.register()
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation
    )
    model.config.use_cache = False
    if gradient_checkpointing:
        # non-reentrant, as the authors (the gradient_checkpointing_* names are deprecated
        # in transformers 5.24; older 5.x releases have only those)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def linear_warmup_decay(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """HF ``get_linear_schedule_with_warmup`` with ``ceil(ratio * total)`` warmup steps."""
    warmup = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


# -------------------------------------------------------------------- engine


@dataclass
class RunSpec:
    """Everything one training run needs (built by ``run_sft``/``run_stage2``)."""

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


class Trainer:
    """The optimisation loop shared by SFT and stage 2."""

    def __init__(self, spec: RunSpec) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.spec = spec
        p = spec.params
        state = distributed_state()
        self.world, self.rank = state.num_processes, state.process_index
        per_step = p["micro_batch"] * self.world
        if p["global_batch"] % per_step:
            raise ValueError(
                f"global_batch {p['global_batch']} is not a multiple of micro_batch "
                f"{p['micro_batch']} x {self.world} processes"
            )
        self.accum = p["global_batch"] // per_step
        self.accelerator = Accelerator(
            mixed_precision="bf16" if torch.cuda.is_available() else "no",
            gradient_accumulation_steps=self.accum,
        )
        acc = self.accelerator
        set_seed(p["seed"])

        shuffle = p["seed"] if spec.stage == "sft" else None  # stage 2: file order
        self.plan = step_plan(len(spec.items), p["global_batch"], p["epochs"], shuffle)
        self.total_steps = len(self.plan)
        self.steps_per_epoch = math.ceil(len(spec.items) / p["global_batch"])
        self.objective = losses.objective(p["objective"]) if spec.stage == "stage2" else None

        self.attn, self.packed = attention.training_attention()
        self.pad_id = spec.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = spec.tokenizer.eos_token_id
        plugin = acc.state.deepspeed_plugin
        # DeepSpeed bf16 keeps bf16 weights + an fp32 master copy: load bf16 (the
        # checkpoints are bf16); otherwise fp32 weights (+ autocast on GPU)
        dtype = (
            torch.bfloat16
            if plugin is not None and acc.mixed_precision == "bf16"
            else torch.float32
        )
        model = load_model(spec.init, dtype, bool(p.get("gradient_checkpointing")), self.attn)
        self.module = logprobs.TokenLogps(model)
        decay, no_decay = [], []  # no weight decay on biases and norm weights (as HF Trainer)
        for param in self.module.parameters():
            (no_decay if param.ndim < 2 else decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": p["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=p["lr"],
            betas=(p["adam_beta1"], p["adam_beta2"]),
            eps=p["adam_eps"],
        )
        # not prepared: accelerate would step it once per process
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_warmup_decay(self.total_steps, p["warmup_ratio"])
        )
        if plugin is not None:  # DeepSpeed's "auto" values, from our params
            plugin.deepspeed_config.update(
                {
                    "train_micro_batch_size_per_gpu": p["micro_batch"],
                    "gradient_accumulation_steps": self.accum,
                    "train_batch_size": p["global_batch"],
                    "gradient_clipping": p["max_grad_norm"],
                }
            )
        self.module, self.optimizer = acc.prepare(self.module, optimizer)
        acc.register_for_checkpointing(self.scheduler)
        self.device = acc.device

        self.ckpt_dir = spec.run_dir / "checkpoints"
        self.rows: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.start_step = 0
        self.elapsed_before = 0.0
        self._resume()

    # ----------------------------------------------------------- resume state

    @property
    def layout(self) -> dict[str, Any]:
        """How the processes share the work: per-rank resume state depends on it."""
        return {"world_size": self.world, "distributed": self.accelerator.distributed_type.value}

    def _find_resume_state(self) -> tuple[Path, dict[str, Any]] | None:
        """The latest resume state of this run (same fingerprint) that this
        process layout can load; another world size restarts the run, logged."""
        if not self.ckpt_dir.is_dir():
            return None
        for state_file in sorted(self.ckpt_dir.glob("step-*/resume/trainer_state.json"),
                                 reverse=True):
            state = read_json(state_file)
            if state.get("fingerprint") != self.spec.fingerprint:
                continue
            written = {k: state.get(k) for k in self.layout}
            if written != self.layout:
                # optimizer shards and RNG states are per rank: they cannot be re-sharded
                log.warning("%s: resume state %s was written by %s, this run is %s: "
                            "starting the run afresh", self.spec.params.get("run"),
                            state_file.parent, written, self.layout)
                return None
            return state_file.parent, state
        return None

    def _resume(self) -> None:
        acc = self.accelerator
        found = self._find_resume_state()
        acc.wait_for_everyone()
        if found is None:
            if acc.is_main_process:  # stale or foreign: start afresh
                for sub in ("checkpoints", "tb"):
                    shutil.rmtree(self.spec.run_dir / sub, ignore_errors=True)
            acc.wait_for_everyone()
            return
        resume_dir, state = found
        acc.load_state(str(resume_dir))
        self.start_step = state["step"]
        self.rows = state["rows"]
        self.checkpoints = state["checkpoints"]
        self.elapsed_before = state["elapsed_s"]
        log.info(
            "resumed %s at step %d/%d from %s",
            self.spec.params.get("run"),
            self.start_step,
            self.total_steps,
            resume_dir,
        )
        if acc.is_main_process:  # drop what a killed attempt left after that checkpoint
            for path in self.ckpt_dir.iterdir():
                later = path.name.startswith("step-") and int(path.name[5:]) > self.start_step
                if path.name.startswith(".") or later:
                    shutil.rmtree(path, ignore_errors=True)
        acc.wait_for_everyone()

    # -------------------------------------------------------------- one step

    def _update_tensors(self) -> tuple[list[torch.Tensor], bool]:
        """The full-precision tensors the optimizer updates, and whether they are
        this process's partition only (DeepSpeed ZeRO-1/2 fp32 master weights)."""
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        parts = getattr(inner, "single_partition_of_fp32_groups", None)
        if parts:
            return list(parts), True
        return [p for p in self.module.parameters() if p.requires_grad], False

    def _micro_loss(
        self, batch: batching.Batch, items: list[Item], stats: torch.Tensor, weight: float
    ) -> torch.Tensor:
        """Sum of this micro-batch's losses (unnormalised); accumulates log stats."""
        token_logps = logprobs.batch_token_logps(self.module, batch)
        sums = logprobs.sequence_sums(token_logps, batch)
        mean_logps = (sums / batch.lengths.clamp(min=1)).detach()
        if self.spec.stage == "sft":
            loss_sum = -token_logps.sum()
            if weight:
                stats[1] += mean_logps.sum().double()
                stats[2] += len(items)
            return loss_sum
        pairs = losses.PairLogps.interleaved(sums, batch.lengths)
        if self.objective.needs_ref:
            ref = torch.tensor([it.ref for it in items], dtype=sums.dtype, device=sums.device)
            pairs.ref_chosen, pairs.ref_rejected = ref[:, 0], ref[:, 1]
        per_pair = self.objective.loss(pairs, self.spec.params)
        if weight:
            stats[1] += mean_logps[0::2].sum().double()
            stats[2] += len(items)
            stats[3] += mean_logps[1::2].sum().double()
            stats[4] += len(items)
            if self.objective.rewards is not None:
                chosen_r, rejected_r = self.objective.rewards(pairs, self.spec.params)
                stats[5] += (chosen_r - rejected_r).detach().sum().double()
                stats[6] += (chosen_r > rejected_r).sum().double()
                stats[7] += len(items)
        return per_pair.sum()

    def _step(self, step: int) -> dict[str, Any]:
        acc, p, spec = self.accelerator, self.spec.params, self.spec
        t0 = time.perf_counter()
        indices = self.plan[step]
        if spec.stage == "sft":  # token mean over the whole step's completion tokens
            norm = float(sum(spec.items[i].seqs[0].n_completion for i in indices))
        else:  # mean over the step's pairs
            norm = float(len(indices))
        # accelerate/DeepSpeed divide by the accumulation steps and average over
        # processes; undo both so the gradient is that of the step's global loss
        scale = self.accum * self.world / norm
        # [loss, chosen sum, n, rejected sum, n, margin sum, correct, n, tokens]
        stats = torch.zeros(9, dtype=torch.float64, device=self.device)
        micro_batches = rank_micro_batches(indices, self.rank, self.world, self.accum)
        grad_norm: Any = None
        for k, mb in enumerate(micro_batches):
            weight = 1.0 if mb else 0.0
            items = [spec.items[i] for i in (mb or indices[:1])]  # empty: dummy, weight 0
            batch = batching.make_batch(
                [s for it in items for s in it.seqs], self.packed, self.pad_id
            ).to(self.device)
            last = k == len(micro_batches) - 1
            with acc.accumulate(self.module):
                if last:  # before backward: DeepSpeed steps inside the last backward
                    tensors, partitioned = self._update_tensors()
                    before = [t.detach().clone() for t in tensors]
                loss_sum = self._micro_loss(batch, items, stats, weight)
                acc.backward(loss_sum * (weight * scale))
                stats[0] += loss_sum.detach().double() * weight / norm
                stats[8] += batch.n_tokens * weight
                if last:
                    grad_norm = acc.clip_grad_norm_(self.module.parameters(), p["max_grad_norm"])
                    lr = self.scheduler.get_last_lr()[0]
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        with torch.no_grad():
            sq = sum(
                (
                    (t.detach() - b).float().pow(2).sum()
                    for t, b in zip(tensors, before, strict=True)
                ),
                torch.zeros((), device=self.device),
            )
            del before
            if partitioned:
                sq = acc.reduce(sq, reduction="sum")
        stats = acc.reduce(stats, reduction="sum")
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        loss = float(stats[0])
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            last_ckpt = self.checkpoints[-1]["path"] if self.checkpoints else "none (init model)"
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            raise NonFiniteLossError(
                f"{p.get('run')}: non-finite {what} at step {step + 1} "
                f"(loss={loss}, grad_norm={grad_norm}); stopping. "
                f"Last good checkpoint: {last_ckpt}"
            )
        dt = time.perf_counter() - t0

        def ratio(num: int, den: int) -> float | None:
            return float(stats[num] / stats[den]) if stats[den] > 0 else None

        return {
            "step": step + 1,
            "epoch": round((step + 1) / self.steps_per_epoch, 4),
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "update_norm": float(sq.sqrt()),
            "lr_x_grad_norm": lr * grad_norm,
            "chosen_logps": ratio(1, 2),
            "rejected_logps": ratio(3, 4),
            "reward_margin": ratio(5, 7),
            "reward_accuracy": ratio(6, 7),
            "tokens": int(stats[8]),
            "tokens_per_s": round(float(stats[8]) / dt, 1),
            "elapsed_s": None,  # set by the caller
        }

    # ----------------------------------------------------------- checkpoints

    def _epoch_value(self, step: int) -> float | int:
        if self.spec.stage == "sft" and step % self.steps_per_epoch == 0:
            return step // self.steps_per_epoch
        return round(step / self.steps_per_epoch, 4)

    def _is_checkpoint(self, step: int) -> bool:
        if step == self.total_steps or step % self.spec.params["save_every_steps"] == 0:
            return True
        return self.spec.stage == "sft" and step % self.steps_per_epoch == 0

    def _save_checkpoint(self, step: int, elapsed: float) -> None:
        acc = self.accelerator
        name = f"step-{step:06d}"
        final, tmp = self.ckpt_dir / name, self.ckpt_dir / f".{name}.tmp"
        entry = {"step": step, "epoch": self._epoch_value(step), "path": final.as_posix()}
        if step == self.total_steps:
            entry["final"] = True
        checkpoints = [*self.checkpoints, entry]
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            lm = acc.unwrap_model(self.module).lm
            lm.save_pretrained(tmp, safe_serialization=True)
            self.spec.tokenizer.save_pretrained(tmp)
            generation = Path(self.spec.init) / "generation_config.json"
            if generation.exists():  # stop tokens (<|im_end|>) exactly as the init model's
                shutil.copy2(generation, tmp / "generation_config.json")
        acc.wait_for_everyone()
        # accelerate warns that it drops the tied lm_head copy: expected (it is re-tied on load)
        logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
        acc.save_state(str(tmp / "resume"))  # every process (DeepSpeed partitions)
        # save_state ends without a barrier: no rank may rename the folder while
        # another still writes its shard or RNG state into it
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {
                **self.layout,
                "fingerprint": self.spec.fingerprint,
                "step": step,
                "rows": self.rows,
                "checkpoints": checkpoints,
                "elapsed_s": elapsed,
            }
            (tmp / "resume" / "trainer_state.json").write_text(json.dumps(state))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in self.checkpoints:  # only the latest keeps its resume state
                shutil.rmtree(Path(old["path"]) / "resume", ignore_errors=True)
            self._write_log_csv()
        acc.wait_for_everyone()
        self.checkpoints = checkpoints

    def _write_log_csv(self) -> None:
        with atomic_path(self.spec.log_csv_path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if row[k] is None else row[k]) for k in LOG_COLUMNS})

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        acc, spec = self.accelerator, self.spec
        writer = None
        if acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops the events a killed attempt wrote after the checkpoint
            writer = SummaryWriter(str(spec.run_dir / "tb"), purge_step=self.start_step + 1)
        start = time.perf_counter()
        self.module.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.start_step,
            desc=spec.params.get("run"),
            disable=not acc.is_main_process,
            mininterval=2,
            dynamic_ncols=True,
        )
        for step in range(self.start_step, self.total_steps):
            row = self._step(step)
            elapsed = self.elapsed_before + time.perf_counter() - start
            row["elapsed_s"] = round(elapsed, 3)
            self.rows.append(row)
            if writer is not None:
                for key in LOG_COLUMNS[2:]:
                    if row[key] is not None:
                        writer.add_scalar(f"train/{key}", row[key], row["step"])
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
            if row["step"] % max(1, self.total_steps // 10) == 0:
                log.info(
                    "step %d/%d loss %.5f grad_norm %.4g update_norm %.4g chosen %.4f "
                    "rejected %s tok/s %.0f",
                    row["step"],
                    self.total_steps,
                    row["loss"],
                    row["grad_norm"],
                    row["update_norm"],
                    row["chosen_logps"],
                    row["rejected_logps"],
                    row["tokens_per_s"],
                )
            if self._is_checkpoint(row["step"]):
                self._save_checkpoint(row["step"], elapsed)
                if writer is not None:
                    writer.flush()
            if spec.hooks.after_step is not None:
                spec.hooks.after_step(row["step"])
        bar.close()
        if writer is not None:
            writer.close()
        wall = self.elapsed_before + time.perf_counter() - start
        manifest = {
            "run": spec.params.get("run"),
            "stage": spec.stage,
            "params": spec.params,
            "init": str(spec.init),
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "checkpoints": self.checkpoints,
            "final_checkpoint": self.checkpoints[-1]["path"],
            "log": spec.log_csv_path.as_posix(),
            "wall_time_s": round(wall, 3),
            "attention": self.attn,
            "layout": "packed" if self.packed else "padded",
            **self.layout,
        }
        if acc.is_main_process:
            self._write_log_csv()
            write_json(spec.manifest_path, manifest)
            # a finished run needs no resume state (12+ GB of optimizer state at paper scale)
            shutil.rmtree(Path(self.checkpoints[-1]["path"]) / "resume", ignore_errors=True)
        acc.wait_for_everyone()
        return manifest


# ----------------------------------------------------------------- entries


def _tokenizer(path: str | os.PathLike) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def run_sft(
    params: dict[str, Any],
    data: str | os.PathLike,
    init: str | os.PathLike,
    manifest: str | os.PathLike,
    log_csv: str | os.PathLike,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """SFT on ``data`` (sft.parquet) from the model folder ``init``."""
    tokenizer = _tokenizer(init)
    items = sft_items(tokenizer, data, params["max_length"])
    spec = RunSpec(
        "sft",
        params,
        items,
        str(init),
        tokenizer,
        Path(manifest),
        Path(log_csv),
        fingerprint(params, [data, init]),
        hooks or Hooks(),
    )
    return Trainer(spec).run()


def init_checkpoint(init_manifest: str | os.PathLike) -> str:
    """The final checkpoint of the SFT run whose manifest is given."""
    return read_json(init_manifest)["final_checkpoint"]


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
    tokenizer = _tokenizer(init)
    items = pair_items(
        tokenizer,
        pairs,
        params["max_prompt_length"],
        params["max_length"],
        ref_logps if objective.needs_ref else None,
    )
    inputs = [pairs, init_manifest] + ([ref_logps] if objective.needs_ref else [])
    spec = RunSpec(
        "stage2",
        params,
        items,
        init,
        tokenizer,
        Path(manifest),
        Path(log_csv),
        fingerprint(params, inputs),
        hooks or Hooks(),
    )
    return Trainer(spec).run()


def compute_ref_logps(
    params: dict[str, Any],
    pairs: str | os.PathLike,
    init_manifest: str | os.PathLike,
    out: str | os.PathLike,
) -> None:
    """DPO reference log-probs (sums over completion tokens) of every pair, once per
    (init SFT checkpoint, pair set): a forward-only pass, sharded over processes."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from accelerate.utils import gather_object
    from tqdm import tqdm

    state = distributed_state()
    init = init_checkpoint(init_manifest)
    tokenizer = _tokenizer(init)
    items = pair_items(tokenizer, pairs, params["max_prompt_length"], params["max_length"])
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    attn, packed = attention.training_attention()
    module = logprobs.TokenLogps(load_model(init, dtype, attn_implementation=attn))
    module = module.to(state.device).eval()
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    mine = list(range(len(items)))[state.process_index :: state.num_processes]
    micro = params["micro_batch"]
    rows: list[tuple[int, float, float]] = []
    with torch.no_grad():
        for start in tqdm(
            range(0, len(mine), micro),
            desc="ref logps",
            mininterval=2,
            disable=not state.is_main_process,
        ):
            idx = mine[start : start + micro]
            batch = batching.make_batch([s for i in idx for s in items[i].seqs], packed, pad_id).to(
                state.device
            )
            sums = logprobs.sequence_sums(logprobs.batch_token_logps(module, batch), batch).double()
            rows += [(i, float(sums[2 * k]), float(sums[2 * k + 1])) for k, i in enumerate(idx)]
    rows = sorted(gather_object(rows)) if state.num_processes > 1 else rows
    if state.is_main_process:
        table = pa.table(
            {
                "pair_index": [r[0] for r in rows],
                "ref_chosen_logps": [r[1] for r in rows],
                "ref_rejected_logps": [r[2] for r in rows],
            }
        )
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
        log.info("reference log-probs of %d pairs -> %s", len(rows), out)
    state.wait_for_everyone()
