"""The tokenizer and base model stages.

Tokenizer (``build_tokenizer``, a stage of its own: the data stages need only it):

* Paper preset: the tokenizer files of ``Qwen/Qwen2.5-Math-1.5B`` at the pinned
  revision (no weights), with ``download.json`` naming the commit.
* Tiny preset: a small byte-level BPE tokenizer trained on the toy corpus with
  the special tokens and chat template of its ``family`` (``FAMILIES``: ``qwen2``,
  the default -- Qwen's tokens and a Qwen2.5-Math-style template -- or ``llama``,
  Llama 3's tokens and template; both with the Qwen2.5-Math system prompt).
* A Hub model or local folder (``source``): its own tokenizer files; with
  ``chat_template`` (a ``redi.data.prompts.CHAT_TEMPLATES`` name) its template replaced,
  and a pad token set where it has none.

Base model (``build``), with the tokenizer stage's files copied in byte for byte:

* Paper preset: ``Qwen/Qwen2.5-Math-1.5B`` with the authors' hand edits of
  ``config.json`` (rope_theta 300000, max_position_embeddings 32768, each only
  where ``params`` has it; no sliding window). Any Hub model or folder: the class
  its config names (``family`` is not read).
* Tiny preset: a randomly initialised small model of the family's class
  (``Qwen2ForCausalLM`` -- the paper model's -- or ``LlamaForCausalLM``), briefly
  pretrained on generated arithmetic.

Both write a Hugging Face folder (safetensors, config, tokenizer, generation
config that stops on the chat template's end of turn and the EOS: ``<|im_end|>``
and ``<|endoftext|>`` for Qwen, ``<|eot_id|>`` and ``<|end_of_text|>`` for Llama 3).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redi.data import prompts
from redi.data.prompts import end_of_turn_token

log = logging.getLogger(__name__)

DOWNLOAD_RECORD = "download.json"  # paper preset: which Hub commit the base model is


@dataclass(frozen=True)
class Family:
    """A model family of the tiny preset: its transformers classes (by name), special
    tokens (in vocabulary order: ids 0, 1, ...), and chat template."""

    config_class: str
    model_class: str
    special_tokens: tuple[str, ...]
    eos_token: str
    pad_token: str
    bos_token: str | None
    chat_template: str  # a redi.data.prompts.CHAT_TEMPLATES name
    tie_word_embeddings: bool = True
    config_extra: tuple[tuple[str, Any], ...] = ()  # further config keywords

    @property
    def additional_special_tokens(self) -> list[str]:
        named = {self.eos_token, self.pad_token, self.bos_token}
        return [t for t in self.special_tokens if t not in named]


FAMILIES: dict[str, Family] = {
    # as Qwen2.5-Math-1.5B: tied embeddings, no bos, no sliding window
    "qwen2": Family(
        config_class="Qwen2Config", model_class="Qwen2ForCausalLM",
        special_tokens=tuple(prompts.SPECIAL_TOKENS), eos_token=prompts.ENDOFTEXT,
        pad_token=prompts.ENDOFTEXT, bos_token=None, chat_template="qwen_math",
        config_extra=(("use_sliding_window", False),)),
    # as Llama-3.2-3B: tied embeddings, bos, no attention bias (LlamaConfig's default)
    "llama": Family(
        config_class="LlamaConfig", model_class="LlamaForCausalLM",
        special_tokens=(prompts.BEGIN_OF_TEXT, prompts.END_OF_TEXT, prompts.START_HEADER,
                        prompts.END_HEADER, prompts.EOT, prompts.FINETUNE_PAD),
        eos_token=prompts.END_OF_TEXT, pad_token=prompts.FINETUNE_PAD,
        bos_token=prompts.BEGIN_OF_TEXT, chat_template="llama3"),
}
DEFAULT_FAMILY = "qwen2"


def family_of(params: dict[str, Any]) -> Family:
    """The tiny preset's family, ``params["family"]`` (default ``qwen2``)."""
    name = params.get("family", DEFAULT_FAMILY)
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def set_stop_tokens(model: Any, tokenizer: Any) -> None:
    """Generation stops on the chat template's end of an assistant turn and the EOS
    (Qwen: ``<|im_end|>``, ``<|endoftext|>``; a base model's eos is only the latter);
    it pads with the tokenizer's pad token, else the EOS."""
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id
    stop = [tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))]
    stop += [eos] if eos is not None and eos not in stop else []
    generation = model.generation_config or GenerationConfig()
    generation.eos_token_id = stop
    generation.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    generation.bos_token_id = tokenizer.bos_token_id
    model.generation_config = generation


def train_tokenizer(texts: Iterable[str], vocab_size: int, family: str = DEFAULT_FAMILY) -> Any:
    """Byte-level BPE with single-digit pre-tokenisation (as Qwen2 splits digits) and
    the special tokens and chat template of ``family``."""
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
    spec = family_of({"family": family})
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    named = {"bos_token": spec.bos_token} if spec.bos_token else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        **named,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        additional_special_tokens=spec.additional_special_tokens,
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )
    tokenizer.chat_template = prompts.chat_template(spec.chat_template)
    return tokenizer


def corpus_texts(rows: Iterable[dict[str, Any]], extra: Iterable[str] = ()) -> Iterator[str]:
    for row in rows:
        yield row["problem"]
        yield from row["generations"]
    yield from extra


def tiny_tokenizer(corpus: str, vocab_size: int, family: str = DEFAULT_FAMILY) -> Any:
    """The tiny preset's tokenizer, trained on the toy corpus and the chat scaffolding
    of ``family``."""
    import pandas as pd

    from redi.data.prompts import EVAL_USER_TEMPLATE, SYSTEM_PROMPT

    rows = pd.read_parquet(corpus).to_dict("records")
    template = prompts.chat_template(family_of({"family": family}).chat_template)
    # the chat scaffolding and the eval instruction are tokenizer data too
    scaffold = [SYSTEM_PROMPT, EVAL_USER_TEMPLATE, template, "system\nuser\nassistant\n"]
    return train_tokenizer(corpus_texts(rows, scaffold * 20), vocab_size, family)


SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "max_position_embeddings", "rope_theta")


def tiny_model(tokenizer: Any, params: dict[str, Any]) -> Any:
    """A random-init model of ``params["family"]`` (default qwen2) with the shape in
    ``params`` (``SHAPE_KEYS``) and the tokenizer's eos, pad and bos."""
    import torch
    import transformers

    spec = family_of(params)
    ids = tokenizer.convert_tokens_to_ids
    config = getattr(transformers, spec.config_class)(
        vocab_size=len(tokenizer),
        **{key: params[key] for key in SHAPE_KEYS},
        tie_word_embeddings=spec.tie_word_embeddings,
        eos_token_id=ids(spec.eos_token),
        pad_token_id=ids(spec.pad_token),
        bos_token_id=ids(spec.bos_token) if spec.bos_token else None,
        **dict(spec.config_extra),
    )
    torch.manual_seed(params["seed"])
    model = getattr(transformers, spec.model_class)(config)
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
    from redi.data import toy
    from redi.data.prompts import EVAL_USER_TEMPLATE

    ids: list[int] = []
    eos = tokenizer.eos_token_id
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


def adapt_tokenizer(tokenizer: Any, params: dict[str, Any]) -> Any:
    """A source's tokenizer as training uses it: ``params["chat_template"]`` (a
    ``CHAT_TEMPLATES`` name) replaces its template, and without a pad token it pads
    with ``<|finetune_right_pad_id|>`` where the vocabulary has it, else the EOS."""
    if params.get("chat_template"):
        tokenizer.chat_template = prompts.chat_template(params["chat_template"])
    if tokenizer.pad_token is None:
        pad = prompts.FINETUNE_PAD
        tokenizer.pad_token = pad if pad in tokenizer.get_vocab() else tokenizer.eos_token
    return tokenizer


def source_tokenizer(params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The source model's own tokenizer (its files only, no weights), adapted
    (``adapt_tokenizer``), and the record."""
    from transformers import AutoTokenizer

    pin, fetched = _pinned(params)
    return adapt_tokenizer(AutoTokenizer.from_pretrained(params["source"], **pin), params), fetched


def edit_config(config: Any, params: dict[str, Any]) -> Any:
    """The authors' hand edits of ``config.json``: ``rope_theta`` and
    ``max_position_embeddings`` where ``params`` has them; no sliding window."""
    if params.get("rope_theta") is not None:
        rope = dict(getattr(config, "rope_parameters", None) or {})
        rope["rope_theta"] = float(params["rope_theta"])
        rope.setdefault("rope_type", "default")
        config.rope_parameters = rope
    if params.get("max_position_embeddings") is not None:
        config.max_position_embeddings = int(params["max_position_embeddings"])
    if hasattr(config, "use_sliding_window") or hasattr(config, "sliding_window"):
        config.use_sliding_window = False
        config.sliding_window = None
    if getattr(config, "layer_types", None):
        config.layer_types = ["full_attention"] * config.num_hidden_layers
    return config


def paper_model(params: dict[str, Any], tokenizer: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """The Hub model (at ``params["revision"]``) or a local folder with the authors'
    config edits (``edit_config``), its tokenizer (``tokenizer``, else the source's
    own, adapted), and the record of what was loaded. The config names the class."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = params["source"]
    pin, fetched = _pinned(params)  # config, tokenizer and weights of one commit
    config = edit_config(AutoConfig.from_pretrained(source, **pin), params)
    if tokenizer is None:
        tokenizer = adapt_tokenizer(AutoTokenizer.from_pretrained(source, **pin), params)
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
        family = params.get("family", DEFAULT_FAMILY)
        tiny_tokenizer(corpus, params["vocab_size"], family).save_pretrained(out_dir)
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
