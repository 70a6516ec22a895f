"""Chat rendering shared by data filtering, training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The Qwen2.5-Math default system prompt (added by its chat template).
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]  # Qwen2's (the tiny qwen2 family's)

# Llama 3's special tokens (the tiny llama family's; Llama-3.2-3B has them all)
BEGIN_OF_TEXT, END_OF_TEXT = "<|begin_of_text|>", "<|end_of_text|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
FINETUNE_PAD = "<|finetune_right_pad_id|>"

# The Qwen2.5-Math chat template without the tool-calling branches: a default
# system prompt unless the conversation brings its own. Used for the tiny
# preset's tokenizer; the paper preset uses the model's own template.
QWEN_MATH_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + SYSTEM_PROMPT.replace("\\", "\\\\") + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# A Llama-3-style chat template with the Qwen2.5-Math default system prompt (a
# Llama base model has no math system prompt of its own): ``bos``, then a header
# and ``<|eot_id|>`` around every turn. Used by the tiny llama family and, through
# ``params["chat_template"]``, for Llama-3.2-3B.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + messages[0]['content']"
    " + '<|eot_id|>' }}"
    "{%- else %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n"
    + SYSTEM_PROMPT.replace("\\", "\\\\") + "<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

# chat templates by name (``params["chat_template"]``, a family's template)
CHAT_TEMPLATES: dict[str, str] = {
    "qwen_math": QWEN_MATH_CHAT_TEMPLATE,
    "llama3": LLAMA3_CHAT_TEMPLATE,
}

# an assistant content that no template or trace contains (turn_end)
_SENTINEL = "@@redi-assistant-content-sentinel@@"


def chat_template(name: str) -> str:
    """The chat template called ``name`` in ``CHAT_TEMPLATES``."""
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template {name!r}; expected one of {sorted(CHAT_TEMPLATES)}")
    return CHAT_TEMPLATES[name]


def turn_end(tokenizer: Any) -> str:
    """What the tokenizer's own chat template writes after an assistant message's
    content: ``"<|im_end|>\\n"`` (Qwen), ``"<|eot_id|>"`` (Llama 3). The SFT
    completions end with it."""
    from jinja2 import TemplateError

    messages = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=False)
    except TemplateError as err:
        raise ValueError(f"the chat template cannot render a user/assistant turn: {err}") from err
    if not isinstance(text, str) or _SENTINEL not in text:
        raise ValueError("the chat template does not render the assistant message's content "
                         "verbatim: cannot derive the text that ends an assistant turn")
    return text[text.rindex(_SENTINEL) + len(_SENTINEL):]


def end_of_turn_token(tokenizer: Any) -> str:
    """The special token that ends an assistant turn: ``turn_end`` without whitespace
    (``<|im_end|>``, ``<|eot_id|>``); a ValueError unless it is one vocabulary token."""
    token = turn_end(tokenizer).strip()
    if not token or token not in tokenizer.get_vocab():
        raise ValueError(f"the chat template's end of an assistant turn {token!r} is not a "
                         "token of the vocabulary")
    return token


def stage2_suffix(tokenizer: Any) -> str:
    """The end of a stage-2 completion: ``turn_end`` + the EOS (Qwen:
    ``"<|im_end|>\\n<|endoftext|>"``), as TRL's ``tokenize_row`` appends the EOS."""
    if not tokenizer.eos_token:
        raise ValueError("the tokenizer has no eos token (the stage-2 completions end with it)")
    return turn_end(tokenizer) + tokenizer.eos_token


# Open-R1's math prompt, verbatim (two spaces after "clearly.").
EVAL_USER_TEMPLATE = (
    "Solve the following math problem efficiently and clearly.  The last line of your "
    "response should be of the following format: 'Therefore, the final answer is: "
    "$\\boxed{{ANSWER}}$. I hope it is correct' (without quotes) where ANSWER is just the "
    "final number or expression that solves the problem. Think step by step before "
    "answering.\n\n{problem}"
)


def eval_user_message(problem: str) -> str:
    return EVAL_USER_TEMPLATE.format(problem=problem)


def user_messages(problem: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": problem}]


def render_generation_prompt(tokenizer: Any, problem: str) -> str:
    """System + user turn + ``<|im_start|>assistant\\n`` (training prompts)."""
    return tokenizer.apply_chat_template(
        user_messages(problem), tokenize=False, add_generation_prompt=True
    )


def render_eval_prompt(
    tokenizer: Any,
    problem: str,
    force_think: bool,
    think_prefix: str = "<think>\n",
    think_prefix_newline: bool = False,
) -> str:
    """The evaluation prompt: Open-R1 template in the model's own chat template.

    With ``force_think`` the generation starts after ``think_prefix``. The
    authors' final-eval template (``qwen_w_ft.jinja``) emits
    ``<|im_start|>assistant<think>\\n`` -- no newline before ``<think>`` -- which
    is ``think_prefix_newline=False``; ``True`` gives the training-consistent
    ``<|im_start|>assistant\\n<think>\\n``.
    """
    text = tokenizer.apply_chat_template(
        user_messages(eval_user_message(problem)), tokenize=False, add_generation_prompt=True
    )
    if not force_think or text.rstrip("\n").endswith(think_prefix.rstrip("\n")):
        return text  # e.g. R1-Distill's template already opens <think>
    if not think_prefix_newline and text.endswith("\n"):
        text = text[:-1]
    return text + think_prefix


def authors_token_lengths(tokenizer: Any, problem: str, responses: list[str]) -> list[int]:
    """Token lengths as the authors' length filter measured them.

    Prompt and each response are rendered *separately* with
    ``apply_chat_template(add_generation_prompt=False)`` and counted +1 for the
    EOS. The template adds its default system prompt to the assistant-only
    render too, so response lengths include ~25 extra tokens at paper scale
    (kept on purpose: it is the authors' rule).
    """
    renders = [user_messages(problem)] + [
        [{"role": "assistant", "content": r}] for r in responses
    ]
    lengths = []
    for messages in renders:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns BatchEncoding
            ids = ids["input_ids"]
        lengths.append(len(ids) + 1)
    return lengths


def sft_suffix(tokenizer: Any) -> str:
    """The end of an SFT completion: the chat template's end of an assistant turn."""
    return turn_end(tokenizer)


def encode_prompts(tokenizer: Any, problems: Sequence[str]) -> list[list[int]]:
    texts = [render_generation_prompt(tokenizer, p) for p in problems]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_completions(tokenizer: Any, traces: Sequence[str], suffix: str) -> list[list[int]]:
    return tokenizer([t + suffix for t in traces], add_special_tokens=False)["input_ids"]
