"""Evaluation prompts, byte for byte, with the Qwen2.5-Math chat template."""

from __future__ import annotations

import pytest

from redi.data.prompts import QWEN_MATH_CHAT_TEMPLATE, render_eval_prompt
from tests.support.models import QWEN25_MATH_TEMPLATE

PROBLEM = "Compute $\\frac{1}{2} + \\frac{1}{3}$."
HEAD = (
    "<|im_start|>system\n"
    "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
    "<|im_start|>user\n"
    "Solve the following math problem efficiently and clearly.  The last line of your response "
    "should be of the following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. "
    "I hope it is correct' (without quotes) where ANSWER is just the final number or expression "
    "that solves the problem. Think step by step before answering.\n"
    "\n"
    "Compute $\\frac{1}{2} + \\frac{1}{3}$.<|im_end|>\n"
)


@pytest.fixture(scope="module", params=["qwen2.5-math", "ours"])
def tokenizer(request):
    from redi.model.base_model import train_tokenizer

    tok = train_tokenizer(["some text to train on", "1 + 2 = 3"], vocab_size=300)
    tok.chat_template = QWEN25_MATH_TEMPLATE if request.param == "qwen2.5-math" else (
        QWEN_MATH_CHAT_TEMPLATE)
    return tok


def test_forced_think_as_the_authors(tokenizer) -> None:
    """qwen_w_ft.jinja: '<|im_start|>assistant<think>\\n' -- no newline before <think>."""
    text = render_eval_prompt(tokenizer, PROBLEM, force_think=True)
    assert text == HEAD + "<|im_start|>assistant<think>\n"


def test_forced_think_training_consistent(tokenizer) -> None:
    text = render_eval_prompt(tokenizer, PROBLEM, force_think=True, think_prefix_newline=True)
    assert text == HEAD + "<|im_start|>assistant\n<think>\n"


def test_intermediate_prompt_is_not_forced(tokenizer) -> None:
    assert render_eval_prompt(tokenizer, PROBLEM, force_think=False) == (
        HEAD + "<|im_start|>assistant\n")


def test_template_that_opens_think_itself_is_not_doubled(tokenizer) -> None:
    """R1-Distill style templates end the generation prompt with <think>\\n already."""
    original = tokenizer.chat_template
    tokenizer.chat_template = original.replace(
        "'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
    try:
        text = render_eval_prompt(tokenizer, PROBLEM, force_think=True)
    finally:
        tokenizer.chat_template = original
    assert text == HEAD + "<|im_start|>assistant\n<think>\n"
    assert text.count("<think>") == 1


# ---------------------------------------------------------------- chat templates

LLAMA_HEAD = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Please reason step by step, and put your final answer within \\boxed{}.<|eot_id|>"
)


@pytest.fixture(scope="module")
def llama_tokenizer():
    from redi.model.base_model import train_tokenizer

    return train_tokenizer(["some text to train on", "1 + 2 = 3"], vocab_size=300,
                           family="llama")


def test_the_qwen_template_is_registered_unchanged() -> None:
    import hashlib

    from redi.data.prompts import CHAT_TEMPLATES

    assert CHAT_TEMPLATES["qwen_math"] is QWEN_MATH_CHAT_TEMPLATE
    # the bytes of the tiny preset's chat_template.jinja before the registry existed
    assert hashlib.sha256(QWEN_MATH_CHAT_TEMPLATE.encode()).hexdigest() == (
        "e5aea6af8a518e99cd8a54da4f4f9a3b52c64eb3e2861a7b0107597bf9dec3a0")
    assert set(CHAT_TEMPLATES) == {"qwen_math", "llama3"}


def test_llama3_template_renders_the_generation_prompt(llama_tokenizer) -> None:
    from redi.data.prompts import render_generation_prompt

    assert render_generation_prompt(llama_tokenizer, "What is 1+2?") == (
        LLAMA_HEAD + "<|start_header_id|>user<|end_header_id|>\n\nWhat is 1+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_llama3_template_with_its_own_system_and_an_answer(llama_tokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]
    text = llama_tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n1+1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n2<|eot_id|>")


def test_turn_end_and_stage2_suffix(tokenizer, llama_tokenizer) -> None:
    """Qwen (ours and the verbatim Qwen2.5-Math template): exactly the former literal
    suffixes; Llama 3: <|eot_id|> and <|eot_id|><|end_of_text|>."""
    from redi.data.prompts import end_of_turn_token, stage2_suffix, turn_end

    assert turn_end(tokenizer) == "<|im_end|>\n"
    assert stage2_suffix(tokenizer) == "<|im_end|>\n<|endoftext|>"
    assert end_of_turn_token(tokenizer) == "<|im_end|>"
    assert turn_end(llama_tokenizer) == "<|eot_id|>"
    assert stage2_suffix(llama_tokenizer) == "<|eot_id|><|end_of_text|>"
    assert end_of_turn_token(llama_tokenizer) == "<|eot_id|>"


def test_turn_end_refuses_templates_it_cannot_read(llama_tokenizer) -> None:
    from redi.data.prompts import chat_template, end_of_turn_token, turn_end

    original = llama_tokenizer.chat_template
    try:
        llama_tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}{% endfor %}"
        with pytest.raises(ValueError, match="does not render the assistant message"):
            turn_end(llama_tokenizer)
        llama_tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} END{% endfor %}"
        assert turn_end(llama_tokenizer) == " END"
        with pytest.raises(ValueError, match="not a token of the vocabulary"):
            end_of_turn_token(llama_tokenizer)
        llama_tokenizer.chat_template = "{{ raise_exception('no assistant turns') }}"
        with pytest.raises(ValueError, match="cannot render"):
            turn_end(llama_tokenizer)
    finally:
        llama_tokenizer.chat_template = original
    with pytest.raises(ValueError, match="unknown chat template 'chatml'"):
        chat_template("chatml")
