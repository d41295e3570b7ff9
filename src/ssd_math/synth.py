"""A synthetic competition-math task with real forks and locks, for the embedded tiny base model.

Problems ask for the units digit of a sum or a product of single-digit terms::

    Find the units digit of $3 + 7 + 5 + 8$.
    Find the units digit of $3 \\times 7 \\times 9$.

The worked solution (the completion the tiny base model is pretrained on) thinks in the real chat
format, ``<think>\\n ... \\n</think>\\n\\n ... \\boxed{ANSWER}``::

    <think>
    Pair to ten: 3+7=0.           <- fork: which method (left / right / pair); sums only
    Rest: 0+5=5, 5+8=3.           <- locks: each result digit is forced
    So the units digit is 3.
    </think>

    The units digit is $\\boxed{3}$.

* **Forks** (several valid continuations): the method line ("From the left:", "From the
  right:"; with ``PAIR_FORK`` also "Pair to ten:", and which complement pair comes first),
  drawn at the shares ``fork_shares`` (default left 0.5 / right 0.5), so a converged base
  reproduces a known split.
* **Locks** (one right token): every ``a+b=c`` / ``a*b=c`` step, where the operands are copies of
  the running value / next term and ``c`` is the (mod 10) result.
* **Noisy locks** (``lock_noise`` = ε): each lock digit of a worked solution is wrong with
  probability ε, uniform over the other nine digits, and the chain continues from the digit
  written (so the boxed answer is what the chain reached; the problem's gold answer stays
  right). The difficulty is then a property of the TASK: a base trained to convergence puts
  ~1-ε on the right digit at T=1, and sampling at T<1 with top-k/top-p sharpens locks (the
  SSD mechanism), so accuracy at a temperature is set by ε and the number of steps, not by
  where pretraining stopped (a base left on the learning cliff -- a clean corpus, a short
  pretraining -- would make accuracy depend on the CPU's kernels and thread count;
  bench/bench_seed_matrix.py measures the spread over seeds x threads).
* **Self-corrections**: after a chain, with probability ``p_recheck`` the solution says
  ``Wait, let me check again.`` and redoes the chain with a fresh method (it can repeat, so the
  number of rechecks is geometric). At high temperature the model can keep rechecking until it
  hits the length cap: that is how the length-stop filter gets work, as with real models.
* **Levels** 1..8: a level-L problem has ``L + 1`` terms (L steps); errors compound per step,
  so accuracy falls with level. ``eval_hard`` (the "300" role) is the subset of ``eval_main``
  at the top levels (``hard_levels``, default the two highest).
* :func:`label_spans` gives the character spans of the forks, locks and rechecks of any
  completion text (for probes of per-position entropy).

Answers are one digit, gradable by math-verify (``\\boxed{7}``). All randomness flows from an
explicit ``random.Random(seed)``; the same config gives the same splits, byte for byte.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .prompting import render_prompt, user_message
from .schema import default as schema_default
from .schema import errors as schema_errors
from .schema import with_defaults

#: the config section this task's recipe is (its defaults and limits: the schema's)
SECTION = "properties/data/properties/synthetic"


def _default(key: str) -> Any:
    return schema_default(f"{SECTION}/properties/{key}")


SUM = "sum"
PRODUCT = "product"
SUBJECTS = (SUM, PRODUCT)

#: Terms of each subject. Products avoid 0 and 5 so they do not collapse to 0.
TERMS = {SUM: tuple(range(1, 10)), PRODUCT: (1, 2, 3, 4, 6, 7, 8, 9)}
OPS = {SUM: ("+", " + "), PRODUCT: ("*", " \\times ")}  # (worked-step symbol, problem LaTeX)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
RECHECK = "Wait, let me check again."
PAIR_FORK = False  # "Pair to ten:" as a third method: a harder search the tiny model learns slowly


def n_terms(level: int) -> int:
    return int(level) + 1


def _apply(subject: str, a: int, b: int) -> int:
    return (a + b) % 10 if subject == SUM else (a * b) % 10


def answer_of(subject: str, terms: Sequence[int]) -> int:
    acc = terms[0] % 10
    for t in terms[1:]:
        acc = _apply(subject, acc, t)
    return acc


def problem_text(subject: str, terms: Sequence[int]) -> str:
    return "Find the units digit of $" + OPS[subject][1].join(str(t) for t in terms) + "$."


def make_problem(rng: random.Random, level: int, subject: str | None = None) -> dict:
    subject = subject or rng.choice(SUBJECTS)
    terms = [rng.choice(TERMS[subject]) for _ in range(n_terms(level))]
    return {
        "problem": problem_text(subject, terms),
        "answer": str(answer_of(subject, terms)),
        "source": "synthetic",
        "level": int(level),
        "subject": subject,
        "terms": terms,
    }


def make_problems(
    n: int,
    *,
    seed: int,
    levels: Sequence[int] = (1, 2, 3, 4, 5),
    id_prefix: str = "synth",
    level_weights: Sequence[float] | None = None,
    subjects: Sequence[str] = SUBJECTS,
    exclude: Iterable[str] = (),
    max_misses: int = 20000,
) -> list[dict]:
    """``n`` distinct problems (by text, and not in ``exclude``), levels drawn by ``level_weights``
    (uniform by default). Rows: ``{id, problem, answer, source, level, subject, terms}``; ``terms``
    is an extra field (the schema passes extras through) used by :func:`worked_solution`."""
    rng = random.Random(seed)
    seen = set(exclude)
    rows: list[dict] = []
    misses = 0
    while len(rows) < n:
        if misses > max_misses:
            raise ValueError(
                f"could not draw {n} distinct problems at levels {list(levels)} "
                f"(got {len(rows)}; {max_misses} draws in a row were duplicates); lower n or add "
                f"higher levels"
            )
        level = rng.choices(list(levels), weights=level_weights)[0]
        row = make_problem(rng, level, rng.choice(list(subjects)))
        if row["problem"] in seen:
            misses += 1
            continue
        misses = 0
        seen.add(row["problem"])
        row = {"id": f"{id_prefix}-{len(rows):06d}", **row}
        rows.append(row)
    return rows


def _terms_of(row: dict) -> list[int]:
    if "terms" in row:
        return [int(t) for t in row["terms"]]
    body = row["problem"].split("$")[1]
    sep = "\\times" if "\\times" in body else "+"
    return [int(t) for t in body.split(sep)]


SLIPS = ("uniform", "adjacent")  # where a slip's wrong digit goes (see _lock)


def _lock(subject: str, a: int, b: int, rng: random.Random | None, lock_noise: float, slip: str = "uniform") -> int:
    """The digit written at a lock ``a op b = ?``: the right one ``c``, or with probability
    ``lock_noise`` a wrong one: one of the other nine digits uniformly (``slip="uniform"``), or
    ``c - 1`` / ``c + 1`` (mod 10), each half the time (``slip="adjacent"``: an off-by-one slip,
    one plausible wrong continuation on each side, as a real model's lock tail is concentrated)."""
    right = _apply(subject, a, b)
    if lock_noise > 0 and rng is not None and rng.random() < lock_noise:
        if slip == "adjacent":
            return (right + rng.choice((-1, 1))) % 10
        wrong = rng.randrange(9)
        return wrong + (wrong >= right)
    return right


def _chain(
    subject: str, acc: int | None, terms: Sequence[int], rng: random.Random | None, lock_noise: float, slip: str
) -> tuple[list[str], int | None]:
    """Steps ``acc op t = c`` over ``terms``; each ``c`` is a lock (see :func:`_lock`) and the
    chain continues from the digit written, so a slip propagates to the final answer."""
    sym = OPS[subject][0]
    steps = []
    for t in terms:
        if acc is None:
            acc = t % 10
            continue
        new = _lock(subject, acc, t, rng, lock_noise, slip)
        steps.append(f"{acc}{sym}{t}={new}")
        acc = new
    return steps, acc


def _complement_pairs(terms: Sequence[int], rng: random.Random) -> tuple[list[tuple[int, int]], list[int]]:
    """Greedy random pairing of terms that sum to 10; returns (pairs, the rest in order)."""
    idx = list(range(len(terms)))
    rng.shuffle(idx)
    used: set[int] = set()
    pairs = []
    for i in idx:
        if i in used:
            continue
        for j in idx:
            if j != i and j not in used and terms[i] + terms[j] == 10:
                used |= {i, j}
                pairs.append((terms[i], terms[j]))
                break
    rest = [t for k, t in enumerate(terms) if k not in used]
    return pairs, rest


METHODS = ("left", "right")  # the fork after "From the ": the order the chain is worked in


def _fork_weights(fork_shares: dict[str, float] | None) -> list[float]:
    shares = _default("fork_shares") if fork_shares is None else dict(fork_shares)
    unknown = set(shares) - set(METHODS)
    if unknown:
        raise ValueError(f"fork_shares: unknown method(s) {sorted(unknown)}; known: {list(METHODS)}")
    w = [float(shares.get(m, 0.0)) for m in METHODS]
    if any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"fork_shares must be >= 0 with a positive sum, got {shares}")
    return w


def _solve_once(
    subject: str,
    terms: Sequence[int],
    rng: random.Random,
    *,
    lock_noise: float,
    fork_weights: Sequence[float],
    slip: str,
) -> tuple[str, int]:
    methods = list(METHODS)
    weights = list(fork_weights)
    if PAIR_FORK and subject == SUM and _complement_pairs(terms, random.Random(0))[0]:
        methods.append("pair")
        weights.append(sum(weights) / len(weights))
    # equal shares draw with rng.choice (rng.choices consumes the stream differently), so the
    # default corpus stays byte-identical to the one the shipped base (models/tiny-base) was pretrained on
    method = rng.choice(methods) if len(set(weights)) == 1 else rng.choices(methods, weights=weights)[0]
    if method == "left":
        steps, acc = _chain(subject, None, terms, rng, lock_noise, slip)
        return "From the left: " + ", ".join(steps) + ".", acc
    if method == "right":
        steps, acc = _chain(subject, None, list(reversed(terms)), rng, lock_noise, slip)
        return "From the right: " + ", ".join(steps) + ".", acc
    pairs, rest = _complement_pairs(terms, rng)
    line = "Pair to ten: " + ", ".join(f"{a}+{b}=0" for a, b in pairs) + "."
    if rest:
        steps, acc = _chain(subject, 0, rest, rng, lock_noise, slip)
        line += "\nRest: " + ", ".join(steps) + "."
    else:
        acc = 0
    return line, acc


def worked_solution(
    problem_row: dict,
    rng: random.Random,
    *,
    p_recheck: float | None = None,
    max_rechecks: int = 6,
    lock_noise: float | None = None,
    fork_shares: dict[str, float] | None = None,
    slip: str | None = None,
) -> str:
    """The completion text for one problem: ``<think>\\n…\\n</think>\\n\\n…\\boxed{X}``.

    With ``lock_noise`` = 0 every step is right and ``X`` is the gold answer. With ``lock_noise``
    = ε each lock digit is wrong with probability ε (uniform over the other nine digits), the
    chain continues from the digit written, and ``X`` is what the *last* chain reached (a
    recheck redoes the whole chain, with fresh slips): the solution is a noisy demonstration, the
    problem's gold answer is unchanged. The method of each chain is drawn by ``fork_shares``.
    A knob left None takes its ``data.synthetic`` default from the schema (``slip``: lock_slip)."""
    p_recheck = _default("p_recheck") if p_recheck is None else p_recheck
    lock_noise = _default("lock_noise") if lock_noise is None else lock_noise
    slip = _default("lock_slip") if slip is None else slip
    subject = problem_row.get("subject") or (PRODUCT if "\\times" in problem_row["problem"] else SUM)
    terms = _terms_of(problem_row)
    w = _fork_weights(fork_shares)
    lines = []
    line, acc = _solve_once(subject, terms, rng, lock_noise=lock_noise, fork_weights=w, slip=slip)
    lines.append(line)
    k = 0
    while k < max_rechecks and rng.random() < p_recheck:
        line, acc2 = _solve_once(subject, terms, rng, lock_noise=lock_noise, fork_weights=w, slip=slip)
        assert lock_noise > 0 or acc2 == acc
        acc = acc2
        lines += [RECHECK, line]
        k += 1
    assert lock_noise > 0 or str(acc) == str(problem_row["answer"]), (problem_row, acc)
    lines.append(f"So the units digit is {acc}.")
    return f"{THINK_OPEN}\n" + "\n".join(lines) + f"\n{THINK_CLOSE}\n\nThe units digit is $\\boxed{{{acc}}}$."


def build_splits(cfg: dict[str, Any]) -> dict[str, list[dict]]:
    """Splits disjoint by problem text, drawn in a fixed order (eval, train prompts, pretrain):

    * ``eval_main``   (the "1k" role): ``n_eval_main`` problems, levels uniform over ``levels``;
    * ``eval_hard``   (the "300" role): the rows of ``eval_main`` whose level is in
      ``hard_levels`` (a subset chosen by level, same ids);
    * ``train_prompts``: the SSD training-prompt pool, ``n_train_prompts`` problems;
    * ``pretrain``: ``n_pretrain`` problems, each with a ``solution`` (its worked solution, the
      prompt-free completion text), for pretraining the tiny base model.

    cfg: the config's ``data.synthetic`` section plus ``seed``; its keys are checked against the
    schema (which names the required ones and their limits) and the optional ones take the
    schema's defaults (subjects, p_recheck, lock_noise, lock_slip, fork_shares; pretrain_levels:
    the levels). ``lock_noise`` and ``fork_shares`` shape only the pretraining solutions
    (:func:`worked_solution`); the prompts and gold answers of every split do not depend on them.
    """
    if "seed" not in cfg:
        raise ValueError("build_splits: cfg needs 'seed' (the config's top-level seed)")
    c = with_defaults({k: v for k, v in cfg.items() if k != "seed"}, SECTION)
    problems = schema_errors(c, SECTION, "data.synthetic")
    if problems:
        raise ValueError("invalid synthetic data recipe:\n  - " + "\n  - ".join(problems))
    seed = int(cfg["seed"])
    levels = [int(x) for x in c["levels"]]
    hard = {int(x) for x in c["hard_levels"]}
    if not hard <= set(levels):
        raise ValueError(f"hard_levels {sorted(hard)} must be a subset of levels {levels}")
    subjects = list(c["subjects"])
    eps = float(c["lock_noise"])
    slip = str(c["lock_slip"])
    fork_shares = dict(c["fork_shares"])
    _fork_weights(fork_shares)  # a bad key or weight fails here, before any work
    eval_main = make_problems(
        int(c["n_eval_main"]), seed=seed * 1000 + 1, levels=levels, id_prefix="synth-eval", subjects=subjects
    )
    seen = {r["problem"] for r in eval_main}
    train_prompts = make_problems(
        int(c["n_train_prompts"]),
        seed=seed * 1000 + 2,
        levels=levels,
        id_prefix="synth-train",
        exclude=seen,
        subjects=subjects,
    )
    seen |= {r["problem"] for r in train_prompts}
    pre_levels = [int(x) for x in c.get("pretrain_levels") or levels]
    pretrain = make_problems(
        int(c["n_pretrain"]),
        seed=seed * 1000 + 3,
        levels=pre_levels,
        id_prefix="synth-pre",
        exclude=seen,
        subjects=subjects,
    )
    rng = random.Random(seed * 1000 + 4)
    for r in pretrain:
        r["solution"] = worked_solution(
            r, rng, p_recheck=float(c["p_recheck"]), lock_noise=eps, fork_shares=fork_shares, slip=slip
        )
    return {
        "pretrain": pretrain,
        "train_prompts": train_prompts,
        "eval_main": eval_main,
        "eval_hard": [r for r in eval_main if r["level"] in hard],
    }


def completion_after_prompt(prompt: str, solution: str) -> str:
    """The part of a worked solution the model generates after ``prompt``: a thinking-mode
    generation prompt already ends with ``<think>\\n``, so that prefix is not part of the
    completion."""
    prefix = f"{THINK_OPEN}\n"
    if prompt.endswith(prefix) and solution.startswith(prefix):
        return solution[len(prefix) :]
    return solution


def pretrain_records(rows: Iterable[dict], tokenizer, *, instruction: str) -> list[dict]:
    """Training rows ``{prompt, completion, id}`` for :func:`ssd_math.train.train` from
    ``pretrain`` rows (each with a ``solution``)."""
    out = []
    for r in rows:
        prompt = render_prompt(tokenizer, r["problem"], instruction=instruction)
        out.append({"id": r["id"], "prompt": prompt, "completion": completion_after_prompt(prompt, r["solution"])})
    return out


def tokenizer_corpus(rows: Iterable[dict], *, instruction: str) -> list[str]:
    """Texts to train the tiny tokenizer on: each pretraining row's user message and worked
    solution (the chat-format special tokens are added tokens, not learned merges)."""
    return [user_message(r["problem"], instruction=instruction) + "\n" + r["solution"] for r in rows]


# ------------------------------------------------------------------------------------------
# token-position labels for probes: where the forks, locks and rechecks are in a completion
# ------------------------------------------------------------------------------------------

_METHOD_RE = re.compile(r"From the (left|right)\b|Pair to (ten)\b")
_STEP_RE = re.compile(r"(?<!\d)(\d)([+*])(\d)=(\d)")


def label_spans(text: str) -> list[dict]:
    """Character spans of the forks, locks and rechecks in a worked-solution (or sampled) text,
    in order of ``start``. Each span is ``{start, end, kind, correct}`` with ``text[start:end]``:

    * ``kind="fork"``: the method word after ``"From the "`` (``left`` / ``right``; with
      :data:`PAIR_FORK` also ``ten`` of ``"Pair to ten"``, reported as ``pair``); ``correct`` is
      the method chosen (every method is a valid continuation: a fork has no wrong branch);
    * ``kind="lock"``: the result digit ``c`` of each ``a+b=c`` / ``a*b=c`` step; ``correct`` is
      the right digit given the two operands *as written* (``(a+b) % 10`` or ``(a*b) % 10``),
      so a slip is ``text[start:end] != correct`` while the chain's later steps are judged from
      the digit that was written;
    * ``kind="recheck"``: the whole ``"Wait, let me check again."`` sentence; ``correct`` None.

    It parses text only (no tokenizer): map spans to tokens with the tokenizer's offsets
    (``return_offsets_mapping=True``). Steps are one-digit ``a op b = c`` with no spaces, as
    :func:`worked_solution` writes them; anything else (e.g. the problem's ``3 + 7``) is not a
    step."""
    spans: list[dict] = []
    for m in _METHOD_RE.finditer(text):
        g = 1 if m.group(1) else 2
        spans.append({"start": m.start(g), "end": m.end(g), "kind": "fork", "correct": m.group(1) or "pair"})
    for m in _STEP_RE.finditer(text):
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        right = _apply(SUM if op == "+" else PRODUCT, a, b)
        spans.append({"start": m.start(4), "end": m.end(4), "kind": "lock", "correct": str(right)})
    i = text.find(RECHECK)
    while i >= 0:
        spans.append({"start": i, "end": i + len(RECHECK), "kind": "recheck", "correct": None})
        i = text.find(RECHECK, i + len(RECHECK))
    spans.sort(key=lambda s: s["start"])
    return spans
