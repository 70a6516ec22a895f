"""Completion suffixes from the tokenizer's chat template: the Qwen ids are those of
the former literal suffixes, byte for byte; a Llama-3 tokenizer ends its SFT
completions with <|eot_id|> and its stage-2 completions with <|eot_id|><|end_of_text|>."""

from __future__ import annotations

import pandas as pd
import pytest

from redi.data import prompts
from redi.data.prompts import ENDOFTEXT, IM_END
from redi.train import train_data
from tests.support.models import QWEN25_MATH_TEMPLATE

from .conftest import toy_rows

TEXTS = ["some text to train on", "1 + 2 = 3", "<think>\n1+2\n=3\n</think>\n$\\boxed{3}$"]
# the constants redi.train.batching had before the suffixes came from the chat template
OLD_SFT_SUFFIX = IM_END + "\n"
OLD_STAGE2_SUFFIX = IM_END + "\n" + ENDOFTEXT


def tokenizer_of(family: str, template: str | None = None):
    from redi.model.base_model import train_tokenizer

    tokenizer = train_tokenizer(TEXTS * 5, vocab_size=320, family=family)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> dict[str, str]:
    data = toy_rows(6, seed=5)
    root = tmp_path_factory.mktemp("batching")
    sft = pd.DataFrame([{"problem": r["problem"], "response": r["chosen"]} for r in data])
    pairs = pd.DataFrame([{k: r[k] for k in ("problem", "chosen", "rejected")} for r in data])
    sft.to_parquet(root / "sft.parquet")
    pairs.to_parquet(root / "pairs.parquet")
    return {"sft": str(root / "sft.parquet"), "pairs": str(root / "pairs.parquet")}


@pytest.mark.parametrize("template", [None, QWEN25_MATH_TEMPLATE], ids=["ours", "qwen2.5-math"])
def test_qwen_suffixes_and_ids_are_unchanged(template, rows) -> None:
    tokenizer = tokenizer_of("qwen2", template)
    assert prompts.sft_suffix(tokenizer) == OLD_SFT_SUFFIX == "<|im_end|>\n"
    assert prompts.stage2_suffix(tokenizer) == OLD_STAGE2_SUFFIX == "<|im_end|>\n<|endoftext|>"
    responses = list(pd.read_parquet(rows["sft"])["response"])
    old = tokenizer([r + OLD_SFT_SUFFIX for r in responses], add_special_tokens=False)["input_ids"]
    sft = train_data.sft_items(tokenizer, rows["sft"], max_length=4096)
    assert [list(item.seqs[0].ids[item.seqs[0].n_prompt:]) for item in sft] == old
    im_end, eos = (tokenizer.convert_tokens_to_ids(t) for t in (IM_END, ENDOFTEXT))
    assert old[0][-2:] == [im_end, tokenizer("\n", add_special_tokens=False)["input_ids"][0]]
    pairs = pd.read_parquet(rows["pairs"])
    for column, k in (("chosen", 0), ("rejected", 1)):
        old = tokenizer([t + OLD_STAGE2_SUFFIX for t in pairs[column]],
                        add_special_tokens=False)["input_ids"]
        items = train_data.pair_items(tokenizer, rows["pairs"], 4096, 8192)
        assert [list(i.seqs[k].ids[i.seqs[k].n_prompt:]) for i in items] == old
        assert old[0][-1] == eos and old[0][-3] == im_end


def test_llama_completions_end_with_eot(rows) -> None:
    tokenizer = tokenizer_of("llama")
    bos, eot, end = (tokenizer.convert_tokens_to_ids(t)
                     for t in ("<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"))
    header = tokenizer("<|start_header_id|>assistant<|end_header_id|>\n\n",
                       add_special_tokens=False)["input_ids"]
    assert prompts.sft_suffix(tokenizer) == "<|eot_id|>"
    assert prompts.stage2_suffix(tokenizer) == "<|eot_id|><|end_of_text|>"

    response = pd.read_parquet(rows["sft"])["response"][0]
    sft = train_data.sft_items(tokenizer, rows["sft"], max_length=4096)[0].seqs[0]
    prompt, completion = list(sft.ids[:sft.n_prompt]), list(sft.ids[sft.n_prompt:])
    assert prompt[0] == bos and prompt.count(bos) == 1 and prompt[-len(header):] == header
    assert completion[-1] == eot and end not in completion
    assert tokenizer.decode(completion) == response + "<|eot_id|>"

    chosen, rejected = train_data.pair_items(tokenizer, rows["pairs"], 4096, 8192)[0].seqs
    for seq in (chosen, rejected):
        assert list(seq.ids[-2:]) == [eot, end]
        assert list(seq.ids[:seq.n_prompt]) == prompt
    row = pd.read_parquet(rows["pairs"]).iloc[0]
    assert tokenizer.decode(chosen.ids[chosen.n_prompt:]) == (
        row["chosen"] + "<|eot_id|><|end_of_text|>")
