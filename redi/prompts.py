"""Chat rendering shared by data filtering, training and evaluation."""

from __future__ import annotations

from typing import Any

# The Qwen2.5-Math default system prompt (added by its chat template).
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

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
