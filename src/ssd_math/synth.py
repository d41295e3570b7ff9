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
  right:"; with ``PAIR_FORK`` also "Pair to ten:", and which complement pair comes first). Each is chosen at random in
  the pretraining solutions, so a trained model spreads probability over them.
* **Locks** (one right token): every ``a+b=c`` / ``a*b=c`` step, where the operands are copies of
  the running value / next term and ``c`` is the (mod 10) result.
* **Self-corrections**: after a chain, with probability ``p_recheck`` the solution says
  ``Wait, let me check again.`` and redoes the chain with a fresh method (it can repeat, so the
  number of rechecks is geometric). At high temperature the model can keep rechecking until it
  hits the length cap: that is how the length-stop filter gets work, as with real models.
* **Levels** 1..8: a level-L problem has ``L + 1`` terms (L steps); errors compound per step,
  so accuracy falls with level. ``eval_hard`` (the "300" role) is the subset of ``eval_main``
  at the top levels (``hard_levels``, default the two highest).

Answers are one digit, gradable by math-verify (``\\boxed{7}``). All randomness flows from an
explicit ``random.Random(seed)``; the same config gives the same splits, byte for byte.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

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


def _chain(subject: str, acc: int | None, terms: Sequence[int]) -> tuple[list[str], int | None]:
    sym = OPS[subject][0]
    steps = []
    for t in terms:
        if acc is None:
            acc = t % 10
            continue
        new = _apply(subject, acc, t)
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


def _solve_once(subject: str, terms: Sequence[int], rng: random.Random) -> tuple[str, int]:
    methods = ["left", "right"]
    if PAIR_FORK and subject == SUM and _complement_pairs(terms, random.Random(0))[0]:
        methods.append("pair")
    method = rng.choice(methods)
    if method == "left":
        steps, acc = _chain(subject, None, terms)
        return "From the left: " + ", ".join(steps) + ".", acc
    if method == "right":
        steps, acc = _chain(subject, None, list(reversed(terms)))
        return "From the right: " + ", ".join(steps) + ".", acc
    pairs, rest = _complement_pairs(terms, rng)
    line = "Pair to ten: " + ", ".join(f"{a}+{b}=0" for a, b in pairs) + "."
    if rest:
        steps, acc = _chain(subject, 0, rest)
        line += "\nRest: " + ", ".join(steps) + "."
    else:
        acc = 0
    return line, acc


def worked_solution(problem_row: dict, rng: random.Random, *, p_recheck: float = 0.12,
                    max_rechecks: int = 6) -> str:
    """The completion text for one problem: ``<think>\\n…\\n</think>\\n\\n…\\boxed{ANSWER}``."""
    subject = problem_row.get("subject") or (PRODUCT if "\\times" in problem_row["problem"] else SUM)
    terms = _terms_of(problem_row)
    lines = []
    line, acc = _solve_once(subject, terms, rng)
    lines.append(line)
    k = 0
    while k < max_rechecks and rng.random() < p_recheck:
        line, acc2 = _solve_once(subject, terms, rng)
        assert acc2 == acc
        lines += [RECHECK, line]
        k += 1
    assert str(acc) == str(problem_row["answer"]), (problem_row, acc)
    lines.append(f"So the units digit is {acc}.")
    return (f"{THINK_OPEN}\n" + "\n".join(lines) + f"\n{THINK_CLOSE}\n\n"
            f"The units digit is $\\boxed{{{acc}}}$.")


DEFAULT_SPLITS = {  # the embedded default (config.yaml data.synthetic)
    "levels": [1, 2, 3, 4],
    "hard_levels": [3, 4],
    "subjects": [SUM, PRODUCT],
    "n_pretrain": 8000,
    "n_train_prompts": 600,
    "n_eval_main": 300,
    "p_recheck": 0.15,
    "seed": 0,
}


def build_splits(cfg: dict[str, Any] | None = None) -> dict[str, list[dict]]:
    """Splits disjoint by problem text, drawn in a fixed order (eval, train prompts, pretrain):

    * ``eval_main``   (the "1k" role): ``n_eval_main`` problems, levels uniform over ``levels``;
    * ``eval_hard``   (the "300" role): the rows of ``eval_main`` whose level is in
      ``hard_levels`` (a subset chosen by level, same ids);
    * ``train_prompts``: the SSD training-prompt pool, ``n_train_prompts`` problems;
    * ``pretrain``: ``n_pretrain`` problems, each with a ``solution`` (its worked solution, the
      prompt-free completion text), for pretraining the tiny base model.

    cfg keys (defaults in :data:`DEFAULT_SPLITS`): levels, hard_levels, subjects, n_pretrain,
    n_train_prompts, n_eval_main, p_recheck, seed, and optional pretrain_levels.
    """
    c = {**DEFAULT_SPLITS, **(cfg or {})}
    seed = int(c["seed"])
    levels = [int(x) for x in c["levels"]]
    hard = {int(x) for x in c["hard_levels"]}
    if not hard <= set(levels):
        raise ValueError(f"hard_levels {sorted(hard)} must be a subset of levels {levels}")
    subjects = list(c["subjects"])
    eval_main = make_problems(int(c["n_eval_main"]), seed=seed * 1000 + 1, levels=levels,
                              id_prefix="synth-eval", subjects=subjects)
    seen = {r["problem"] for r in eval_main}
    train_prompts = make_problems(int(c["n_train_prompts"]), seed=seed * 1000 + 2, levels=levels,
                                  id_prefix="synth-train", exclude=seen, subjects=subjects)
    seen |= {r["problem"] for r in train_prompts}
    pre_levels = [int(x) for x in c.get("pretrain_levels") or levels]
    pretrain = make_problems(int(c["n_pretrain"]), seed=seed * 1000 + 3, levels=pre_levels,
                             id_prefix="synth-pre", exclude=seen, subjects=subjects)
    rng = random.Random(seed * 1000 + 4)
    for r in pretrain:
        r["solution"] = worked_solution(r, rng, p_recheck=float(c["p_recheck"]))
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
        return solution[len(prefix):]
    return solution


def pretrain_records(rows: Iterable[dict], tokenizer, *, instruction: str) -> list[dict]:
    """Training rows ``{prompt, completion, id}`` for :func:`ssd_math.train.train` from
    ``pretrain`` rows (each with a ``solution``)."""
    from .prompting import render_prompt

    out = []
    for r in rows:
        prompt = render_prompt(tokenizer, r["problem"], instruction=instruction)
        out.append({"id": r["id"], "prompt": prompt,
                    "completion": completion_after_prompt(prompt, r["solution"])})
    return out


def tokenizer_corpus(rows: Iterable[dict], *, instruction: str) -> list[str]:
    """Texts to train the tiny tokenizer on: each pretraining row's user message and worked
    solution (the chat-format special tokens are added tokens, not learned merges)."""
    from .prompting import user_message

    return [user_message(r["problem"], instruction=instruction) + "\n" + r["solution"]
            for r in rows]


# --- h_probe: a stand-in label_spans (the integrator keeps a_recipe's; same interface) ---------
# BEGIN h_probe label_spans
def label_spans(text: str) -> list[dict]:
    """Character spans of a completion's known forks, locks and rechecks, by parsing its text:
    ``[{start, end, kind, correct}]`` sorted by start. fork: each method phrase ("From the left:"
    / "From the right:"); lock: the result digit of each ``a+b=c`` / ``a*b=c`` step (``correct``:
    c is the forced digit); recheck: each "Wait, let me check again."."""
    import re

    out = []
    for m in re.finditer(r"From the (left|right):", text):
        out.append({"start": m.start(), "end": m.end(), "kind": "fork", "correct": True})
    for m in re.finditer(r"(\d)([+*])(\d)=(\d)", text):
        a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        want = _apply(SUM if op == "+" else PRODUCT, a, b)
        out.append({"start": m.start(4), "end": m.end(4), "kind": "lock", "correct": c == want})
    for m in re.finditer(re.escape(RECHECK), text):
        out.append({"start": m.start(), "end": m.end(), "kind": "recheck", "correct": True})
    return sorted(out, key=lambda s: s["start"])
# END h_probe label_spans
