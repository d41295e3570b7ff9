"""The package's layers point one way: every module under src/ssd_math is parsed with ``ast`` (no
import runs) and its imports of other ssd_math modules form a graph that has no cycle, in which
every module is ranked by pipeline stage (:data:`LAYERS`: foundations, shared rules, config,
paths and models, the stage libraries, tables, the report) and imports only its own layer or a
lower one, and in which a module imports the project's modules at module level (a function-level
import of another ssd_math module hides a dependency from a reader and from this test)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "ssd_math"

#: Every module by pipeline stage, lowest first; a module may import its own or a lower layer only.
LAYERS = (
    # foundations: the schema (every default), files and provenance, the NVIDIA driver check
    ("schema", "io", "provenance", "gpu_driver"),
    # rules every stage shares: intervals and their wording, decoding settings, chat format,
    # tokenizer, one answer's grade (the box syntax data preparation reads too), a rule's log, the
    # SFT memory model (arithmetic the config check and the cost plan read)
    ("stats", "fmt", "sampler", "prompting", "tokenizer", "grading", "rulelog", "memory_model"),
    # the config: its derived settings, the checks the schema cannot express, loading and validation
    ("derive",),
    ("config_checks",),
    ("config",),
    # paths and job lists; model construction
    ("layout", "modeling"),
    # the stage libraries: data, training, sampling, eval, probe, plan
    (
        "synth",
        "problem_sources",
        "problem_sets",
        "decontam",
        "prepare_real_data",
        "hub",
        "noise",
        "train_data",
        "train_parallel",
        "train_model",
        "train_state",
        "train",
        "rehearsal",
        "launcher",
        "hf_sampler",
        "vllm_sampler",
        "generate_prep",
        "generate_vllm",
        "generate",
        "filtering",
        "grading_pool",
        "probe_positions",
        "probe_forward",
        "probe_stats",
        "probe_analysis",
        "planner",
        "cluster",
    ),
    # the tables: of the eval files; of the training runs, the sample-size plan and the cost
    ("tables", "run_tables"),
    # the report: findings (sentences, then the section), figures, the study table, the page's
    # parts, the renderer (Quarto or the offline engine) and what the page reads
    (
        "finding_sentences",
        "findings",
        "figures",
        "figures_training",
        "figures_probe",
        "study",
        "report_probe",
        "report_appendix",
        "report_parts",
        "qmd_parse",
        "qmd_render",
        "report",
        "report_inputs",
    ),
)

#: Imports against the layer order that stay, each with why.
UPWARD_ALLOWED = {}

#: Function-level ssd_math imports that stay, each with why. Torch, transformers and vLLM are
#: third-party and may be imported inside functions anywhere (they are slow or optional).
FUNCTION_LEVEL_ALLOWED = {}


def modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text("utf-8"), str(p)) for p in sorted(PKG.glob("*.py"))}


def project_targets(node: ast.AST, names: set[str]) -> set[str]:
    """The ssd_math modules an import statement names (``from . import x``, ``from .x import y``,
    ``from ssd_math.x import y``, ``from ssd_math import x``, ``import ssd_math.x``)."""
    out: set[str] = set()
    if isinstance(node, ast.ImportFrom):
        if node.level == 1 or (node.level == 0 and (node.module or "").split(".")[0] == "ssd_math"):
            mod = node.module or ""
            if node.level == 0:
                mod = mod.partition(".")[2]
            if mod:
                out.add(mod.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    elif isinstance(node, ast.Import):
        out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ssd_math."))
    return out & names


def import_graph(trees: dict[str, ast.Module]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({module: modules it imports at module level}, {module: modules it imports only inside a
    function or class}). Module level includes imports under a top-level ``if`` / ``try``."""
    names = set(trees)
    top: dict[str, set[str]] = {m: set() for m in trees}
    inner: dict[str, set[str]] = {m: set() for m in trees}

    def walk(node: ast.AST, nested: bool, mod: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (inner if nested else top)[mod] |= project_targets(child, names)
            walk(
                child,
                nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)),
                mod,
            )

    for mod, tree in trees.items():
        walk(tree, False, mod)
        inner[mod] -= top[mod]
        top[mod].discard(mod)
    return top, inner


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (depth-first search, sorted order)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (c := visit(n)):
                return c
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def layer_violations(top: dict[str, set[str]], inner: dict[str, set[str]], allowed: dict | None = None) -> list[str]:
    """A module importing a module of a higher layer (outside ``allowed``), or an unranked one."""
    allowed = UPWARD_ALLOWED if allowed is None else allowed
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    out = []
    for mod in sorted(set(top) | set(inner)):
        for dep in sorted(top.get(mod, set()) | inner.get(mod, set())):
            if mod not in rank or dep not in rank:
                out.append(f"{mod} imports {dep}: rank both in LAYERS")
            elif rank[dep] > rank[mod] and (mod, dep) not in allowed:
                out.append(f"{mod} (layer {rank[mod]}) imports {dep} (layer {rank[dep]})")
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph(modules())


def test_the_parser_sees_every_form_of_project_import():
    src = (
        "from . import config as cfg\nfrom .io import read_jsonl\nfrom ssd_math.stats import matrix\n"
        "from ssd_math import layout\nimport ssd_math.tables\nimport numpy\nfrom .. import x\n"
        "try:\n    from .probe import views\nexcept ImportError:\n    pass\n"
        "def f():\n    from .planner import plan\n    import torch\n"
        "class C:\n    def g(self):\n        from .generate import run\n"
    )
    names = {"config", "io", "stats", "layout", "tables", "probe", "planner", "generate", "m"}
    top, inner = import_graph({"m": ast.parse(src), **{n: ast.parse("") for n in names - {"m"}}})
    assert top["m"] == {"config", "io", "stats", "layout", "tables", "probe"}
    assert inner["m"] == {"planner", "generate"}


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle(graph):
    top, _ = graph
    cycle = find_cycle(top)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_every_module_is_ranked():
    ranked = [m for layer in LAYERS for m in layer]
    assert len(ranked) == len(set(ranked)), "a module ranked twice"
    have = set(modules()) - {"__init__"}
    assert not have - set(ranked), f"rank these modules in LAYERS: {sorted(have - set(ranked))}"
    assert not set(ranked) - have, f"LAYERS names modules that no longer exist: {sorted(set(ranked) - have)}"
    stale = sorted(k for k in UPWARD_ALLOWED if k[1] not in import_graph(modules())[0].get(k[0], set()))
    assert not stale, f"UPWARD_ALLOWED imports that no longer exist (drop them): {stale}"


def test_layers_import_downwards(graph):
    problems = layer_violations(*graph)
    assert not problems, "every module imports its own layer or a lower one (LAYERS):\n" + "\n".join(problems)


def test_an_upward_import_is_found():
    top = {"io": {"tables"}, "tables": set()}
    tables = next(i for i, layer in enumerate(LAYERS) if "tables" in layer)
    assert layer_violations(top, {}) == [f"io (layer 0) imports tables (layer {tables})"]


def test_project_modules_are_imported_at_module_level(graph):
    _, inner = graph
    hidden = sorted(f"{m} -> {d}" for m, deps in inner.items() for d in deps if (m, d) not in FUNCTION_LEVEL_ALLOWED)
    assert not hidden, (
        "function-level imports of ssd_math modules (import them at module level, "
        "or move the shared fact lower):\n" + "\n".join(hidden)
    )
    stale = sorted(f"{m} -> {d}" for m, d in FUNCTION_LEVEL_ALLOWED if d not in inner.get(m, ()))
    assert not stale, "allowed function-level imports that no longer exist (drop them):\n" + "\n".join(stale)
