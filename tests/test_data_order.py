"""The authors' stage-2 data order: the seedable sampler's permutation and accelerate's
sharding, against accelerate's own data loader (the pinned version) for 1 and 8 processes."""

from __future__ import annotations

import pytest

from redi.train.train_data import (
    authors_step_plan,
    rank_micro_batches,
    seedable_sampler_order,
    shard_batches,
)
from tests.support.training import accelerate_shards


@pytest.mark.parametrize("processes", [1, 8])
@pytest.mark.parametrize(("n_items", "micro_batch"), [(103, 1), (96, 1), (37, 2), (5, 1)])
def test_shards_equal_accelerates(processes, n_items, micro_batch):
    expected = accelerate_shards(n_items, processes, micro_batch, seed=42)
    order = seedable_sampler_order(n_items, 42)
    assert [shard_batches(order, processes, micro_batch, r) for r in range(processes)] == expected


def test_second_epoch_reseeds_with_seed_plus_one():
    expected = accelerate_shards(50, 8, 1, seed=42, epochs=2)
    plan = authors_step_plan(50, 42, epochs=2, processes=8, micro_batch=1, accum=1)
    # with accum 1 and one item per micro-batch, step k holds batch k of every process
    assert [[step[r] for step in plan] for r in range(8)] == [
        [b[0] for b in batches] for batches in expected]


@pytest.mark.parametrize("processes", [1, 8])
def test_step_plan_gives_each_rank_its_own_micro_batches(processes):
    """The authors' stage 2: 1 pair per device, accumulation 4 (32 pairs on 8 GPUs)."""
    accum, n_items = 4, 75
    expected = accelerate_shards(n_items, processes, 1, seed=42)[0:processes]
    plan = authors_step_plan(n_items, 42, epochs=1, processes=processes, micro_batch=1,
                             accum=accum)
    for rank in range(processes):
        mine = [mb for step in plan for mb in rank_micro_batches(step, rank, processes, accum)
                if mb]
        assert mine == expected[rank]
    # 75 items padded to 80 on 8 processes (10 each): 3 steps, the last of 2 windows
    assert len(plan) == (3 if processes == 8 else 19)
