"""Check a SLURM run before submitting it (the profiles/slurm README names this step).

    python -m ssd_math.cluster --profile ~/ssd-site.yaml --workflow-profile profiles/slurm \\
        --configfile config/real.yaml

takes the arguments of the `snakemake` command it guards, dry-runs that command to get every
job's rule, threads and resources as Snakemake would submit them, asks `sinfo` what each
partition's nodes offer, and exits 1 with one line per problem, each naming the rule and the
profile key to change:

* a `set-resources`/`set-threads` key of a profile that names no rule of the workflow (Snakemake
  ignores it without a word, so the rule silently gets the defaults);
* a resource value still a `SITE...` placeholder of profiles/slurm/site.example.yaml;
* a partition the cluster does not have;
* more threads (sbatch --cpus-per-task), memory (--mem) or time (-t) than any node of the job's
  partition offers: SLURM leaves such a job PENDING (Reason=PartitionConfig) forever and the
  plugin keeps polling; or GPUs in a partition without a `gpu` gres: sbatch refuses it ("Invalid
  generic resource").

Without `sinfo` on PATH only the first two are checked (and it says so).

First of all, where `nvidia-smi` is on PATH, the NVIDIA driver: the GPU stack's torch 2.13.0
(PyPI's wheel, built for CUDA 13.0) needs a driver of branch 580 or newer; with an older one
torch sees no GPU. The GPU rules check it as their first step too (:func:`ssd_math.gpu_driver.require_cuda_driver`).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .gpu_driver import CUDA_DRIVER_MIN, cuda_driver_problem

# Dry-runs print a job's threads only when > 1 and cap them at --cores (1 when not given), while a
# SLURM run submits them uncapped: the check dry-runs with this many cores unless told otherwise.
UNCAPPED_CORES = "1000000"
PLACEHOLDER = re.compile(r"^SITE(\b|-|_)")


@dataclass
class Partition:
    name: str
    cpus: int  # the most CPUs of one node
    mem_mb: int  # the most memory of one node (MB)
    time_min: float  # the partition's time limit, minutes (math.inf: none)
    gpus: bool  # some node has a gpu gres
    default: bool = False


@dataclass
class Job:
    rule: str
    threads: int = 1
    resources: dict[str, str] = field(default_factory=dict)
    has_output: bool = False


def parse_time(s: str) -> float:
    """Minutes of a SLURM time limit: `infinite`, `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`."""
    s = s.strip()
    if s.lower() in ("infinite", "unlimited", "n/a", ""):
        return math.inf
    days = 0
    if "-" in s:
        d, s = s.split("-", 1)
        days = int(d)
        parts = [int(p) for p in s.split(":")] + [0, 0]
        h, m, sec = parts[:3]
    else:
        parts = [int(p) for p in s.split(":")]
        if len(parts) == 1:
            h, m, sec = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, sec = 0, parts[0], parts[1]
        else:
            h, m, sec = parts[:3]
    return days * 1440 + h * 60 + m + sec / 60


SINFO_FORMAT = "%P|%c|%m|%l|%G"


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions from `sinfo -h -o '%P|%c|%m|%l|%G'` (one line per partition and node kind)."""
    out: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, cpus, mem, limit, gres = line.strip().split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        cpus_n = int(re.sub(r"\D.*", "", cpus) or 0)  # "2" or "2+" (nodes differ)
        mem_n = int(re.sub(r"\D.*", "", mem) or 0)
        p = Partition(name, cpus_n, mem_n, parse_time(limit), "gpu" in gres, default)
        if name in out:
            q = out[name]
            p = Partition(
                name,
                max(p.cpus, q.cpus),
                max(p.mem_mb, q.mem_mb),
                max(p.time_min, q.time_min),
                p.gpus or q.gpus,
                p.default or q.default,
            )
        out[name] = p
    return out


def sinfo_partitions() -> dict[str, Partition] | None:
    """The cluster's partitions, or None without `sinfo`."""
    if shutil.which("sinfo") is None:
        return None
    proc = subprocess.run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"sinfo failed: {proc.stderr.strip()}")
    return parse_sinfo(proc.stdout)


def parse_dryrun(text: str) -> list[Job]:
    """The submitted (non-local) jobs of a `snakemake -n` log, with threads and resources."""
    jobs: list[Job] = []
    job: Job | None = None
    for line in text.splitlines():
        m = re.match(r"^(local)?rule (\w+):\s*$", line)
        if m:
            job = None if m.group(1) else Job(m.group(2))
            if job is not None:
                jobs.append(job)
            continue
        if job is None:
            continue
        if re.match(r"^\s+output: ", line):
            job.has_output = True
            continue
        m = re.match(r"^\s+threads: (\d+)\s*$", line)
        if m:
            job.threads = int(m.group(1))
            continue
        m = re.match(r"^\s+resources: (.*)$", line)
        if m:
            for item in m.group(1).split(", "):
                k, _, v = item.partition("=")
                job.resources[k.strip()] = v.strip()
    # a job without output and action (the `all` target) is never submitted
    return [j for j in jobs if j.has_output]


def parse_rule_names(text: str) -> set[str]:
    """Rule names from `snakemake --list-rules` (a name, then its docstring in parentheses)."""
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_]\w*)(?: \(|\s*$)", text, re.M)}


def local_rules(snakefile: Path) -> set[str]:
    """Rules marked `localrule: True` in the workflow's sources (the Snakefile and rules/*.smk):
    Snakemake runs them where it runs and submits nothing for them. (A dry-run prints them as
    plain `rule`s, so the sources are the place to look.)"""
    names: set[str] = set()
    for f in [snakefile, *sorted(snakefile.parent.rglob("*.smk"))]:
        rule = None
        for line in f.read_text().splitlines():
            m = re.match(r"^\s*rule (\w+)\s*:", line)
            if m:
                rule = m.group(1)
            elif rule and re.match(r"^\s*localrule\s*:\s*True\b", line):
                names.add(rule)
            m = re.match(r"^\s*localrules\s*:\s*(.*)$", line)
            if m:
                names.update(n.strip() for n in m.group(1).split(",") if n.strip())
    return names


def _snakefile(args: list[str]) -> Path:
    for i, a in enumerate(args):
        if a in ("-s", "--snakefile") and i + 1 < len(args):
            return Path(args[i + 1])
        if a.startswith("--snakefile="):
            return Path(a.split("=", 1)[1])
    return next((p for p in (Path("Snakefile"), Path("workflow/Snakefile")) if p.exists()), Path("Snakefile"))


def _num(v: str | None) -> float | None:
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


def check_jobs(jobs: list[Job], partitions: dict[str, Partition] | None) -> list[str]:
    """One message per (rule, problem) of these jobs on these partitions (None: no sinfo)."""
    problems: dict[str, None] = {}
    placeholders: dict[tuple[str, str], list[str]] = {}
    default = next((p.name for p in (partitions or {}).values() if p.default), None)
    for job in jobs:
        r = job.resources
        for k, v in r.items():
            if PLACEHOLDER.match(v.strip("'\"")):
                rules = placeholders.setdefault((k, v), [])
                if job.rule not in rules:
                    rules.append(job.rule)
        if partitions is None:
            continue
        name = r.get("slurm_partition", "").strip("'\"") or default
        if name is None or PLACEHOLDER.match(name):
            continue
        part = partitions.get(name)
        if part is None:
            problems[
                f"rule {job.rule}: slurm_partition={name} is not a partition of this cluster "
                f"(sinfo: {', '.join(sorted(partitions))})"
            ] = None
            continue
        if job.threads > part.cpus:
            problems[
                f"rule {job.rule} asks for {job.threads} threads (sbatch --cpus-per-task) but the "
                f"nodes of partition {name} have at most {part.cpus} CPUs: SLURM would leave it "
                f"PENDING (Reason=PartitionConfig) forever; set `set-threads: {job.rule}: "
                f"{part.cpus}` (or less) in your site profile"
            ] = None
        mem = _num(r.get("mem_mb"))
        if mem is not None and part.mem_mb and mem > part.mem_mb:
            problems[
                f"rule {job.rule} asks for mem_mb={mem:g} but the nodes of partition {name} have at "
                f"most {part.mem_mb} MB: set `set-resources: {job.rule}: mem_mb` (or "
                f"default-resources mem_mb) to at most {part.mem_mb} in your site profile"
            ] = None
        rt = _num(r.get("runtime"))
        if rt is not None and rt > part.time_min:
            problems[
                f"rule {job.rule} asks for runtime={rt:g} min but partition {name} allows at most "
                f"{part.time_min:g} min: set `set-resources: {job.rule}: runtime` in your site "
                f"profile"
            ] = None
        gpu = _num(r.get("gpu"))
        if gpu and not part.gpus:
            problems[
                f"rule {job.rule} asks for gpu={gpu:g} but partition {name} has no gpu gres: sbatch "
                f"would refuse it (Invalid generic resource); set `set-resources: {job.rule}: "
                f"slurm_partition` to a GPU partition"
            ] = None
    site = [
        f"{k}={v} is still a placeholder of site.example.yaml (rules {', '.join(rules)}): set it in your "
        f"site profile (default-resources, or set-resources of those rules)"
        for (k, v), rules in placeholders.items()
    ]
    return site + list(problems)


def profile_files(args: list[str]) -> list[Path]:
    """The YAML files of the --profile/--workflow-profile arguments among snakemake's arguments."""
    from snakemake.cli import get_profile_dir

    out = []
    for i, a in enumerate(args):
        val = None
        for opt in ("--profile", "--workflow-profile"):
            if a == opt and i + 1 < len(args):
                val = args[i + 1]
            elif a.startswith(opt + "="):
                val = a.split("=", 1)[1]
        if val and val != "none":
            entry = get_profile_dir(val)
            if entry is not None:
                out.append(Path(entry[1]))
    return out


def check_profile_keys(files: list[Path], rules: set[str]) -> list[str]:
    """A message for every set-resources/set-threads key of these profiles that names no rule."""
    problems = []
    for f in files:
        prof = yaml.safe_load(f.read_text()) or {}
        for key in ("set-resources", "set-threads", "set-resource-scopes"):
            for name in prof.get(key) or {}:
                if name not in rules:
                    problems.append(
                        f"{f}: `{key}: {name}` names no rule of this workflow (with this "
                        f"config), so Snakemake ignores it; the rules are: "
                        f"{', '.join(sorted(rules))}"
                    )
    return problems


def _snakemake(args: list[str]) -> str:
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if shutil.which("nvidia-smi") is not None:
        problem = cuda_driver_problem()
        if problem:
            print(f"ERROR: {problem}", file=sys.stderr)
            return 1
    else:
        print(
            "nvidia-smi is not on PATH here: the NVIDIA driver was not checked (every GPU job "
            f"checks it first: driver >= {CUDA_DRIVER_MIN})"
        )
    given_cores = any(
        a in ("--cores", "-c", "--max-threads") or a.startswith(("--cores=", "--max-threads=")) for a in args
    )
    rules = parse_rule_names(_snakemake([*args, "--list-rules"]))
    local = local_rules(_snakefile(args))
    jobs = [
        j
        for j in parse_dryrun(_snakemake([*([] if given_cores else ["--cores", UNCAPPED_CORES]), *args, "-n"]))
        if j.rule not in local
    ]
    partitions = sinfo_partitions()
    problems = check_profile_keys(profile_files(args), rules) + check_jobs(jobs, partitions)
    per_rule: dict[str, list[Job]] = {}
    for j in jobs:
        per_rule.setdefault(j.rule, []).append(j)
    print(f"{'rule':24} {'jobs':>4} {'partition':>12} {'threads':>7} {'mem_mb':>8} {'runtime':>7} {'gpu':>3}")
    for rule, js in per_rule.items():
        r = js[0].resources
        print(
            f"{rule:24} {len(js):>4} {r.get('slurm_partition', '(default)'):>12} {js[0].threads:>7} "
            f"{r.get('mem_mb', '-'):>8} {r.get('runtime', '-'):>7} {r.get('gpu', '0'):>3}"
        )
    if partitions is None:
        print("sinfo is not on PATH: partitions, threads, memory, time and GPUs were not checked")
    else:
        print(
            "partitions: "
            + "; ".join(
                f"{p.name}{'*' if p.default else ''} {p.cpus} CPUs, {p.mem_mb} MB, "
                f"{'no limit' if math.isinf(p.time_min) else f'{p.time_min:g} min'}"
                f"{', gpu' if p.gpus else ''}"
                for p in partitions.values()
            )
        )
    for p in problems:
        print(f"ERROR: {p}", file=sys.stderr)
    print(f"{len(jobs)} SLURM jobs, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
