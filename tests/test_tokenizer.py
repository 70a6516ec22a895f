"""The tokenizer stage: its own folder, which the data stages and the base
model share. Tiny: trained on the toy corpus, and the base model built from the folder
is the one built from the tokenizer in memory (same files, same weights). Paper: the
tokenizer files at the pinned commit, recorded in download.json (no network: fakes)."""

from __future__ import annotations

import hashlib
import json
import types

import huggingface_hub
import pytest

from redi.model import base_model

from .conftest import FakeQwenTokenizer, write_raw_corpus

SMALL = {"source": "tiny", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 256, "rope_theta": 10000.0, "seed": 0,
         "pretrain_steps": 3, "pretrain_batch": 4, "pretrain_block": 32, "pretrain_lr": 1e-2,
         "pretrain_tokens": 3000, "pretrain_instruction_share": 0.5,
         "pretrain_chat_share": 0.5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_raw_corpus(tmp_path_factory.mktemp("corpus"), 30, seed=3)


def test_tiny_tokenizer_folder_and_the_base_model_built_from_it(corpus, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer_dir = tmp_path / "tokenizer"
    base_model.build_tokenizer(SMALL, corpus, tokenizer_dir)
    (tokenizer_dir / ".snakemake_timestamp").write_text("")  # as a directory() output has
    base_model.build(SMALL, str(tokenizer_dir), tmp_path / "base")
    files = base_model.tokenizer_files(tokenizer_dir)
    assert {f.name for f in files} >= {"tokenizer.json", "tokenizer_config.json"}
    for file in files:  # the data stages measured lengths with exactly these files
        assert (tmp_path / "base" / file.name).read_bytes() == file.read_bytes()
    assert not (tmp_path / "base" / ".snakemake_timestamp").exists()
    assert not (tmp_path / "base" / base_model.DOWNLOAD_RECORD).exists()

    # the former base-model stage: tokenizer trained in memory, saved with the model
    tokenizer = base_model.tiny_tokenizer(corpus, SMALL["vocab_size"])
    model = base_model.tiny_model(tokenizer, SMALL)
    base_model.pretrain(model, tokenizer, SMALL)
    base_model.save(model, tokenizer, tmp_path / "in_memory")
    for name in ("model.safetensors", "config.json", "generation_config.json",
                 *(f.name for f in files)):
        assert (tmp_path / "base" / name).read_bytes() == (
            tmp_path / "in_memory" / name).read_bytes(), name
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values(), strict=True))


def test_the_tiny_stages_need_their_inputs(tmp_path):
    with pytest.raises(ValueError, match="needs --corpus"):
        base_model.build_tokenizer(SMALL, None, tmp_path / "t")
    with pytest.raises(ValueError, match="needs --tokenizer"):
        base_model.build(SMALL, None, tmp_path / "b")


def commit_of(repo: str) -> str:
    return hashlib.sha1(repo.encode()).hexdigest()


class FakeTokenizer(FakeQwenTokenizer):
    """Saves a stand-in tokenizer.json."""

    def save_pretrained(self, out):
        (out / "tokenizer.json").write_text('{"fake": true}')
        (out / "tokenizer_config.json").write_text("{}")


class FakeModel:
    generation_config = None

    def parameters(self):
        return []

    def save_pretrained(self, out, safe_serialization):
        (out / "model.safetensors").write_text("weights")


PAPER = {"source": "Qwen/Qwen2.5-Math-1.5B", "revision": "main", "rope_theta": 300000.0,
         "max_position_embeddings": 32768}


def test_paper_tokenizer_is_downloaded_alone_and_shared(monkeypatch, tmp_path):
    import transformers

    loads = []

    class Api:
        def repo_info(self, repo_id, *, repo_type=None, revision=None, **_):
            return types.SimpleNamespace(sha=commit_of(repo_id))

    def loader(kind, make):
        def from_pretrained(source, **kwargs):
            loads.append((kind, str(source), kwargs.get("revision")))
            return make()
        return types.SimpleNamespace(from_pretrained=from_pretrained)

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(transformers, "AutoTokenizer", loader("tokenizer", FakeTokenizer))
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", loader("model", FakeModel))
    monkeypatch.setattr(transformers, "AutoConfig", loader("config", lambda: types.SimpleNamespace(
        rope_parameters={}, layer_types=None, num_hidden_layers=2)))
    repo, commit = PAPER["source"], commit_of(PAPER["source"])

    base_model.build_tokenizer({k: PAPER[k] for k in ("source", "revision")}, None,
                               tmp_path / "tokenizer")
    assert loads == [("tokenizer", repo, commit)]  # the tokenizer's files only: no weights
    record = json.loads((tmp_path / "tokenizer" / "download.json").read_text())
    assert (record["repo_id"], record["revision_requested"], record["resolved_commit"]) == (
        repo, "main", commit)

    loads.clear()
    base_model.build(PAPER, str(tmp_path / "tokenizer"), tmp_path / "base")
    assert loads == [("tokenizer", str(tmp_path / "tokenizer"), None),
                     ("config", repo, commit), ("model", repo, commit)]
    assert (tmp_path / "base" / "tokenizer.json").read_text() == '{"fake": true}'
    assert json.loads((tmp_path / "base" / "download.json").read_text())["resolved_commit"] == (
        commit)
