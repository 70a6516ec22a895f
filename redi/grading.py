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

import logging
import multiprocessing as mp
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
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces."""
    best = None
    for command in ("\\boxed", "\\fbox"):
        start = text.rfind(command)
        while start != -1:
            i = start + len(command)
            while i < len(text) and text[i] == " ":
                i += 1
            if i < len(text) and text[i] == "{":
                depth, j = 0, i
                while j < len(text):
                    if text[j] == "{":
                        depth += 1
                    elif text[j] == "}":
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                if depth == 0:
                    if best is None or start > best[0]:
                        best = (start, text[i + 1 : j])
                    break
            start = text.rfind(command, 0, start)
    return None if best is None else best[1]


def answer_segment(response: str) -> str | None:
    """The text graded in strict mode: after ``</think>`` (rllm: ``split(...)[1]``)."""
    if THINK_CLOSE not in response:
        return None
    return response.split(THINK_CLOSE)[1]


def gold_candidates(gold: Any) -> list[str]:
    """Gold answers as LaTeX strings for Math-Verify.

    Numbers are cast (``142.0`` -> ``142``), lists give alternatives, trailing
    newlines are stripped and each is wrapped in ``$...$`` unless it already
    carries ``$`` or ``\\boxed``.
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
        text = str(item).strip()
        if not text:
            continue
        if "$" not in text and "\\boxed" not in text:
            text = f"${text}$"
        out.append(text)
    if not out:
        raise ValueError(f"gold answer {gold!r} is empty")
    return out


@lru_cache(maxsize=4096)
def _parse_gold(text: str) -> tuple:
    from math_verify import parse

    return tuple(parse(text))


def _parse_pred(text: str, mode: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    if mode == "strict":
        # only the boxed answer is graded: parse it alone
        return parse(f"\\boxed{{{text}}}")
    return parse(
        text,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
    )


@dataclass(frozen=True)
class Grade:
    correct: bool
    extracted: str | None  # what was compared (the boxed text, or Math-Verify's match)
    timed_out: bool = False


def grade_detail(response: str, gold: Any, mode: str) -> Grade:
    """Grade in the current process (Math-Verify's signal timeouts only)."""
    from math_verify import verify

    if mode not in MODES:
        raise ValueError(f"unknown grading mode {mode!r}; expected one of {MODES}")
    golds = [_parse_gold(g) for g in gold_candidates(gold)]
    if mode == "strict":
        segment = answer_segment(response)
        if segment is None:
            return Grade(False, None)
        boxed = last_boxed(segment)
        if boxed is None:
            return Grade(False, None)
        pred, extracted = _parse_pred(boxed, mode), boxed
    else:
        pred = _parse_pred(response, mode)
        # Math-Verify returns [sympy object, matched string]; never str() the object
        extracted = pred[-1] if pred and isinstance(pred[-1], str) else None
    if not pred:
        return Grade(False, extracted)
    return Grade(any(verify(list(g), pred) for g in golds if g), extracted)


def grade(response: str, gold: Any, mode: str) -> bool:
    """True iff ``response`` answers ``gold`` under ``mode`` (``strict``/``math_verify``).

    ``gold`` may be a string, a number or a list of alternative strings. Runs in
    the calling process; use ``Grader`` for many responses or untrusted text.
    """
    return grade_detail(response, gold, mode).correct


# ---------------------------------------------------------------- worker pool


def _worker(conn) -> None:
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        for index, response, gold, mode in batch:
            try:
                result = grade_detail(response, gold, mode)
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
        self.timeouts: list[int] = []
        self.errors: dict[int, str] = {}

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self):
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(child,), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def close(self) -> None:
        for proc, conn in self._procs:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
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
        results: list[Grade | None] = [None] * len(responses)
        pending = [(i, responses[i], golds[i], mode) for i in range(len(responses))]
        pending.reverse()  # pop() from the end keeps input order
        while len(self._procs) < self.workers:
            self._procs.append(self._spawn())
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
