"""The authors' stage-2 data order in the trainer (``data_order: authors``): every rank
trains on the items the authors' rank would, step by step, for the number of steps the
authors' pinned Trainer (transformers 4.50) takes; the config key and its way to the job."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml

from redi.train import training
from redi.train.train_data import (
    authors_micro_batches,
    authors_plan,
    authors_step_plan,
    run_plan,
    seedable_sampler_order,
    shard_batches,
    step_plan,
    trainer_max_steps,
)
from redi.workflow import config as rc
from redi.workflow import plan
from tests.conftest import ROOT
from tests.support.training import (
    Interrupt,
    accelerate_shards,
    kill_after,
    launch,
    stage2_params,
    train_args,
)

# --------------------------------------------------------- step arithmetic


def trainer_450_windows(n_examples: int, batches: int, accum: int, epochs: int,
                        max_steps: int) -> list[list[tuple[int, int]]]:
    """The (epoch, micro-batch) pairs of every optimizer step, transcribed from the
    pinned Trainer's ``_inner_training_loop`` (transformers 4.50.0, trainer.py ~L2477-2660):
    ``total_updates``, the last update's ``remainder`` (of examples, as written there),
    ``do_sync_step`` and the stop at ``max_steps``."""
    steps: list[list[tuple[int, int]]] = []
    window: list[tuple[int, int]] = []
    for epoch in range(epochs):
        iterator = iter(range(batches))
        remainder = n_examples % accum or accum
        total_updates = batches // accum + 1 - (1 if accum == 1 else 0)
        step = -1
        for update_step in range(total_updates):
            num_batches = accum if update_step != total_updates - 1 else remainder
            for batch in itertools.islice(iterator, num_batches):
                step += 1
                window.append((epoch, batch))
                if (step + 1) % accum == 0 or step + 1 == batches:
                    steps.append(window)
                    window = []
                    if len(steps) >= max_steps:  # DefaultFlowCallback: should_training_stop
                        return steps
    return steps


def test_papers_stage2_sizes_give_the_papers_1661_steps():
    """53,175 pairs, 1 per device, accumulation 4, 8 GPUs: ⌈53,175 / 8⌉ = 6,647 micro-
    batches per process, ⌊6,647 / 4⌋ = 1,661 steps; the last 3 micro-batches are never
    stepped. File order steps the partial window too: ⌈53,175 / 32⌉ = 1,662."""
    assert trainer_max_steps(53_175, 8, 1, 4, epochs=1) == 1661
    windows = trainer_450_windows(53_175, 6647, 4, 1, max_steps=1661)
    assert len(windows) == 1661 and sum(map(len, windows)) == 6644
    assert len(step_plan(53_175, 32, 1, None)) == 1662
    # every pair count the length filter may leave (1,661 steps in the paper) gives it
    assert {trainer_max_steps(n, 8, 1, 4, 1) for n in range(53_145, 53_177)} == {1661}
    assert trainer_max_steps(53_144, 8, 1, 4, 1) == 1660


def test_papers_sft_sizes_under_the_trainers_arithmetic():
    """77,629 examples, 8 per device, accumulation 2, 8 GPUs: 1,213 micro-batches per
    process, ⌊1,213 / 2⌋ = 606 steps per epoch in max_steps (3,030 for 5 epochs, 1,818
    for 3), while each epoch's loop steps its last single micro-batch too (607 a
    pass): the last epoch is cut 5 (3 epochs: 3) steps short."""
    assert trainer_max_steps(77_629, 8, 8, 2, epochs=5) == 3030
    assert trainer_max_steps(77_629, 8, 8, 2, epochs=3) == 1818
    windows = trainer_450_windows(77_629, 1213, 2, 5, max_steps=3030)
    per_epoch = [sum(1 for w in windows if w[-1][0] == e) for e in range(5)]
    assert per_epoch == [607, 607, 607, 607, 602]
    # the last epoch draws 1,204 of its 1,213 micro-batches (64 examples each, the last
    # 3 the padding's repeats): 573 examples unseen
    drawn = sum(len(w) for w in windows if w[-1][0] == 4)
    assert drawn == 1204 and (1213 - drawn) * 64 - (1213 * 64 - 77_629) == 573
    three = trainer_450_windows(77_629, 1213, 2, 3, max_steps=1818)
    assert [sum(1 for w in three if w[-1][0] == e) for e in range(3)] == [607, 607, 604]
    # ours (file order, every window stepped): 607 per epoch
    assert len(step_plan(77_629, 128, 5, 42)) == 3035
    assert len(step_plan(77_629, 128, 3, 42)) == 1821


@pytest.mark.parametrize(("n_items", "processes", "micro_batch", "accum"),
                         [(75, 8, 1, 4), (75, 1, 1, 4), (53, 2, 2, 3), (40, 2, 1, 4),
                          (15, 1, 2, 4)])
def test_authors_plan_takes_the_trainers_windows(n_items, processes, micro_batch, accum):
    """One epoch: the plan's steps are the Trainer loop's, window for window."""
    batches = -(-n_items // (processes * micro_batch))
    steps = trainer_max_steps(n_items, processes, micro_batch, accum, 1)
    windows = trainer_450_windows(n_items, batches, accum, 1, steps)
    got = authors_plan(n_items, 42, 1, processes, micro_batch, accum)
    assert len(got) == len(windows) == steps
    for step, window in zip(got, windows, strict=True):
        assert sum(len(mb) for r in range(processes)
                   for mb in authors_micro_batches(step, r, processes, accum, micro_batch)) \
            == len(step)
        assert [len(authors_micro_batches(step, r, processes, accum, micro_batch)[k]) > 0
                for r in range(processes) for k in range(accum)].count(True) \
            == len(window) * processes


# ------------------------------------------------------------ rank's items


@pytest.mark.parametrize(("n_items", "processes", "micro_batch", "accum"),
                         [(75, 8, 1, 4), (75, 1, 1, 4), (53, 2, 2, 3), (20, 2, 2, 2),
                          (15, 1, 2, 4), (5, 8, 1, 1)])
def test_each_rank_gets_its_shard_in_order(n_items, processes, micro_batch, accum):
    """Rank r's micro-batches over the plan are its shard of the sampler's permutation,
    as accelerate deals it, up to the Trainer's last step."""
    plan_ = authors_plan(n_items, 42, 1, processes, micro_batch, accum)
    order = seedable_sampler_order(n_items, 42)
    for rank in range(processes):
        mine = [mb for step in plan_
                for mb in authors_micro_batches(step, rank, processes, accum, micro_batch)]
        assert mine == shard_batches(order, processes, micro_batch, rank)[: len(plan_) * accum]


def test_two_ranks_equal_accelerates_loader():
    """20 pairs, 2 processes x 2 per micro-batch x accumulation 2: accelerate's own loader."""
    expected = accelerate_shards(20, 2, 2, seed=42)
    plan_ = authors_plan(20, 42, 1, 2, 2, 2)
    assert len(plan_) == 2  # ⌊⌈20 / 4⌉ / 2⌋: the fifth micro-batch is never stepped
    for rank in range(2):
        mine = [mb for step in plan_ for mb in authors_micro_batches(step, rank, 2, 2, 2)]
        assert mine == expected[rank][:4]
    assert expected[0] == [[2, 14], [1, 10], [6, 11], [7, 17], [19, 5]]
    assert plan_[0] == [2, 14, 18, 15, 1, 10, 0, 4] == [
        *expected[0][0], *expected[1][0], *expected[0][1], *expected[1][1]]


def test_run_plan_file_order_is_unchanged_and_a_bad_order_refused():
    params = {"global_batch": 4, "micro_batch": 2, "epochs": 2, "seed": 42}
    assert run_plan(10, params, False, 1, 2) == (step_plan(10, 4, 2, None), 3)
    assert run_plan(10, {**params, "data_order": "file"}, True, 1, 2) == (
        step_plan(10, 4, 2, 42), 3)
    # 5 micro-batches an epoch: max_steps 2 x ⌊5 / 2⌋ = 4, and the Trainer steps the
    # first epoch's short window (3 steps) before it stops in the second
    got, per_epoch = run_plan(10, {**params, "data_order": "authors"}, False, 1, 2)
    assert got == authors_step_plan(10, 42, 2, 1, 2, 2)[:4] and per_epoch == 2
    assert [len(w) for w in trainer_450_windows(10, 5, 2, 2, 4)] == [2, 2, 1, 2]
    assert [len(s) for s in got] == [4, 4, 2, 4]
    with pytest.raises(ValueError, match="data_order 'random' is not one of"):
        run_plan(10, {**params, "data_order": "random"}, False, 1, 2)


# ------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def init_manifest(tiny) -> Path:
    """The tiny random base model as a stage-2 init (the order needs no trained model)."""
    path = tiny["root"] / "authors_order_init" / "manifest.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"final_checkpoint": str(tiny["base"])}))
    return path


def record_items(monkeypatch) -> list[tuple[int, list[int]]]:
    """(step, indices) of every micro-batch this process's trainer forwards."""
    seen: list[tuple[int, list[int]]] = []
    step_fn, forward_fn = training.Trainer._step, training.Trainer._forward

    def step(self, at_step):
        self.recorded_step = at_step
        return step_fn(self, at_step)

    def forward(self, indices):
        seen.append((self.recorded_step, list(indices)))
        return forward_fn(self, indices)

    monkeypatch.setattr(training.Trainer, "_step", step)
    monkeypatch.setattr(training.Trainer, "_forward", forward)
    return seen


def run(tiny, init_manifest, params, name, hooks=None) -> dict:
    run_dir = tiny["root"] / name
    return training.run_stage2(params, tiny["pairs"], init_manifest, run_dir / "manifest.json",
                               run_dir / "log.csv", hooks=hooks)


AUTHORS = stage2_params("redi", run="redi_authors", data_order="authors", global_batch=4,
                        micro_batch=1, save_every_steps=2)


def test_one_process_trains_the_plan_and_resumes_it(tiny, init_manifest, monkeypatch):
    """20 pairs, 1 per micro-batch, accumulation 4: 5 steps of the sampler's permutation;
    killed after the step-2 checkpoint and one more step, the rerun goes on with step 3's
    pairs."""
    seen = record_items(monkeypatch)
    with pytest.raises(Interrupt):
        run(tiny, init_manifest, AUTHORS, "redi_authors", hooks=kill_after(3))
    resumed_from = len(seen)
    manifest = run(tiny, init_manifest, AUTHORS, "redi_authors")
    order = seedable_sampler_order(20, 42)
    expected = [(k, [i]) for k in range(5) for i in order[4 * k: 4 * k + 4]]
    assert seen[:resumed_from] == expected[:12]
    assert seen[resumed_from:] == expected[8:]  # the rerun redoes the lost step 3
    assert manifest["total_steps"] == 5 and manifest["steps_per_epoch"] == 5
    assert manifest["params"]["data_order"] == "authors"


def test_short_last_window_is_not_stepped(tiny, init_manifest, monkeypatch):
    """20 pairs, micro-batch 3, accumulation 2: ⌈20 / 3⌉ = 7 micro-batches, 3 steps
    (file order: 4, the last of 2 pairs)."""
    seen = record_items(monkeypatch)
    params = {**AUTHORS, "run": "redi_authors_short", "global_batch": 6, "micro_batch": 3}
    manifest = run(tiny, init_manifest, params, "redi_authors_short")
    order = seedable_sampler_order(20, 42)
    assert seen == [(k // 2, order[3 * k: 3 * k + 3]) for k in range(6)]
    assert manifest["total_steps"] == 3 and manifest["checkpoints"][-1]["epoch"] == 1.0


def test_two_ranks_train_accelerates_shards(tiny, init_manifest, tmp_path):
    """A 2-rank CPU run (DDP): each rank forwards exactly the micro-batches accelerate's
    own loader deals that rank, step by step."""
    params = stage2_params("redi", run="redi_authors_2", data_order="authors",
                           global_batch=8, micro_batch=2, save_every_steps=1)
    record = tmp_path / "items"
    launch(2, "tests/stand_ins/record_items.py", "scripts/train_stage2.py",
           *train_args(tmp_path / "run", params, pairs=tiny["pairs"],
                       init_manifest=init_manifest),
           strategy="ddp", env={"REDI_RECORD_ITEMS": str(record)})
    expected = accelerate_shards(20, 2, 2, seed=42)
    assert expected[1][:4] == [[18, 15], [0, 4], [8, 3], [13, 12]]
    for rank in range(2):
        lines = Path(f"{record}.rank{rank}").read_text().splitlines()
        seen = [tuple(json.loads(line)) for line in lines]
        assert [s for s, _ in seen] == [0, 0, 1, 1]
        assert [mb for _, mb in seen] == expected[rank][:4]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["total_steps"] == 2


# ------------------------------------------------------------- the config


@pytest.fixture()
def cfg() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_presets_choose_their_order_and_the_job_params_carry_it(cfg):
    rc.validate_config(cfg)
    assert plan.stage2_params(cfg, "redi_a0.8_lr1e-6")["data_order"] == "file"
    cfg["preset"] = "paper"
    for run_name in plan.stage2_runs(cfg):
        assert plan.stage2_params(cfg, run_name)["data_order"] == "authors"
    # the key reaches every stage-2 job's params (a change reruns them) and nothing else
    before = {r: plan.stage2_params(cfg, r) for r in plan.stage2_runs(cfg)}
    sft, ref = plan.sft_params(cfg, 3), plan.ref_logps_params(cfg, "sft_3ep")
    cfg["presets"]["paper"]["stage2"]["data_order"] = "file"
    assert all(plan.stage2_params(cfg, r) != before[r] for r in before)
    assert plan.sft_params(cfg, 3) == sft and plan.ref_logps_params(cfg, "sft_3ep") == ref


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda s: s.update(data_order="random"), "'random' is not one of ['file', 'authors']"),
    (lambda s: s.pop("data_order"), "'data_order' is a required property"),
])
def test_a_bad_data_order_is_refused(cfg, tmp_path, mutate, expected):
    mutate(cfg["presets"]["paper"]["stage2"])
    with pytest.raises(rc.ConfigError) as err:
        rc.validate_config(cfg, root=tmp_path)
    message = str(err.value)
    assert message.startswith("invalid config key 'presets.paper.stage2"), message
    assert expected in message, message
