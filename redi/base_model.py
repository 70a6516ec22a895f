"""The tokenizer and base model stages.

Tokenizer (``build_tokenizer``, a stage of its own: the data stages need only it):

* Paper preset: the tokenizer files of ``Qwen/Qwen2.5-Math-1.5B`` at the pinned
  revision (no weights), with ``download.json`` naming the commit.
* Tiny preset: a small byte-level BPE tokenizer trained on the toy corpus (Qwen's
  special tokens and a Qwen2.5-Math-style chat template with the same system
  prompt).

Base model (``build``), with the tokenizer stage's files copied in byte for byte:

* Paper preset: ``Qwen/Qwen2.5-Math-1.5B`` with the authors' hand edits of
  ``config.json`` (rope_theta 300000, max_position_embeddings 32768, no sliding
  window).
* Tiny preset: a randomly initialised small ``Qwen2ForCausalLM`` -- the paper
  model's class -- briefly pretrained on generated arithmetic.

Both write a Hugging Face folder (safetensors, config, tokenizer, generation
config that stops on ``<|im_end|>`` and ``<|endoftext|>``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from redi.prompts import ENDOFTEXT, IM_END, IM_START, QWEN_MATH_CHAT_TEMPLATE, SPECIAL_TOKENS

log = logging.getLogger(__name__)

DOWNLOAD_RECORD = "download.json"  # paper preset: which Hub commit the base model is


def set_stop_tokens(model: Any, tokenizer: Any) -> None:
    """Generation stops on ``<|im_end|>`` and ``<|endoftext|>`` (base eos is only the latter)."""
    from transformers import GenerationConfig

    stop = [tokenizer.convert_tokens_to_ids(t) for t in (IM_END, ENDOFTEXT)]
    generation = model.generation_config or GenerationConfig()
    generation.eos_token_id = stop
    generation.pad_token_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    generation.bos_token_id = None
    model.generation_config = generation


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Byte-level BPE with single-digit pre-tokenisation (as Qwen2 splits digits)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )
    tokenizer.chat_template = QWEN_MATH_CHAT_TEMPLATE
    return tokenizer


def corpus_texts(rows: Iterable[dict[str, Any]], extra: Iterable[str] = ()) -> Iterator[str]:
    for row in rows:
        yield row["problem"]
        yield from row["generations"]
    yield from extra


def tiny_tokenizer(corpus: str, vocab_size: int) -> Any:
    """The tiny preset's tokenizer, trained on the toy corpus and the chat scaffolding."""
    import pandas as pd

    from redi.prompts import EVAL_USER_TEMPLATE, SYSTEM_PROMPT

    rows = pd.read_parquet(corpus).to_dict("records")
    # the chat scaffolding and the eval instruction are tokenizer data too
    scaffold = [SYSTEM_PROMPT, EVAL_USER_TEMPLATE, QWEN_MATH_CHAT_TEMPLATE,
                "system\nuser\nassistant\n"]
    return train_tokenizer(corpus_texts(rows, scaffold * 20), vocab_size)


def tiny_model(tokenizer: Any, params: dict[str, Any]) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=params["hidden_size"],
        intermediate_size=params["intermediate_size"],
        num_hidden_layers=params["num_hidden_layers"],
        num_attention_heads=params["num_attention_heads"],
        num_key_value_heads=params["num_key_value_heads"],
        max_position_embeddings=params["max_position_embeddings"],
        rope_theta=params["rope_theta"],
        tie_word_embeddings=True,  # as Qwen2.5-Math-1.5B
        use_sliding_window=False,
        eos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        bos_token_id=None,
    )
    torch.manual_seed(params["seed"])
    model = Qwen2ForCausalLM(config)
    set_stop_tokens(model, tokenizer)
    return model


def pretraining_documents(
    rng, n_tokens: int, tokenizer: Any, instruction_share: float, chat_share: float
) -> list[int]:
    """Generated arithmetic (problem, then one rewrite per line) as token ids.

    A ``chat_share`` of the documents are rendered in the chat template (the
    way Qwen base models have seen chat-formatted data) and an
    ``instruction_share`` of the problems carry the evaluation instruction; the
    rest is plain text. No ``<think>`` traces, no boxed answers: the SFT stage
    teaches those.
    """
    from redi import toy
    from redi.prompts import EVAL_USER_TEMPLATE

    ids: list[int] = []
    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    while len(ids) < n_tokens:
        problem, steps = toy.make_problem(rng, rng.choice([2, 3, 3, 4]), rng.random() < 0.3)
        value = steps[0].lhs
        lines = [toy.expression(value, steps)]
        for k, step in enumerate(steps):
            value = step.result
            lines.append("=" + toy.expression(value, steps[k + 1:]))
        if rng.random() < instruction_share:
            problem = EVAL_USER_TEMPLATE.format(problem=problem)
        solution = "\n".join(lines)
        if rng.random() < chat_share:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": problem}, {"role": "assistant", "content": solution}],
                tokenize=False,
            )
        else:
            text = problem + "\n" + solution + "\n"
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
    return ids


def pretrain(model: Any, tokenizer: Any, params: dict[str, Any]) -> list[float]:
    """Short causal-LM pretraining of the tiny model on generated arithmetic text.

    A random-init model cannot learn to copy operands and add within the tiny
    preset's SFT budget (measured: 1-5 % accuracy after 5 epochs); Qwen2.5-Math
    is a math-pretrained model, so the tiny base model gets a brief math
    pretraining of its own. Returns the loss per logged step.
    """
    import random

    import torch
    from tqdm import tqdm

    rng = random.Random(params["seed"])
    torch.manual_seed(params["seed"])
    block = params["pretrain_block"]
    ids = pretraining_documents(rng, params["pretrain_tokens"], tokenizer,
                                params["pretrain_instruction_share"], params["pretrain_chat_share"])
    n_blocks = len(ids) // block
    data = torch.tensor(ids[: n_blocks * block]).view(n_blocks, block)
    steps, batch = params["pretrain_steps"], params["pretrain_batch"]
    warmup = max(1, int(0.05 * steps))
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["pretrain_lr"],
                                  betas=(0.9, 0.98), weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup))))
    generator = torch.Generator().manual_seed(params["seed"])
    losses = []
    model.train()
    for step in tqdm(range(steps), desc="pretrain tiny base", mininterval=2):
        x = data[torch.randint(0, n_blocks, (batch,), generator=generator)]
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0:
            losses.append(round(loss.item(), 4))
            log.info("pretrain step %d loss %.4f", step + 1, loss.item())
    model.eval()
    return losses


def _pinned(params: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """``from_pretrained`` keywords that pin a Hub source to the commit its revision
    resolves to (none for a local folder), and the record of what is fetched."""
    from redi import hub

    source = params["source"]
    if Path(source).exists():
        return {}, {"local_folder": source}
    commit = hub.resolve(source, "model", params["revision"])
    return ({"revision": commit or params["revision"]},
            hub.record(source, "model", params["revision"], commit))


def source_tokenizer(params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The paper model's own tokenizer (its files only, no weights) and the record."""
    from transformers import AutoTokenizer

    pin, fetched = _pinned(params)
    return AutoTokenizer.from_pretrained(params["source"], **pin), fetched


def paper_model(params: dict[str, Any], tokenizer: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """The Hub model (at ``params["revision"]``) or a local folder with the authors'
    config edits, its tokenizer (``tokenizer``, else the source's own), and the record
    of what was loaded."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = params["source"]
    pin, fetched = _pinned(params)  # config, tokenizer and weights of one commit
    config = AutoConfig.from_pretrained(source, **pin)
    rope = dict(getattr(config, "rope_parameters", None) or {})
    rope["rope_theta"] = float(params["rope_theta"])
    rope.setdefault("rope_type", "default")
    config.rope_parameters = rope
    config.max_position_embeddings = int(params["max_position_embeddings"])
    config.use_sliding_window = False
    config.sliding_window = None
    if getattr(config, "layer_types", None):
        config.layer_types = ["full_attention"] * config.num_hidden_layers
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(source, **pin)
    model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype="bfloat16", **pin)
    set_stop_tokens(model, tokenizer)
    return model, tokenizer, fetched


def tokenizer_files(folder: str | Path) -> list[Path]:
    """The files of a saved tokenizer folder (not its download record or Snakemake's
    hidden timestamp)."""
    return sorted(f for f in Path(folder).iterdir()
                  if f.is_file() and not f.name.startswith(".") and f.name != DOWNLOAD_RECORD)


def save(model: Any, tokenizer: Any, out_dir: Path, tokenizer_dir: str | None = None) -> None:
    """The model and its tokenizer as a Hugging Face folder; with ``tokenizer_dir`` (the
    folder ``tokenizer`` was loaded from) its files are copied, byte for byte."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer_dir:
        for file in tokenizer_files(tokenizer_dir):
            shutil.copyfile(file, out_dir / file.name)
    else:
        tokenizer.save_pretrained(out_dir)
    log.info("saved %s (%d parameters) to %s", type(model).__name__,
             sum(p.numel() for p in model.parameters()), out_dir)


def build_tokenizer(params: dict[str, Any], corpus: str | None, out_dir: Path) -> None:
    """The tokenizer stage: a tokenizer folder in ``out_dir`` (see the module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if params["source"] == "tiny":
        if corpus is None:
            raise ValueError("the tiny tokenizer needs --corpus (its training data)")
        tiny_tokenizer(corpus, params["vocab_size"]).save_pretrained(out_dir)
        return
    tokenizer, fetched = source_tokenizer(params)
    tokenizer.save_pretrained(out_dir)
    (out_dir / DOWNLOAD_RECORD).write_text(json.dumps(fetched, indent=2) + "\n")


def build(params: dict[str, Any], tokenizer_dir: str | None, out_dir: Path) -> None:
    """The base-model stage: a Hugging Face folder in ``out_dir``, with the tokenizer
    stage's folder ``tokenizer_dir`` copied in byte for byte (without one, the paper
    model's own tokenizer)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else None
    fetched = None
    if params["source"] == "tiny":
        if tokenizer is None:
            raise ValueError("the tiny base model needs --tokenizer (the tokenizer stage's folder)")
        model = tiny_model(tokenizer, params)
        if params.get("pretrain_steps", 0) > 0:
            pretrain(model, tokenizer, params)
    else:
        model, tokenizer, fetched = paper_model(params, tokenizer)
    save(model, tokenizer, out_dir, tokenizer_dir)
    if fetched is not None:
        (out_dir / DOWNLOAD_RECORD).write_text(json.dumps(fetched, indent=2) + "\n")
