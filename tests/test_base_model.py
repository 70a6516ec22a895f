"""Model families of the tiny preset (qwen2, the default, byte for byte as before;
llama: Llama-3 tokens, template and LlamaForCausalLM), stop tokens, and a local
source folder with a chat-template override and optional config edits."""

from __future__ import annotations

import json

import pytest
import torch

from redi.data.prompts import CHAT_TEMPLATES
from redi.model import base_model

from .conftest import write_raw_corpus

SMALL = {"source": "tiny", "vocab_size": 320, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 256, "rope_theta": 12345.0, "seed": 0,
         "pretrain_steps": 2, "pretrain_batch": 2, "pretrain_block": 32, "pretrain_lr": 1e-2,
         "pretrain_tokens": 2000, "pretrain_instruction_share": 0.5,
         "pretrain_chat_share": 0.5}
LLAMA = {**SMALL, "family": "llama"}
LLAMA_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_raw_corpus(tmp_path_factory.mktemp("corpus"), 20, seed=7)


@pytest.fixture(scope="module")
def llama_dirs(corpus, tmp_path_factory):
    """The tokenizer stage and the base-model stage of the tiny llama family."""
    root = tmp_path_factory.mktemp("llama")
    base_model.build_tokenizer(LLAMA, corpus, root / "tokenizer")
    base_model.build(LLAMA, str(root / "tokenizer"), root / "base")
    return root / "tokenizer", root / "base"


def test_the_families() -> None:
    qwen, llama = base_model.FAMILIES["qwen2"], base_model.FAMILIES["llama"]
    assert (qwen.model_class, qwen.chat_template, qwen.bos_token) == (
        "Qwen2ForCausalLM", "qwen_math", None)
    assert qwen.special_tokens == ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert qwen.additional_special_tokens == ["<|im_start|>", "<|im_end|>"]
    assert (llama.model_class, llama.chat_template, llama.bos_token, llama.eos_token,
            llama.pad_token) == ("LlamaForCausalLM", "llama3", "<|begin_of_text|>",
                                 "<|end_of_text|>", "<|finetune_right_pad_id|>")
    assert llama.special_tokens == LLAMA_TOKENS
    assert qwen.tie_word_embeddings and llama.tie_word_embeddings
    with pytest.raises(ValueError, match="unknown model family 'gpt2'"):
        base_model.family_of({"family": "gpt2"})


def test_default_family_is_qwen2_byte_for_byte(corpus, tmp_path) -> None:
    """No ``family`` key: the same tokenizer files, config and weights as ``qwen2``."""
    for name, params in (("default", SMALL), ("qwen2", {**SMALL, "family": "qwen2"})):
        base_model.build_tokenizer(params, corpus, tmp_path / name)
    files = base_model.tokenizer_files(tmp_path / "default")
    assert [f.name for f in files] == ["chat_template.jinja", "tokenizer.json",
                                       "tokenizer_config.json"]
    for file in files:
        assert file.read_bytes() == (tmp_path / "qwen2" / file.name).read_bytes()
    assert (tmp_path / "default" / "chat_template.jinja").read_text() == (
        CHAT_TEMPLATES["qwen_math"])
    tokenizer = base_model.tiny_tokenizer(corpus, SMALL["vocab_size"])
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>",
                                                         "<|im_end|>")] == [0, 1, 2]
    default = base_model.tiny_model(tokenizer, SMALL)
    qwen = base_model.tiny_model(tokenizer, {**SMALL, "family": "qwen2"})
    assert type(default).__name__ == "Qwen2ForCausalLM"
    assert default.config.to_dict() == qwen.config.to_dict()
    assert (default.config.eos_token_id, default.config.pad_token_id,
            default.config.bos_token_id, default.config.use_sliding_window) == (0, 0, None, False)
    assert default.config.rope_parameters["rope_theta"] == 12345.0
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(),
                                                 qwen.state_dict().values(), strict=True))
    generation = default.generation_config
    assert (generation.eos_token_id, generation.pad_token_id, generation.bos_token_id) == (
        [2, 0], 0, None)  # <|im_end|>, <|endoftext|>: as before the families


def test_tiny_llama_tokenizer(llama_dirs) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_dirs[0])
    for i, token in enumerate(LLAMA_TOKENS):  # single ids, round trip
        assert tokenizer.convert_tokens_to_ids(token) == i
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [i]
        assert tokenizer.decode([i]) == token
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>")
    assert tokenizer.chat_template == CHAT_TEMPLATES["llama3"]
    text = "Compute 3+4*5<|eot_id|>"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert "<|im_end|>" not in tokenizer.get_vocab()


def test_tiny_llama_model_saves_and_reloads(llama_dirs) -> None:
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaForCausalLM

    tokenizer_dir, base = llama_dirs
    for file in base_model.tokenizer_files(tokenizer_dir):
        assert (base / file.name).read_bytes() == file.read_bytes()
    model = AutoModelForCausalLM.from_pretrained(base)
    assert isinstance(model, LlamaForCausalLM)
    config = json.loads((base / "config.json").read_text())
    assert config["model_type"] == "llama" and config["rope_parameters"]["rope_theta"] == 12345.0
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"],
            config["max_position_embeddings"], config["vocab_size"]) == (32, 2, 2, 256, 320)
    assert config["attention_bias"] is False and config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 1, 5)
    assert "use_sliding_window" not in config
    generation = GenerationConfig.from_pretrained(base)
    assert generation.eos_token_id == [4, 1]  # <|eot_id|>, <|end_of_text|>
    assert (generation.pad_token_id, generation.bos_token_id) == (5, 0)
    ids = torch.tensor([[0, 2, 7, 3]])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_llama_pretraining_documents(llama_dirs) -> None:
    import random

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_dirs[0])
    ids = base_model.pretraining_documents(random.Random(0), 600, tokenizer, 0.5, 1.0)
    assert ids[0] == 0 and ids[-1] == 1  # chat documents open with bos, end with eos
    assert 4 in ids and tokenizer.convert_tokens_to_ids("<|end_of_text|>") == 1


@pytest.fixture(scope="module")
def llama_source(llama_dirs, tmp_path_factory):
    """A local "Hub" folder like a Llama base model: no chat template, no pad token,
    generation stops on <|end_of_text|> only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("source") / "llama"
    tokenizer = AutoTokenizer.from_pretrained(llama_dirs[0])
    tokenizer.chat_template = None
    tokenizer.pad_token = None
    model = AutoModelForCausalLM.from_pretrained(llama_dirs[1])
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert not (folder / "chat_template.jinja").exists()
    reloaded = AutoTokenizer.from_pretrained(folder)
    assert reloaded.pad_token is None and not reloaded.chat_template
    return folder


def test_local_llama_source_with_a_chat_template(llama_source, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    params = {"source": str(llama_source), "revision": "main", "chat_template": "llama3"}
    model, tokenizer, fetched = base_model.paper_model(params)
    assert fetched == {"local_folder": str(llama_source)}
    assert tokenizer.chat_template == CHAT_TEMPLATES["llama3"]
    assert tokenizer.pad_token == "<|finetune_right_pad_id|>"
    assert model.config.rope_parameters["rope_theta"] == 12345.0  # no edit asked
    assert model.config.max_position_embeddings == 256
    assert model.generation_config.eos_token_id == [4, 1]
    assert model.generation_config.pad_token_id == 5

    # the tokenizer stage applies the same override; the base model copies its files
    base_model.build_tokenizer(params, None, tmp_path / "tokenizer")
    saved = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert saved.chat_template == CHAT_TEMPLATES["llama3"]
    assert saved.pad_token == "<|finetune_right_pad_id|>"
    edited = {**params, "rope_theta": 50000.0, "max_position_embeddings": 512}
    base_model.build(edited, str(tmp_path / "tokenizer"), tmp_path / "base")
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert config["rope_parameters"]["rope_theta"] == 50000.0
    assert config["max_position_embeddings"] == 512 and "sliding_window" not in config
    assert json.loads((tmp_path / "base" / "generation_config.json").read_text())[
        "eos_token_id"] == [4, 1]
    assert (tmp_path / "base" / "chat_template.jinja").read_text() == CHAT_TEMPLATES["llama3"]
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path / "base"),
                      type(model))


def test_adapt_tokenizer_pads_with_the_eos_without_a_pad_token(corpus) -> None:
    tokenizer = base_model.tiny_tokenizer(corpus, SMALL["vocab_size"])
    tokenizer.pad_token = None
    base_model.adapt_tokenizer(tokenizer, {})
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.chat_template == CHAT_TEMPLATES["qwen_math"]  # no override asked
    base_model.adapt_tokenizer(tokenizer, {"chat_template": "llama3"})
    assert tokenizer.chat_template == CHAT_TEMPLATES["llama3"]
