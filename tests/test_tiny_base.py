"""The shipped tiny base (models/tiny-base): rule ship_base's folder and provenance, fetch_base's
check of its weights, and (slow) the documented rebuild command on a shortened pretraining."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssd_math import derive, hub
from ssd_math.config import ConfigError, validate

from conftest import ROOT, tiny_random_model

BASE_DIR = ROOT / "models" / "tiny-base"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def default_cfg():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["model"].update(yaml.safe_load((ROOT / "config" / "tiny-base.yaml").read_text())["model"])
    return validate(cfg)


def test_the_shipped_base_is_what_its_provenance_says():
    """The repository's base: a complete model folder (config, tokenizer, chat template, fp32
    weights) whose weights hash to the sha256 its provenance records, a few MB in size."""
    prov = json.loads((BASE_DIR / derive.BASE_PROVENANCE).read_text())
    assert hub.check_model_dir(BASE_DIR, "tiny-base") == []
    assert prov["weights_sha256"] == {"model.safetensors": sha256(BASE_DIR / "model.safetensors")}
    assert prov["dtype"] == "float32" and prov["git"]["commit"] and prov["machine"]["cpu_model"]
    assert prov["machine"]["torch"]["intra_op_threads"] >= 1  # the pretraining job's machine, not the copy's
    assert (
        prov["config_recipe"]["pretrain"]["lr"]
        == yaml.safe_load((ROOT / "config" / "tiny-base.yaml").read_text())["model"]["pretrain"]["lr"]
    )
    assert sum(p.stat().st_size for p in BASE_DIR.iterdir()) < 16e6
    from safetensors import safe_open

    with safe_open(str(BASE_DIR / "model.safetensors"), "pt") as fh:
        assert {str(fh.get_tensor(k).dtype) for k in fh.keys()} == {"torch.float32"}


def test_ship_base_and_fetch_base_check_the_weights(tmp_path, default_cfg):
    mdir, _, _ = tiny_random_model(tmp_path)
    prov = hub.ship_base(mdir, tmp_path / "shipped", cfg=default_cfg, workdir=ROOT)
    files = {p.name for p in (tmp_path / "shipped").iterdir()}
    assert "meta.json" not in files and derive.BASE_PROVENANCE in files
    assert prov["weights_sha256"] == {"model.safetensors": sha256(mdir / "model.safetensors")}
    assert prov["data_recipe_hash"] == derive.data_recipe_hash(default_cfg)
    assert prov["rebuild"] == derive.REBUILD_BASE
    info = hub.fetch_base(
        {"id": "ssd-math/tiny-base", "revision": "local", "local_dir": str(tmp_path / "shipped")}, tmp_path / "base"
    )
    assert info["base_provenance"]["weights_sha256"] == prov["weights_sha256"]
    # a changed weights file is refused, naming both hashes
    w = tmp_path / "shipped" / "model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 1
    w.write_bytes(bytes(raw))
    with pytest.raises(hub.FetchError, match=r"the weights' sha256 .* differ from those its provenance.json records"):
        hub.fetch_base({"id": "t", "revision": "local", "local_dir": str(tmp_path / "shipped")}, tmp_path / "b2")
    assert not (tmp_path / "b2").exists()


@pytest.mark.slow
def test_the_rebuild_command_pretrains_and_ships_a_base(tmp_path):
    """README's one command (snakemake ship_base with config/tiny-base.yaml over config.yaml),
    pretraining shortened to 3 steps on a smaller synthetic task, in a scratch folder: a base
    folder with provenance, which a default-like config then accepts (and refuses with other data)."""
    short = tmp_path / "short.yaml"
    short.write_text(
        yaml.safe_dump(
            {"data": {"synthetic": {"n_pretrain": 300, "n_eval_main": 40}}, "model": {"pretrain": {"max_steps": 3}}}
        )
    )
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(exe),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--cores",
        "2",
        "ship_base",
        "--configfile",
        str(ROOT / "config.yaml"),
        str(ROOT / "config" / "tiny-base.yaml"),
        str(short),
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = tmp_path / "models" / "tiny-base"
    prov = json.loads((out / derive.BASE_PROVENANCE).read_text())
    assert prov["pretrain_last_step"]["step"] == 3
    assert prov["weights_sha256"] == {"model.safetensors": sha256(out / "model.safetensors")}
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["data"]["synthetic"].update(n_pretrain=300, n_eval_main=40)
    cfg["model"]["hub"]["local_dir"] = str(out)
    validate(copy.deepcopy(cfg))  # the data it was pretrained on: accepted
    cfg["data"]["synthetic"]["n_eval_main"] = 41
    with pytest.raises(ConfigError, match=prov["data_recipe_hash"]):
        validate(cfg)
