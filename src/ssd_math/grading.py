"""Grading one answer: extract the final boxed answer from a completion and decide it against the
gold with math-verify (statuses, answer kinds, the box syntax). Grading many rows in worker
processes that survive hostile answers is :mod:`ssd_math.grading_pool`.

This module owns the box syntax (:func:`boxed_spans`; ``problem_sources.last_boxed`` uses it), the statuses
(:data:`STATUSES`; ``tables`` imports them) and the answer kinds (:func:`answer_kind`).

Pipeline per sample row
-----------------------
1. ``extract_answer`` (in the calling process; linear time, no math): is the thinking block
   closed, and which boxes make up the final answer (see "Several boxes")?
2. The pair (gold, extracted answer) is graded once (cache: identical pairs across rows are
   graded a single time) by ``grade_answer`` in a worker process, with math-verify:
   ``verify(parse(gold), parse(answer))`` -- gold first (docs/conventions.md "Grading") -- after the
   same :func:`normalize_answer` on both. A worker keeps its parsed golds (the k samples of a
   prompt share one), and an answer written exactly as the gold reuses the gold's parse.
3. (:mod:`ssd_math.grading_pool`) Each worker grades one item at a time under a hard wall-clock limit. A worker that overruns is
   killed with SIGKILL and replaced, and the item gets status ``timeout``. This is needed because
   math-verify's own timeouts use ``signal.alarm`` (main thread only) and some inputs hang inside
   C code (e.g. ``9^{9^{9^{9^{9}}}}`` is evaluated as a Python big integer), where no signal
   handler ever runs.

Statuses (:data:`STATUSES`; contracts.md "Graded eval row"), classified by what math-verify
actually parsed (its ``parse`` returns the parsed expressions followed by the raw string as a
fallback, so "parsed nothing" means "no element that is not a string"):

* ``correct`` / ``incorrect``: both sides parsed to an expression; ``verify`` says equal or not.
* ``no_answer``: the row has a gold, and either its search region holds no complete box (the
  gold is then not parsed) or math-verify parses no expression from the box (``\\boxed{}``,
  ``\\boxed{???}``; the gold is parsed first, so a bad gold gives ``gold_parse_error`` instead).
* ``gold_parse_error``: the row has no gold (whatever its answer), math-verify parses no
  expression from the gold (``\\frac{``, ``???``, OlympiadBench's ``t(0,4]``,
  ``m_{\\max }=n^{2}-n-1``), or the gold is prose
  (:func:`gold_prose_words`: ``see the proof`` would parse letter by letter as
  ``E*E*E*f*h*o*o*p*r*s*t``). A bad gold never counts against the model.
* ``timeout`` (hard kill or in-worker alarm), ``error`` (an exception, or a worker that died).
  ``grade_error`` says why for these three, and for a box that parsed to nothing.

``correct`` is true only for status ``correct``.

Where the boxed answer is searched (decision)
---------------------------------------------
If the completion contains ``</think>``, only the text after the LAST ``</think>`` is searched:
a ``\\boxed{}`` inside the reasoning is a draft, not the answer. If there is no ``</think>``
(thinking never closed -- usually a length stop -- or a model that does not think at all), the
whole completion is searched. ``think_closed`` and ``length_stop`` are kept on every row, so a
stricter rule (e.g. "no answer unless the think block closed") can be applied at analysis time
without regrading.

Several boxes (decision: math-verify's own convention)
------------------------------------------------------
Find-all problems are answered ``\\boxed{(1, 2)}, \\boxed{(2, 1)}`` or
``\\boxed{1} and \\boxed{2}``.
math-verify (0.9.0), given a bare ``\\boxed{...}`` match, calls
``extract_boxed_content(mode="last")``: from the last box leftwards it keeps each earlier box
that is within 10 characters of the next, or within 70 characters with a separator (``and``,
``or``, ``,``, ``;``) between and a different content, collapses consecutive repeats, and joins
the parts with commas, which then parse as a set (``{(1, 2), (2, 1)}``, ``{1, 2, 3}``). We apply
the same rule to the boxes of the search region (:func:`_final_boxes`), join with ``", "``
(``2,500`` would parse as 2500), and record ``n_boxes``. A box far from the last one (a draft
earlier in the answer) is not part of it. Because the parts become a set, the ORDER of several
answers does not matter and repeats collapse: against the gold ``-2, -2`` (olympiadbench-2532)
one box ``-2`` is correct -- math-verify's set semantics, kept.

Answer forms (decisions: what a competition grader accepts)
-----------------------------------------------------------
* ``\\fbox{...}``: a box like ``\\boxed{...}`` (math-verify treats it so; so do MATH solutions).
* ``\\boxed 42`` (TeX's undelimited argument): accepted when a plain number follows the space
  (``\\boxed 42`` -> ``42``; a reader sees "42" boxed). Anything else after ``\\boxed `` without a
  brace is not a box: where it ends is a guess.
* Digit groups separated by a space, no-break space, thin space or TeX spacing (``1\\,000``,
  ``1 000``, ``1~000``): joined, so ``1\\,000`` = 1000 (math-verify alone reads ``1 000`` as
  ``1*0``). ``1,000`` and ``10,\\!080`` are 1000 and 10080 (math-verify's own rule: comma
  thousands with exactly three digits and no space; ``1, 000`` is two answers).
* ``\\dfrac`` / ``\\tfrac``: the same as ``\\frac`` (math-verify).
* ``^\\circ``: a unit, dropped: ``30^\\circ`` = ``30`` (math-verify); degrees are NOT converted to
  radians (``\\frac{\\pi}{6}`` vs ``30^\\circ`` is incorrect), as graders of degree answers do.
* Units in ``\\text{}`` / ``\\mbox{}`` / ``\\mathrm{}`` (``5 \\text{ cm}``): dropped (math-verify).
* Percentages: the percent sign is a unit and is dropped on both sides (:func:`normalize_answer`):
  ``64\\%`` = ``64`` and ``4.2\\%`` = ``4.2`` (math-verify alone accepts ``9\\%`` = 9 but not
  ``4.2\\%`` = 4.2), and ``64\\%`` is not ``0.64`` ("what percent" expects 64; math-verify alone
  would accept it).
* A trailing sentence period is dropped (``5.`` = 5; OlympiadBench's gold
  ``(-\\infty, 0) \\cup\\{1\\}.`` otherwise parses as ``0``).
* Equations: ``f(x)=x`` vs ``x`` and ``k=2`` vs ``2`` are correct (math-verify compares the right
  side); intervals need the same brackets; ``(a, b)`` is both a tuple and an open interval and
  matches only ``(a, b)``; an inequality answer ``x < -5`` does not match the interval gold
  ``(-\\infty, -5)`` (math-verify's ``allow_set_relation_comp=False``: only the reverse is
  compared) -- kept, a stricter reading than a lenient human grader.
* Text answers: ``\\text{Evelyn}`` = ``Evelyn``; ``\\text{(C)}`` = ``(C)`` = ``C`` (math-verify).
* Upright constants and operator names (:func:`unwrap_upright`): ``\\mathrm{e}`` is Euler's number,
  as ``e`` is (``1 - \\frac{1}{\\mathrm{e}}`` = ``1 - 1/e``, ``\\mathrm{e}^2`` = ``e^{2}``), and
  ``\\mathrm{i}`` is ``i``; ``\\mathrm{sin}`` / ``\\operatorname{sin}`` are ``\\sin`` (every function
  name latex2sympy reads as a command); ``\\mathrm{\\pi}`` is ``\\pi``. math-verify rewrites
  ``\\mathrm`` (and ``\\mathit``, ``\\mathbf``, ``\\textrm`` ...) to ``\\text``, after which ``\\text{e}``
  is a symbol named e (not E), and a ``\\text{...}}`` at the end of a group is cut as a unit
  (``1 - \\frac{1}{\\text{e}}`` becomes ``1 - \\frac{1}{``: no expression). A multi-letter body that
  is no function name (``5\\,\\mathrm{cm}``) stays a unit.
"""

from __future__ import annotations

import re
import signal
import threading
from typing import Any

STATUSES = ("correct", "incorrect", "no_answer", "gold_parse_error", "timeout", "error")

_THINK_CLOSE = "</think>"
# ``\boxed{`` / ``\fbox{`` (group "number" unset), or ``\boxed 42`` (a plain number after a space)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?:\s*\{|\s+(?P<number>-?\d+(?:\.\d+)?)(?![\w{]|\.\d))")
_SEPARATOR_RE = re.compile(r"\b(?:and|or)\b|,|;")
# Brace tokens for matching: an escaped character (``\{``, ``\}``, ``\\``) is skipped as a unit;
# ``\\`` must be consumed whole so that ``\\{`` still opens a group.
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)

# normalize_answer: a digit group separator is a space, a no-break / thin space, or a TeX spacing
# command; a run is 1-3 digits, then groups of exactly 3 (not inside a longer number or decimal)
_SEP = r"(?:\\[,;: ]|\\thinspace\s*|~|[ \u00a0\u2009\u202f])"
_THOUSANDS_RE = re.compile(rf"(?<![\d.])\d{{1,3}}(?:{_SEP}\d{{3}})+(?![\d]|\.\d)")
_GROUP_SEP_RE = re.compile(_SEP)
_PERCENT_RE = re.compile(r"(?:\s|\\[,;:! ]|~)*\\?%")
# gold_prose_words
# unwrap_upright: a font / operator-name group around one symbol (math-verify maps every \mathrm-like
# font command to \text; \operatorname it keeps)
_UPRIGHT_RE = re.compile(
    r"\\(?P<cmd>mathrm|mathit|mathbf|mathsf|mathup|textrm|textnormal|textit|textbf"
    r"|operatorname\*?)\s*\{\s*(?P<body>\\?[A-Za-z]+)\s*\}"
)
#: upright constants: Euler's number and the imaginary unit, read as the bare letter is read
UPRIGHT_CONSTANTS = frozenset({"e", "i"})
_RM_CONST_RE = re.compile(r"\{\s*\\rm\s+(?P<c>[ei])\s*\}")  # {\rm e}
#: function names latex2sympy parses as commands (``\sin x``), so ``\operatorname{sin}`` = ``\sin``
LATEX_FUNCTIONS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan arccot arcsec arccsc sinh cosh tanh coth sech csch "
    "log ln lg exp max min gcd lcm det deg".split()
)
_TEXT_GROUP_RE = re.compile(r"\\(?:text\w*|mbox|mathrm|operatorname|begin|end)\s*\{[^{}]*\}")
_LATEX_CMD_RE = re.compile(r"\\[A-Za-z]+")
_WORD_RE = re.compile(r"[A-Za-z]{3,}")


# ----------------------------------------------------------------------------------------------
# Extraction (parent process)
# ----------------------------------------------------------------------------------------------
def _match_braces(text: str) -> dict[int, int]:
    """Map the position of every '{' that is closed in ``text`` to its matching '}' (linear)."""
    stack: list[int] = []
    match: dict[int, int] = {}
    for m in _BRACE_TOKEN_RE.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}":
            if stack:
                match[stack.pop()] = m.start()
    return match


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Every complete box in ``text``, in order: ``(start, end, stripped content)``.

    A box is ``\\boxed{...}`` or ``\\fbox{...}`` (braces matched, escaped ``\\{`` / ``\\}``
    ignored; a truncated, unclosed one does not count) or ``\\boxed`` + space + a plain number
    (``\\boxed 42``). ``start``/``end`` delimit the whole command. Linear time (one regex pass for
    the boxes, one for the braces), whatever the input."""
    if not text:
        return []
    spans: list[tuple[int, int, str]] = []
    match: dict[int, int] | None = None
    for m in _BOXED_RE.finditer(text):
        if m.group("number") is not None:
            spans.append((m.start(), m.end(), m.group("number")))
            continue
        if match is None:
            match = _match_braces(text)
        close = match.get(m.end() - 1)
        if close is not None:
            spans.append((m.start(), close + 1, text[m.end() : close].strip()))
    return spans


def _final_boxes(region: str, spans: list[tuple[int, int, str]]) -> list[str]:
    """The boxes that make up the final answer: math-verify's rule for several boxes.

    From the last complete box leftwards, an earlier box joins the answer while the text between
    it and the next one is shorter than 10 characters, or shorter than 70 characters, contains a
    separator (``and``, ``or``, ``,``, ``;``) and the two contents differ (this is
    ``latex2sympy2_extended.math_normalization.extract_boxed_content(mode="last")``, which
    math-verify applies to a bare ``\\boxed{...}`` match). Consecutive identical contents count
    once. A box that encloses the next one stops the run. math-verify joins the parts with
    ``","``; :func:`extract_answer` uses ``", "`` because ``2,500`` parses as the number 2500 while
    ``2, 500`` parses as the set {2, 500} (and a part's own commas are kept as written)."""
    if not spans:
        return []
    start, _, content = spans[-1]
    parts = [content]
    for prev_start, prev_end, prev_content in reversed(spans[:-1]):
        if prev_end > start:  # encloses the box after it (\boxed{\boxed{3}})
            break
        between = region[prev_end:start]
        if not (
            len(between) < 10 or (prev_content != parts[-1] and len(between) < 70 and _SEPARATOR_RE.search(between))
        ):
            break
        if prev_content != parts[-1]:
            parts.append(prev_content)
        start = prev_start
    return parts[::-1]


def extract_answer(completion: str) -> dict[str, Any]:
    """Find the answer in a completion.

    Returns ``{"think_closed": bool, "boxed": bool, "n_boxes": int, "extracted_answer": str |
    None}``:

    * ``think_closed``: the completion contains ``</think>``.
    * search region: the text after the last ``</think>`` if closed, else the whole completion
      (see module docstring); a box inside a closed thinking block is a draft.
    * ``extracted_answer``: the final answer's boxes (:func:`_final_boxes`: the last complete
      box plus the boxes just before it, joined by ``", "``; empty boxes add nothing), or None
      when the region has no complete box. ``n_boxes``: how many boxes make up the answer
      (consecutive repeats counted once; 0 without a box).
    * ``boxed``: the region holds at least one complete box (``extracted_answer`` is not None;
      it is ``""`` for an empty ``\\boxed{}``, which grades ``no_answer``).

    Runs in linear time, whatever the input.
    """
    completion = completion or ""
    pos = completion.rfind(_THINK_CLOSE)
    think_closed = pos >= 0
    region = completion[pos + len(_THINK_CLOSE) :] if think_closed else completion
    parts = _final_boxes(region, boxed_spans(region))
    answer = ", ".join(p for p in parts if p) if parts else None
    return {
        "think_closed": think_closed,
        "boxed": answer is not None,
        "n_boxes": len(parts),
        "extracted_answer": answer,
    }


# ----------------------------------------------------------------------------------------------
# Answer kinds (for breakdowns; classified from the gold string alone, no math-verify)
# ----------------------------------------------------------------------------------------------
ANSWER_KINDS = (
    "integer",
    "decimal",
    "fraction",
    "expression",
    "equation",
    "tuple",
    "interval",
    "set",
    "matrix",
    "text",
    "missing",
)
_KIND_DROP_RE = re.compile(r"\\(?:left|right|displaystyle|[,;:! ])|\\\$|\^\s*\{?\s*\\circ\s*\}?|\s+")
_UNIT_TAIL_RE = re.compile(r"(?<=[\d}])\\(?:text|mbox|mathrm)\{[^{}]*\}(?:\^\{?\d\}?)?$")
_FRACTION_RE = re.compile(r"-?(?:\\[dt]?frac(?:\{\d+\}|\d)(?:\{\d+\}|\d)|\d+/\d+)")


def _top_level_commas(s: str) -> int:
    """Commas outside any (), [], {} or \\{\\} group (brackets of either kind close a group, so
    half-open intervals count too)."""
    depth = n = 0
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            n += 1
    return n


def answer_kind(gold: Any) -> str:
    """The kind of a gold answer, one of :data:`ANSWER_KINDS`, from its string alone.

    ``set``: several answers (a top-level comma list such as ``1, 3, 5`` or ``(1,2),(2,1)``, or
    ``\\{...\\}``); ``tuple``: one parenthesised list, ``(a, b)`` included (OlympiadBench writes
    both its tuples and its open intervals so; an interval is told apart only by ``[``/``]``,
    ``\\infty``, ``\\cup`` or an inequality); ``equation``: contains ``=``; ``matrix``:
    ``\\begin{pmatrix}`` and kin; ``text``: all in ``\\text{}`` (``\\text{Evelyn}``,
    ``\\text{(C)}``) or prose; ``integer`` / ``decimal`` /
    ``fraction`` (of two integers): plain numbers, after dropping ``$``, digit-group separators,
    ``^\\circ``, a percent sign and a trailing unit in ``\\text{}``; everything else is
    ``expression``; ``missing`` for no gold."""
    if gold is None or not str(gold).strip():
        return "missing"
    s = normalize_answer(str(gold))
    if re.search(r"\\begin\{[pbvB]?matrix\}", s):
        return "matrix"
    if gold_prose_words(s) or re.fullmatch(r"\\text\w*\{[^{}]*[A-Za-z][^{}]*\}", s.strip()):
        return "text"
    t = _UNIT_TAIL_RE.sub("", _KIND_DROP_RE.sub("", s)) or s
    t = re.sub(r"^[A-Za-z]\\in(?![A-Za-z])", "", t.replace("{,}", ""))  # x \in [-2,7]
    if re.fullmatch(r"-?\d+(?:,\d{3})*", t):
        return "integer"
    if re.fullmatch(r"-?\d*\.\d+", t):
        return "decimal"
    if re.fullmatch(_FRACTION_RE, t):
        return "fraction"
    if _top_level_commas(t) or (t.startswith("\\{") and t.endswith("\\}")):
        return "set"
    if (
        "\\infty" in t
        or "\\cup" in t
        or re.search(r"\\[lg]eq?|<|>|\\leq|\\geq", t)
        or re.fullmatch(r"[\[(].*,.*[\])]", t)
        and (t[0] == "[" or t[-1] == "]")
    ):
        return "interval"
    if re.fullmatch(r"\(.*,.*\)", t):
        return "tuple"
    if "=" in t:
        return "equation"
    return "expression"


# ----------------------------------------------------------------------------------------------
# Grading one (gold, answer) pair (worker process)
# ----------------------------------------------------------------------------------------------
class SoftTimeout(BaseException):
    """Raised by the in-worker alarm. A BaseException so that library code's
    ``except Exception`` does not swallow it."""


def _on_alarm(signum, frame):  # pragma: no cover - runs in the signal handler
    raise SoftTimeout()


def _as_latex_target(s: str) -> str:
    """Wrap a bare answer as ``$\\boxed{...}$`` so that math-verify's LaTeX extraction picks it up
    unambiguously (gold answers are bare strings such as ``\\frac{1}{2}`` or ``204``), after
    :func:`normalize_answer`."""
    s = normalize_answer(s)
    if "\\boxed" in s:
        return s
    return "$\\boxed{" + s + "}$"


def unwrap_upright(s: str) -> str:
    """``\\mathrm{e}`` -> ``e``, ``\\operatorname{sin}`` -> ``\\sin``, ``\\mathrm{\\pi}`` -> ``\\pi``: a
    font or operator-name group (``\\mathrm``, ``\\mathit``, ``\\mathbf``, ``\\textrm``, ...,
    ``\\operatorname``, ``{\\rm e}``) around ``e`` or ``i`` (:data:`UPRIGHT_CONSTANTS`), one command,
    or a function name latex2sympy knows (:data:`LATEX_FUNCTIONS`) is replaced by its body, so math-verify reads the constant or function
    it names. Other groups (units such as ``\\mathrm{cm}``, ``\\operatorname{lcm}``'s siblings that
    latex2sympy parses itself, such as ``\\operatorname{floor}``) stay."""

    def repl(m: re.Match) -> str:
        body = m.group("body")
        if body.startswith("\\"):
            return body + " "  # \mathrm{\pi} -> \pi (a space: the next letter is not part of it)
        if body in UPRIGHT_CONSTANTS:
            return body
        if body in LATEX_FUNCTIONS:
            return f"\\{body} "
        return m.group()  # a unit (\mathrm{cm}, \mathrm{m}) or a name latex2sympy parses itself

    return _UPRIGHT_RE.sub(repl, _RM_CONST_RE.sub(r"\g<c>", s))


def normalize_answer(s: str) -> str:
    """The answer-form decisions of the module docstring that math-verify does not make itself,
    applied alike to gold and answer: surrounding ``$`` and one trailing sentence period go,
    digit groups separated by a space or thin space (``1\\,000``, ``1 000``) are joined, a
    percent sign is dropped as a unit, and upright constants and operator names are unwrapped
    (:func:`unwrap_upright`). Linear time."""
    s = unwrap_upright((s or "").strip())
    if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s.strip("$").strip()
    if s.endswith(".") and not s.endswith("\\."):
        s = s[:-1].rstrip()
    s = _THOUSANDS_RE.sub(lambda m: _GROUP_SEP_RE.sub("", m.group()), s)
    return _PERCENT_RE.sub("", s).strip()


def gold_prose_words(gold: str) -> list[str]:
    """Words of a gold answer that is prose (``see the proof``; olympiadbench-1965's ``f(x)=a x+b,
    where b is an arbitrary integer, ...``): the words of three or more letters outside LaTeX
    commands and ``\\text{}``-like groups, when there are at least two of them; else ``[]``.
    math-verify parses such a gold letter by letter into a product of symbols
    (``E*E*E*f*h*o*o*p*r*s*t``), which no answer should be graded against."""
    s = _TEXT_GROUP_RE.sub(" ", gold or "")
    s = _LATEX_CMD_RE.sub(" ", s)
    words = _WORD_RE.findall(s)
    return words if len(words) >= 2 else []


# Parsed golds, per process (a worker grades the k samples of a prompt against one gold): parsing
# is most of the cost of an item (~1-20 ms each side), verify is cheap. Oldest entry evicted first.
_GOLD_CACHE: dict[str, list] = {}
_GOLD_CACHE_SIZE = 4096


def _has_expression(parsed: list) -> bool:
    """math-verify's ``parse`` returns the parsed expressions followed by the raw string as a
    fallback; only a non-string element means it turned the text into mathematics."""
    return any(not isinstance(p, str) for p in parsed)


def _mv_grade(gold: str, answer: str) -> dict[str, Any]:
    """math-verify with its own (signal-based) timeouts disabled; no limit here."""
    from math_verify import parse, verify

    words = gold_prose_words(gold)
    if words:
        return {
            "status": "gold_parse_error",
            "grade_error": f"gold is prose ({' '.join(words[:4])} ...), not an expression",
        }
    gold_target, pred_target = _as_latex_target(gold), _as_latex_target(answer)
    gold_parsed = _GOLD_CACHE.get(gold_target)
    if gold_parsed is None:
        gold_parsed = parse(gold_target, parsing_timeout=None, raise_on_error=True)
        if len(_GOLD_CACHE) >= _GOLD_CACHE_SIZE:
            _GOLD_CACHE.pop(next(iter(_GOLD_CACHE)))
        _GOLD_CACHE[gold_target] = gold_parsed
    if not _has_expression(gold_parsed):
        return {
            "status": "gold_parse_error",
            "grade_error": f"math-verify parsed no expression from the gold {gold[:80]!r}",
        }
    # parse is deterministic: an answer written exactly as the gold parses exactly as it does
    pred_parsed = (
        gold_parsed if pred_target == gold_target else parse(pred_target, parsing_timeout=None, raise_on_error=True)
    )
    if not _has_expression(pred_parsed):
        return {
            "status": "no_answer",
            "grade_error": f"math-verify parsed no expression from the answer {answer[:80]!r}"
            if answer.strip()
            else None,
        }
    try:
        ok = verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=True)
    except Exception as exc:  # one (gold, pred) candidate pair raised: record it, but let the
        # other candidate pairs still match, as math-verify's default (raise_on_error=False) does
        if verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=False):
            return {"status": "correct", "grade_error": None}
        return {"status": "error", "grade_error": f"verify: {type(exc).__name__}: {exc}"[:500]}
    return {"status": "correct" if ok else "incorrect", "grade_error": None}


def grade_answer(gold: str, answer: str | None, soft_timeout_s: float | None = None) -> dict:
    """Grade an extracted answer against the gold answer.

    Returns ``{"status": ..., "grade_error": str | None}``. ``soft_timeout_s``: an in-process
    ``setitimer`` alarm, only armed in a main thread (it cannot interrupt C code; the pool's
    hard kill covers that). None = no limit.
    """
    if answer is None:
        return {"status": "no_answer", "grade_error": None}
    armed = soft_timeout_s is not None and soft_timeout_s > 0 and threading.current_thread() is threading.main_thread()
    old_handler = None
    if armed:
        old_handler = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
    try:
        return _mv_grade(gold, answer)
    except SoftTimeout:
        return {"status": "timeout", "grade_error": f"soft timeout after {soft_timeout_s:g}s"}
    except RecursionError as exc:
        return {"status": "error", "grade_error": f"RecursionError: {exc}"[:500]}
    except Exception as exc:
        return {"status": "error", "grade_error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)


def grade_one(gold: str, completion: str, timeout_s: float) -> dict[str, Any]:
    """Extract and grade one completion; meant to run in a worker process's main thread.

    ``timeout_s`` is applied as the soft in-process alarm only; the hard limit is the pool's
    (``grade_rows``). Do not keep using a process in which this timed out (sympy state may be
    inconsistent) -- the pool retires such workers. Returns extract_answer's keys plus
    ``status``, ``correct``, ``grade_error``.
    """
    ext = extract_answer(completion)
    res = grade_answer(gold, ext["extracted_answer"], timeout_s)
    return {**ext, **res, "correct": res["status"] == "correct"}
