"""Answer grading in killable worker processes: the paper's rule and Math-Verify.

Three modes:

* ``"rllm"`` -- the rule the paper's final tables were graded with
  (rllm/DeepScaleR's ``RewardMathFn``, LLM judge off), step by step: no
  ``</think>`` -> wrong, else the text ``response.split("</think>")[1]``; its
  answer is the inside of the last ``\\boxed{...}`` (``rllm_answer``); golds are
  ``str()`` of every alternative (``rllm_golds``); correct iff mathruler's
  ``grade_answer`` (the Hendrycks/mathd string normaliser, then the PRM800K
  sympy grader) accepts some alternative.
* ``"strict"`` -- the same structure with Math-Verify deciding equivalence
  (see ``grade_strict`` for where it deliberately differs from ``rllm``).
* ``"math_verify"`` -- the intermediate-eval rule (LightEval): Math-Verify's own
  extraction over the whole response.

A model that does not think (``thinks=False``: an instruct baseline, prompted
without ``<think>``) has no ``</think>`` to look for, so ``rllm`` and ``strict``
grade its whole response (the last box of it) with the same comparison: the
rule's "no ``</think>`` -> wrong" exists to fail a thinking model that did not
finish, not to fail every answer of a model that never opens a thought.

Math-Verify's timeouts use SIGALRM, which cannot interrupt C-level work (a huge
power, ``str()`` of a giant integer), and sympy in the ``rllm`` grader has no
timeout at all. ``Grader`` therefore grades in worker processes with a hard
wall-clock limit per item and replaces a stuck worker; a timed-out item is
wrong and logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from multiprocessing.connection import wait
from typing import Any

log = logging.getLogger(__name__)

MODES = ("rllm", "strict", "math_verify")
THINK_CLOSE = "</think>"


# ------------------------------------------------------------------ extraction


def last_boxed(text: str) -> str | None:
    """Strict mode's box: the last ``\\boxed{...}`` (else the last ``\\fbox{...}``).

    Only the last occurrence counts (an unbalanced one gives None); more lenient
    than ``rllm_answer``: ``\\boxed {5}`` and ``\\fbox{5}`` count, and ``\\boxed 5``
    (no braces) gives the text up to the next ``$``. One linear scan, so a 1 MB
    response is cheap. Also reads Minerva's answers from Hub solutions.
    """
    start = text.rfind("\\boxed")
    command = "\\boxed"
    if start == -1:
        start, command = text.rfind("\\fbox"), "\\fbox"
        if start == -1:
            return None
    i = start + len(command)
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        if command == "\\boxed" and i > start + len(command):  # "\\boxed 5$"
            return text[i:].split("$")[0].strip() or None
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def answer_segment(response: str, thinks: bool = True) -> str | None:
    """The text graded in rllm and strict mode: ``response.split("</think>")[1]``
    (between the first and a second ``</think>``), None without one; the whole
    response for a model that does not think."""
    if not thinks:
        return response
    if THINK_CLOSE not in response:
        return None
    return response.split(THINK_CLOSE)[1]


_BOXED_OPEN = "\\boxed{"
_BRACES = re.compile(r"[{}]")


def rllm_answer(text: str) -> str | None:
    """The paper's answer extraction: the inside of the last ``\\boxed{...}``, or None.

    From the last ``\\boxed`` (the ``\\fbox`` fallback is reached only when the
    text has no ``\\boxed``, and then the rule gives no answer) up to the first
    ``}`` that balances the braces counted from there. The span counts only if
    it starts with the literal ``\\boxed{``: ``\\boxed 5``, ``\\boxed {5}``,
    ``\\fbox{5}`` and an unbalanced box give None. No stripping.
    """
    if "\\boxed" not in text:
        return None
    start = text.rfind("\\boxed")
    if not text.startswith(_BOXED_OPEN, start):
        return None  # also covers "\\boxed 5}": its span would not start with "\\boxed{"
    depth = 0
    for brace in _BRACES.finditer(text, start + len(_BOXED_OPEN) - 1):  # braces only: fast
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return text[start + len(_BOXED_OPEN): brace.start()]
    return None


def rllm_golds(gold: Any) -> tuple[str, ...]:
    """The paper's gold alternatives: ``str()`` of each (``142.0`` stays ``"142.0"``,
    ``"025"`` stays ``"025"``); one containing ``\\boxed`` becomes its boxed content
    (dropped when it has none). No other cleaning."""
    if gold is None:
        raise ValueError("gold answer is None")
    items = list(gold) if isinstance(gold, (list, tuple)) else [gold]
    out = []
    for item in items:
        text = str(item)
        if "\\boxed" in text:
            text = rllm_answer(text)
            if text is None:
                continue
        out.append(text)
    if not out:
        raise ValueError(f"gold answer {gold!r} has no usable alternative for the rllm grader")
    return tuple(out)


_DOLLAR = re.compile(r"(?<!\\)\$")  # an unescaped $ (``\\$`` is a currency sign)
_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_INT = re.compile(r"-?\d{1,15}")


def _clean_gold(text: str) -> str:
    """One gold string as bare LaTeX.

    OlympiadBench wraps answers in ``$...$`` and writes several answers as
    ``$69$,$84$`` (once ``$221,$8$``, once with a trailing ``.``): math pieces are
    joined with ", " unless prose surrounds them (left to Math-Verify as is).
    """
    text = text.strip()
    parts = _DOLLAR.split(text)
    if len(parts) > 1 and not any(_PROSE.search(p) for p in parts[0::2]):
        pieces = [p.strip().strip(",.;").strip() for p in parts]
        text = ", ".join(p for p in pieces if p)
    return text


def gold_latex(gold: Any) -> list[str]:
    """Gold alternatives as bare LaTeX strings (what a model would box).

    Numbers are cast (``142.0`` -> ``142``), lists give alternatives, and
    whitespace and stray math delimiters are removed (``_clean_gold``).
    """
    if gold is None:
        raise ValueError("gold answer is None")
    items = list(gold) if isinstance(gold, (list, tuple)) else [gold]
    out = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"gold answer {item!r} is a bool")
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        text = _clean_gold(str(item))
        if text:
            out.append(text)
    if not out:
        raise ValueError(f"gold answer {gold!r} is empty")
    return out


def gold_candidates(gold: Any) -> list[str]:
    """Gold answers for Math-Verify: ``gold_latex`` wrapped in ``$...$`` (unless boxed)."""
    return [t if "\\boxed" in t else f"${t}$" for t in gold_latex(gold)]


def _seconds(timeout_s: float) -> int:
    return max(1, math.ceil(timeout_s))  # Math-Verify's signal.alarm takes whole seconds


@lru_cache(maxsize=4096)
def _parse_gold(text: str, timeout_s: float) -> tuple:
    from math_verify import parse

    return tuple(parse(text, parsing_timeout=_seconds(timeout_s)))


def _parse_boxed(text: str, timeout_s: float) -> tuple:
    """Strict mode parses the boxed answer alone."""
    from math_verify import parse

    return tuple(parse(f"\\boxed{{{text}}}", parsing_timeout=_seconds(timeout_s)))


def _parse_response(text: str, timeout_s: float) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(
        text,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=_seconds(timeout_s),
    )


def _as_int(text: str) -> int | None:
    """A plain integer literal (up to 15 digits, leading zeros allowed) or None."""
    text = text.strip()
    return int(text) if _INT.fullmatch(text) else None


@dataclass(frozen=True)
class Grade:
    correct: bool
    extracted: str | None  # what was compared (the boxed text, or Math-Verify's match)
    timed_out: bool = False


def grade_detail(response: str, gold: Any, mode: str, timeout_s: float = 5.0,
                 thinks: bool = True) -> Grade:
    """Grade in the current process (main thread; Math-Verify's signal timeouts only).
    ``thinks=False``: rllm and strict grade the whole response (module docstring)."""
    if mode == "rllm":
        return grade_rllm(response, gold, thinks)
    if mode == "strict":
        return grade_strict(response, gold, timeout_s, thinks)
    if mode == "math_verify":
        golds = tuple(gold_latex(gold))
        # identical (short) samples are graded once; long ones would only fill memory
        verdict = _math_verify_cached if len(response) <= CACHE_MAX_CHARS else _math_verify_verdict
        return Grade(*verdict(response, golds, timeout_s))
    raise ValueError(f"unknown grading mode {mode!r}; expected one of {MODES}")


def grade_rllm(response: str, gold: Any, thinks: bool = True) -> Grade:
    """The paper's rule (module docstring); ``extracted`` is the boxed answer."""
    golds = rllm_golds(gold)
    segment = answer_segment(response, thinks)
    answer = None if segment is None else rllm_answer(segment)
    if answer is None:
        return Grade(False, None)
    verdict = _rllm_cached if len(answer) <= RLLM_CACHE_MAX_CHARS else _rllm_verdict
    return Grade(verdict(answer, golds), answer)


def grade_strict(response: str, gold: Any, timeout_s: float = 5.0,
                 thinks: bool = True) -> Grade:
    """The paper's structure (``</think>`` required, the last box of the text after
    it) with Math-Verify as the judge of equivalence.

    Deliberate differences from ``rllm`` (the paper's rule): equivalence is
    Math-Verify's ``verify`` (gold first), not mathd/PRM800K, so ``x = 13``
    matches a gold ``13.0`` and ``116.`` does not match ``116``; the box is
    ``last_boxed``'s, which also reads ``\\boxed 5``, ``\\boxed {5}`` and, when
    there is no ``\\boxed``, ``\\fbox{5}``; golds are cleaned (``gold_latex``:
    ``142.0`` -> ``142``, ``$...$`` removed, OlympiadBench answer lists joined);
    numbers below ``SMALL_MAGNITUDE`` must agree to a relative ``REL_TOL``
    (Math-Verify rounds to 6 decimals, so it calls any two numbers below ~5e-7
    equal: ``8.224e-22`` for ``8.224e-19``). Integer pairs skip the parser
    (exactly Math-Verify's verdict, faster).
    """
    golds = tuple(gold_latex(gold))
    segment = answer_segment(response, thinks)
    boxed = None if segment is None else last_boxed(segment)
    if boxed is None:
        return Grade(False, None)
    verdict = _strict_cached if len(boxed) <= CACHE_MAX_CHARS else _strict_verdict
    return Grade(verdict(boxed, golds, timeout_s), boxed)


_PLAIN_INT = re.compile(r"-?[0-9]{1,15}")


def _mathruler_accepts(given: str, gold: str) -> bool:
    """mathruler's ``grade_answer(given, gold)``.

    Two plain integers of up to 15 digits (exact as floats) are compared as
    integers: mathruler's normaliser reduces both to ``str(int(...))`` ("025" ->
    "25") and sympy then decides unequal ones (~0.4 ms), the common case.
    """
    if _PLAIN_INT.fullmatch(given) and _PLAIN_INT.fullmatch(gold):
        return int(given) == int(gold)
    from mathruler.grader import grade_answer  # mathd normaliser, then PRM800K sympy

    return bool(grade_answer(given, gold))


def _rllm_verdict(answer: str, golds: tuple[str, ...]) -> bool:
    """Depends on (answer, golds) only: the 16 samples of a problem repeat few
    answers, so each pair is judged once per worker (bounded cache)."""
    return any(_mathruler_accepts(answer, gold) for gold in golds)


# per worker process: at most 65,536 pairs of answers up to 1 kB (< 70 MB)
RLLM_CACHE_MAX_CHARS = 1024
_rllm_cached = lru_cache(maxsize=65536)(_rllm_verdict)


CACHE_MAX_CHARS = 4096


def _math_verify_verdict(response: str, golds: tuple[str, ...],
                         timeout_s: float) -> tuple[bool, str | None]:
    """(correct, extracted) in math_verify mode."""
    pred = _parse_response(response, timeout_s)
    # Math-Verify returns [sympy object, matched string]; never str() the object
    extracted = pred[-1] if pred and isinstance(pred[-1], str) else None
    return bool(pred) and _verify(golds, pred, timeout_s), extracted


def _strict_verdict(boxed: str, golds: tuple[str, ...], timeout_s: float) -> bool:
    """Strict mode depends on (boxed answer, gold) only: the 16 samples of a
    problem mostly repeat a few answers, so each pair is verified once (cached)."""
    # integer vs integer: Math-Verify compares these exactly; skip its LaTeX
    # parser and sympy (~1-2 ms), the most common case in every benchmark
    value = _as_int(boxed)
    gold_ints = [_as_int(g) for g in golds]
    if value is not None and all(g is not None for g in gold_ints):
        return value in gold_ints
    pred = list((_parse_boxed_cached if len(boxed) <= CACHE_MAX_CHARS else _parse_boxed)(
        boxed, timeout_s))
    return bool(pred) and _verify(golds, pred, timeout_s, small_relative=True)


_parse_boxed_cached = lru_cache(maxsize=4096)(_parse_boxed)  # shared across golds
_strict_cached = lru_cache(maxsize=65536)(_strict_verdict)
_math_verify_cached = lru_cache(maxsize=4096)(_math_verify_verdict)


def _verify(golds: tuple[str, ...], pred: list, timeout_s: float,
            small_relative: bool = False) -> bool:
    """Math-Verify (gold first: verify is not symmetric) against any gold alternative;
    ``small_relative``: strict mode's relative check of small numbers."""
    from math_verify import verify

    for latex in golds:
        parsed = _parse_gold(latex if "\\boxed" in latex else f"${latex}$", timeout_s)
        if not small_relative:
            if parsed and verify(list(parsed), pred, timeout_seconds=_seconds(timeout_s)):
                return True
            continue
        # pair by pair (verify is any() over the pairs) to know which pair matched
        for g in parsed:
            for p in pred:
                if (verify([g], [p], timeout_seconds=_seconds(timeout_s))
                        and not _small_mismatch(g, p)):
                    return True
    return False


# Math-Verify rounds floats to 6 decimals and chops tiny differences, so any two
# numbers below ~5e-7 compare equal (and 1/2004! = 1/2006!). Below SMALL_MAGNITUDE
# strict mode also asks for a relative REL_TOL: the precision that 6 decimals
# give at 1e-3, so the two rules meet there.
SMALL_MAGNITUDE = 1e-3
REL_TOL = 1e-3


def _real_value(expr: Any):
    """A real constant's value at 30 digits (an equation's right-hand side), or None."""
    import sympy

    if isinstance(expr, sympy.Eq):  # Math-Verify matches "x = 5" with its right side
        expr = expr.rhs
    if not isinstance(expr, sympy.Expr) or not expr.is_number:
        return None
    value = sympy.N(expr, 30)
    return value if value.is_real and value.is_finite else None


def _small_mismatch(gold: Any, pred: Any) -> bool:
    """True where two numbers below SMALL_MAGNITUDE differ by more than REL_TOL."""
    try:
        a, b = _real_value(gold), _real_value(pred)
        if a is None or b is None:
            return False
        scale = max(abs(a), abs(b))
        return bool(scale < SMALL_MAGNITUDE and abs(a - b) > REL_TOL * scale)
    except Exception:  # an exotic sympy object: keep Math-Verify's verdict
        return False


def grade(response: str, gold: Any, mode: str) -> bool:
    """True iff ``response`` answers ``gold`` under ``mode`` (one of ``MODES``).

    ``gold`` may be a string, a number or a list of alternative strings. Runs in
    the calling process; use ``Grader`` for many responses or untrusted text.
    """
    return grade_detail(response, gold, mode).correct


# ---------------------------------------------------------------- worker pool


def _worker(conn, timeout_s: float) -> None:
    # Math-Verify logs the whole input on a timeout (megabytes for a runaway
    # response); the pool logs its own one-line message instead
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("pylatexenc").setLevel(logging.ERROR)  # mathruler's LaTeX parser
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        for index, response, gold, mode, thinks in batch:
            # a thinking model's item keeps the plain four-argument call
            grade = grade_detail if thinks else partial(grade_detail, thinks=False)
            try:
                result = grade(response, gold, mode, timeout_s)
            except Exception as err:  # a malformed item must not kill the worker
                result = Grade(False, None)
                conn.send((index, result, f"{type(err).__name__}: {err}"))
                continue
            conn.send((index, result, None))


@dataclass
class _Round:
    """One ``grade_many`` call: items not yet sent, results, and per worker the items
    in flight and when its current one started."""

    pending: list
    results: list
    progress: Any = None
    inflight: dict[int, list] = field(default_factory=dict)
    started: dict[int, float] = field(default_factory=dict)

    def tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)


class Grader:
    """Grade many responses in worker processes with a hard per-item time limit.

    ``timeout_s`` is Math-Verify's own (signal) limit; an item that takes longer
    than ``hard_limit_s`` wall-clock (default ``3 * timeout_s + 1``) has its
    worker killed and replaced, and counts as wrong with ``timed_out=True``.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 5.0,
        hard_limit_s: float | None = None,
        chunk_size: int = 32,
    ) -> None:
        self.workers = max(1, workers)
        self.timeout_s = timeout_s
        self.hard_limit_s = hard_limit_s if hard_limit_s is not None else 3 * timeout_s + 1
        self.chunk_size = chunk_size
        # fork: workers start in milliseconds and inherit the imported math_verify
        self._ctx = mp.get_context("fork")
        self._procs: list[tuple[Any, Any]] = []
        self.timeouts: list[int] = []  # indices timed out in the last grade_many
        self.errors: dict[int, str] = {}  # index -> exception text, last grade_many

    def __enter__(self) -> Grader:
        return self.start()

    def start(self) -> Grader:
        """Fork the workers now (before the caller loads a model or starts threads).

        Math-Verify and mathruler are imported first so every worker inherits them
        (~1 s each otherwise).
        """
        import math_verify  # noqa: F401
        import mathruler.grader  # noqa: F401

        while len(self._procs) < self.workers:
            self._procs.append(self._spawn())
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self):
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(child, self.timeout_s), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def close(self) -> None:
        for proc, conn in self._procs:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
            proc.join(timeout=1)
            if proc.is_alive():
                proc.kill()
        self._procs = []

    def grade_many(
        self,
        responses: Sequence[str],
        golds: Sequence[Any],
        mode: str,
        progress: Any = None,
        thinks: bool = True,
    ) -> list[Grade]:
        """Grade ``responses[i]`` against ``golds[i]``; results in input order.
        ``thinks=False``: the responses of a model that does not think."""
        if mode not in MODES:
            raise ValueError(f"unknown grading mode {mode!r}; expected one of {MODES}")
        if len(responses) != len(golds):
            raise ValueError(f"{len(responses)} responses but {len(golds)} golds")
        for g in golds:  # bad gold data is an input error, not a silent 'wrong'
            rllm_golds(g) if mode == "rllm" else gold_candidates(g)
        self.timeouts, self.errors = [], {}  # of this call
        pending = [(i, responses[i], golds[i], mode, thinks) for i in range(len(responses))]
        pending.reverse()  # pop() from the end keeps input order
        work = _Round(pending, [None] * len(responses), progress)
        self.start()
        for w in range(self.workers):
            self._dispatch(work, w)
        while any(work.inflight.values()):
            conns = {self._procs[w][1]: w for w, items in work.inflight.items() if items}
            for conn in wait(list(conns), timeout=0.05):
                self._receive(work, conns[conn])
            now = time.monotonic()
            for w, items in list(work.inflight.items()):
                if items and now - work.started[w] > self.hard_limit_s:
                    self._replace(work, w, kill=True)
        assert all(r is not None for r in work.results)
        return work.results  # type: ignore[return-value]

    def _dispatch(self, work: _Round, w: int) -> None:
        batch = [work.pending.pop() for _ in range(min(self.chunk_size, len(work.pending)))]
        if batch:
            work.inflight[w] = batch
            work.started[w] = time.monotonic()
            self._procs[w][1].send(batch)

    def _receive(self, work: _Round, w: int) -> None:
        """One result from worker ``w`` (or its death: its current item failed)."""
        try:
            index, result, error = self._procs[w][1].recv()
        except EOFError:  # worker died: treat its current item as timed out
            self._replace(work, w, kill=False)
            return
        work.results[index] = result
        if error:
            self.errors[index] = error
            log.warning("grading item %d failed (%s); counted wrong", index, error)
        work.inflight[w] = [item for item in work.inflight[w] if item[0] != index]
        work.started[w] = time.monotonic()
        work.tick()
        if not work.inflight[w]:
            self._dispatch(work, w)

    def _replace(self, work: _Round, w: int, kill: bool) -> None:
        """Worker ``w`` is stuck (``kill``) or dead: its first unfinished item is the
        culprit (wrong, timed out), the rest are requeued, a new worker takes over."""
        if kill:
            proc, conn = self._procs[w]
            proc.kill()
            proc.join()
            conn.close()
        batch = work.inflight.get(w, [])
        index = batch[0][0]
        work.results[index] = Grade(False, None, timed_out=True)
        self.timeouts.append(index)
        log.warning("grading item %d exceeded %.1fs; counted wrong", index, self.hard_limit_s)
        work.pending.extend(reversed(batch[1:]))
        work.inflight[w] = []
        work.tick()
        self._procs[w] = self._spawn()
        self._dispatch(work, w)

