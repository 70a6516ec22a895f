"""Answer grading with Math-Verify, in killable worker processes.

Two modes:

* ``"strict"`` -- the authors' final-table rule (rllm/DeepScaleR): no
  ``</think>`` -> wrong; only the text after ``</think>`` is graded, using its
  last ``\\boxed{...}``; no box -> wrong. Equivalence is decided by Math-Verify
  (the authors used rllm's mathd/sympy graders: a documented deviation).
* ``"math_verify"`` -- the intermediate-eval rule (LightEval): Math-Verify's own
  extraction over the whole response.

Math-Verify's timeouts use SIGALRM, which cannot interrupt C-level work (a huge
power, ``str()`` of a giant integer). ``Grader`` therefore grades in worker
processes with a hard wall-clock limit per item and replaces a stuck worker; a
timed-out item is wrong and logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import wait
from typing import Any

log = logging.getLogger(__name__)

MODES = ("strict", "math_verify")
THINK_CLOSE = "</think>"


# ------------------------------------------------------------------ extraction


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (else the last ``\\fbox{...}``), rllm's rule.

    Only the last occurrence counts (an unbalanced one gives None, as in rllm's
    ``last_boxed_only_string``); ``\\boxed 5`` (no braces) gives the text up to
    the next ``$``. One linear scan, so a 1 MB response is cheap.
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


def answer_segment(response: str) -> str | None:
    """The text graded in strict mode: after ``</think>`` (rllm: ``split(...)[1]``)."""
    if THINK_CLOSE not in response:
        return None
    return response.split(THINK_CLOSE)[1]


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


def grade_detail(response: str, gold: Any, mode: str, timeout_s: float = 5.0) -> Grade:
    """Grade in the current process (main thread; Math-Verify's signal timeouts only)."""
    if mode not in MODES:
        raise ValueError(f"unknown grading mode {mode!r}; expected one of {MODES}")
    golds = tuple(gold_latex(gold))
    if mode == "strict":
        segment = answer_segment(response)
        if segment is None:
            return Grade(False, None)
        boxed = last_boxed(segment)
        if boxed is None:
            return Grade(False, None)
        verdict = _strict_cached if len(boxed) <= CACHE_MAX_CHARS else _strict_verdict
        return Grade(verdict(boxed, golds, timeout_s), boxed)
    # identical (short) samples are graded once; long ones would only fill memory
    verdict = _math_verify_cached if len(response) <= CACHE_MAX_CHARS else _math_verify_verdict
    return Grade(*verdict(response, golds, timeout_s))


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
    return bool(pred) and _verify(golds, pred, timeout_s)


_parse_boxed_cached = lru_cache(maxsize=4096)(_parse_boxed)  # shared across golds
_strict_cached = lru_cache(maxsize=65536)(_strict_verdict)
_math_verify_cached = lru_cache(maxsize=4096)(_math_verify_verdict)


def _verify(golds: tuple[str, ...], pred: list, timeout_s: float) -> bool:
    from math_verify import verify

    for latex in golds:
        parsed = _parse_gold(latex if "\\boxed" in latex else f"${latex}$", timeout_s)
        if parsed and verify(list(parsed), pred, timeout_seconds=_seconds(timeout_s)):
            return True  # gold first: verify is not symmetric
    return False


def grade(response: str, gold: Any, mode: str) -> bool:
    """True iff ``response`` answers ``gold`` under ``mode`` (``strict``/``math_verify``).

    ``gold`` may be a string, a number or a list of alternative strings. Runs in
    the calling process; use ``Grader`` for many responses or untrusted text.
    """
    return grade_detail(response, gold, mode).correct


# ---------------------------------------------------------------- worker pool


def _worker(conn, timeout_s: float) -> None:
    # Math-Verify logs the whole input on a timeout (megabytes for a runaway
    # response); the pool logs its own one-line message instead
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        for index, response, gold, mode in batch:
            try:
                result = grade_detail(response, gold, mode, timeout_s)
            except Exception as err:  # a malformed item must not kill the worker
                result = Grade(False, None)
                conn.send((index, result, f"{type(err).__name__}: {err}"))
                continue
            conn.send((index, result, None))


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

        Math-Verify is imported first so every worker inherits it (~1 s each otherwise).
        """
        import math_verify  # noqa: F401

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
    ) -> list[Grade]:
        """Grade ``responses[i]`` against ``golds[i]``; results in input order."""
        if mode not in MODES:
            raise ValueError(f"unknown grading mode {mode!r}; expected one of {MODES}")
        if len(responses) != len(golds):
            raise ValueError(f"{len(responses)} responses but {len(golds)} golds")
        for g in golds:  # bad gold data is an input error, not a silent 'wrong'
            gold_candidates(g)
        self.timeouts, self.errors = [], {}  # of this call
        results: list[Grade | None] = [None] * len(responses)
        pending = [(i, responses[i], golds[i], mode) for i in range(len(responses))]
        pending.reverse()  # pop() from the end keeps input order
        self.start()
        # per worker: the items in flight and when the current one started
        inflight: dict[int, list] = {w: [] for w in range(self.workers)}
        started: dict[int, float] = {}

        def dispatch(w: int) -> None:
            batch = [pending.pop() for _ in range(min(self.chunk_size, len(pending)))]
            if batch:
                inflight[w] = batch
                started[w] = time.monotonic()
                self._procs[w][1].send(batch)

        for w in range(self.workers):
            dispatch(w)
        while any(inflight.values()):
            conns = {self._procs[w][1]: w for w in inflight if inflight[w]}
            ready = wait(list(conns), timeout=0.05)
            for conn in ready:
                w = conns[conn]
                try:
                    index, result, error = conn.recv()
                except EOFError:  # worker died: treat its current item as timed out
                    self._fail_current(w, inflight, results, pending)
                    if progress is not None:
                        progress.update(1)
                    self._procs[w] = self._spawn()
                    dispatch(w)
                    continue
                results[index] = result
                if error:
                    self.errors[index] = error
                    log.warning("grading item %d failed (%s); counted wrong", index, error)
                inflight[w] = [item for item in inflight[w] if item[0] != index]
                started[w] = time.monotonic()
                if progress is not None:
                    progress.update(1)
                if not inflight[w]:
                    dispatch(w)
            now = time.monotonic()
            for w in list(inflight):
                if inflight[w] and now - started[w] > self.hard_limit_s:
                    proc, conn = self._procs[w]
                    proc.kill()
                    proc.join()
                    conn.close()
                    self._fail_current(w, inflight, results, pending)
                    if progress is not None:
                        progress.update(1)
                    self._procs[w] = self._spawn()
                    dispatch(w)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _fail_current(self, w, inflight, results, pending) -> None:
        """The worker's first unfinished item is the culprit; requeue the rest."""
        batch = inflight[w]
        index = batch[0][0]
        results[index] = Grade(False, None, timed_out=True)
        self.timeouts.append(index)
        log.warning("grading item %d exceeded %.1fs; counted wrong", index, self.hard_limit_s)
        pending.extend(reversed(batch[1:]))
        inflight[w] = []


def grade_all(
    responses: Sequence[str],
    golds: Sequence[Any],
    modes: Iterable[str] = MODES,
    workers: int = 2,
    timeout_s: float = 5.0,
) -> dict[str, list[Grade]]:
    """Grade every response under each mode with one worker pool."""
    with Grader(workers=workers, timeout_s=timeout_s) as grader:
        return {mode: grader.grade_many(responses, golds, mode) for mode in modes}
