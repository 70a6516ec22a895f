"""Evaluation prompts, byte for byte, with the Qwen2.5-Math chat template."""

from __future__ import annotations

import pytest

from redi.prompts import QWEN_MATH_CHAT_TEMPLATE, render_eval_prompt

# Qwen/Qwen2.5-Math-1.5B's chat_template (tokenizer_config.json), verbatim
QWEN25_MATH_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'Please reason step by step, and put your final answer within \\\\boxed{}.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within \\\\boxed{}.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

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
    from redi.base_model import train_tokenizer

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
