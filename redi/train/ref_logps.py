"""DPO reference log-probs: one forward-only pass over the pairs under an SFT model.

Computed once per (init SFT checkpoint, pair set) by its own job and shared by every
DPO run from that model, so DPO training never holds a reference model. Sharded
over the job's processes; rank 0 writes ``pair_index, ref_chosen_logps,
ref_rejected_logps`` (sums over completion tokens) for every pair.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from redi.distributed import distributed_state
from redi.io import atomic_path
from redi.model import attention, checkpoints
from redi.model.models import load_causal_lm, load_tokenizer, pad_id
from redi.train import batching, logprobs
from redi.train.train_data import pair_items

log = logging.getLogger(__name__)


def compute_ref_logps(
    params: dict[str, Any],
    pairs: str | os.PathLike,
    init_manifest: str | os.PathLike,
    out: str | os.PathLike,
) -> None:
    """Reference log-prob sums of every pair of ``pairs`` under the init SFT model."""
    from accelerate.utils import gather_object

    state = distributed_state()
    init = checkpoints.init_checkpoint(init_manifest)
    tokenizer = load_tokenizer(init)
    items = pair_items(tokenizer, pairs, params["max_prompt_length"], params["max_length"])
    attn, packed = attention.training_attention()
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    module = logprobs.TokenLogps(load_causal_lm(init, dtype, attn_implementation=attn))
    module = module.to(state.device).eval()
    mine = list(range(len(items)))[state.process_index :: state.num_processes]
    rows = _forward_pairs(module, items, mine, params["micro_batch"], packed, pad_id(tokenizer),
                          state)
    rows = sorted(gather_object(rows)) if state.num_processes > 1 else rows
    if state.is_main_process:
        _write(rows, out)
        log.info("reference log-probs of %d pairs -> %s", len(rows), out)
    state.wait_for_everyone()


def _forward_pairs(module: torch.nn.Module, items: list, mine: list[int], micro: int,
                   packed: bool, pad: int, state: Any) -> list[tuple[int, float, float]]:
    """(pair index, chosen sum, rejected sum) of this process's pairs."""
    from tqdm import tqdm

    rows: list[tuple[int, float, float]] = []
    with torch.no_grad():
        for start in tqdm(range(0, len(mine), micro), desc="ref logps", mininterval=2,
                          disable=not state.is_main_process):
            idx = mine[start : start + micro]
            batch = batching.make_batch([s for i in idx for s in items[i].seqs], packed,
                                        pad).to(state.device)
            sums = logprobs.sequence_sums(logprobs.batch_token_logps(module, batch),
                                          batch).double()
            rows += [(i, float(sums[2 * k]), float(sums[2 * k + 1])) for k, i in enumerate(idx)]
    return rows


def _write(rows: list[tuple[int, float, float]], out: str | os.PathLike) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"pair_index": [r[0] for r in rows],
                      "ref_chosen_logps": [r[1] for r in rows],
                      "ref_rejected_logps": [r[2] for r in rows]})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
