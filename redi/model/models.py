"""Loading Hugging Face model folders: one place for training, the reference pass and
generation (same dtype handling, attention implementation and checkpointing rule).

A run's checkpoint is checked against its manifest record before it is loaded, a
missing local folder is reported as such, and a folder that fails to load is named
in the error (``redi.model.checkpoints.check_model_folder``, ``JobFileError``)."""

from __future__ import annotations

import os
from typing import Any

from redi.io import naming_file
from redi.model import attention
from redi.model.checkpoints import check_model_folder


def _load_errors() -> tuple[type[BaseException], ...]:
    """What a damaged folder raises from ``from_pretrained``: OSError (missing or
    unreadable files, truncated JSON), safetensors' error (a bad weights header)."""
    from safetensors import SafetensorError

    return (OSError, SafetensorError, UnicodeDecodeError)


def load_tokenizer(path: str | os.PathLike) -> Any:
    from transformers import AutoTokenizer

    check_model_folder(path)
    with naming_file(path, "loading the tokenizer of", _load_errors()):
        return AutoTokenizer.from_pretrained(path)


def load_causal_lm(
    path: str | os.PathLike,
    dtype: Any = "auto",
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
) -> Any:
    """A causal LM from a folder. ``dtype``: a torch dtype, its name (``"bfloat16"``)
    or ``"auto"`` (the checkpoint's). Training: no KV cache, optionally activation
    checkpointing (non-reentrant, as the authors); the trainer turns the KV cache off."""
    import torch
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if attn_implementation == attention.VARLEN:
        attention.register()
    check_model_folder(path)
    with naming_file(path, "loading the model", _load_errors()):
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation
        )
    if gradient_checkpointing:
        # the gradient_checkpointing_* names are deprecated in transformers 5.24;
        # older 5.x releases have only those
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def pad_id(tokenizer: Any) -> int:
    """The padding token id (the end-of-text token where the tokenizer has none)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
