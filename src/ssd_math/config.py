"""Config: read a config file and validate it -- YAML errors that name the file and line, schema
errors that name the key and what is allowed, every schema default filled in -- and the command
``python -m ssd_math.config FILE``.

The schema (schemas/config.schema.yaml) describes every key; :func:`validate` runs it before any
job starts, then :func:`ssd_math.config_checks.check_semantics` catches what a schema cannot say
(checkpoint steps vs batch sizes, pass@k runs naming unknown arms, the hard set larger than the
main set, ...). The settings derived from a config live in :mod:`ssd_math.derive`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .config_checks import check_semantics
from .derive import arm_sft
from .schema import _root, project_schema, schema_node
from .schema import fill as _fill


class ConfigError(ValueError):
    """The config is invalid; the message names the key and what is allowed."""


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error is a :class:`ConfigError` naming the file, the line and
    the column (PyYAML's own message names neither the file nor, for most errors, a 1-based line)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        ctx, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if ctx:
            what += f" ({ctx}" + (f" that starts on line {cmark.line + 1})" if cmark is not None else ")")
        raise ConfigError(f"{path}: {where}YAML syntax error: {what}") from None


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it (a syntax error names the file and line)."""
    cfg = read_yaml(path)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping")
    return validate(cfg)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(
    error: jsonschema.ValidationError,
    prefix: tuple = (),
    *,
    cli: dict | None = None,
    only: set | None = None,
    what: str = "config key",
) -> str:
    """One line naming the key (``prefix`` + the error's path) and what is allowed. ``cli``: the
    ``--config`` overrides (their keys get the Snakemake hint); ``only``: report just these
    unknown keys (a merged arm spec whose other keys belong to the top-level section); ``what``:
    what a key is called (a training spec's keys are not config keys)."""
    path = tuple(prefix) + tuple(error.absolute_path)
    where = _key(path)
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [
            k for k in error.instance if k not in error.schema.get("properties", {}) and (only is None or k in only)
        ]
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        key = f"{where}." if path else ""
        return f"unknown {what} {', '.join(key + e for e in extra)}{hint}"
    if v == "required":
        desc = error.schema.get("description")
        return f"{where}: {error.message}" + (f" ({desc})" if desc else "")
    if v in (
        "exclusiveMinimum",
        "minimum",
        "maximum",
        "exclusiveMaximum",
        "enum",
        "type",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "minProperties",
        "const",
    ):
        desc = error.schema.get("description")
        allowed = {
            "exclusiveMinimum": lambda s: f"must be > {s['exclusiveMinimum']}",
            "minimum": lambda s: f"must be >= {s['minimum']}",
            "maximum": lambda s: f"must be <= {s['maximum']}",
            "exclusiveMaximum": lambda s: f"must be < {s['exclusiveMaximum']}",
            "enum": lambda s: "must be one of " + ", ".join(map(repr, s["enum"])),
            "type": lambda s: f"must be of type {s['type']}",
            "const": lambda s: f"must be {s['const']!r}",
        }.get(v, lambda s: error.message)(error.schema)
        more = f" ({desc})" if desc else ""
        return f"{what} {where} = {error.instance!r}: {allowed}{more}{_text_hint(error, path, cli)}"
    return f"{what} {where}: {error.message}"


def _from_cli(path: tuple, cli: dict | None) -> bool:
    """Whether the key at ``path`` was set by ``--config`` (nested below a top-level key)."""
    node: Any = cli
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return len(path) > 1


def _text_hint(error: jsonschema.ValidationError, path: tuple, cli: dict | None) -> str:
    """Why a number / boolean arrived as text, and how to write it."""
    if error.validator != "type" or not isinstance(error.instance, str):
        return ""
    want = error.schema.get("type")
    want = set(want) if isinstance(want, list) else {want}
    if not want & {"number", "integer", "boolean"}:
        return ""
    if _from_cli(path, cli):
        return (
            "; this key came from --config, and Snakemake passes nested --config values as "
            "strings (it YAML-parses only a top-level value such as --config seed=7): put "
            f"the change in a config file (a copy of the config with {_key(path)} edited, "
            "passed as --configfile) instead"
        )
    try:
        float(error.instance)
    except ValueError:
        return ""
    if yaml.safe_load(error.instance) == error.instance and re.search(r"[eE]", error.instance):
        return (
            f"; YAML reads {error.instance} as a string: a float in YAML needs a decimal point "
            "and a signed exponent, e.g. 1.0e-4 (or 0.0001)"
        )
    return (
        "; a number in quotes is a string in YAML: remove the quotes (a nested --config value "
        "is passed as a string by Snakemake: use a --configfile for it)"
    )


def _arm_spec_errors(cfg: dict, schema: dict, cli: dict | None = None) -> list[str]:
    """Validate every arm's merged SFT recipe (:func:`arm_sft`) with the schema of the top-level
    ``sft`` section, reporting only what the arm's own ``sft:`` overrides got wrong (the top-level
    section's errors are reported once, under ``sft``)."""
    if (
        not isinstance(cfg.get("sft"), dict)
        or not isinstance(cfg.get("arms"), dict)
        or not isinstance(cfg.get("extra_arms") or {}, dict)
    ):
        return []  # the schema errors of those sections say what is wrong
    optim = {**schema["$defs"]["optim"], "$defs": schema["$defs"]}
    validator = jsonschema.Draft202012Validator(optim)
    out: list[str] = []
    for section in ("arms", "extra_arms"):
        arms = cfg.get(section)
        if not isinstance(arms, dict):
            continue
        for name, arm in arms.items():
            over = arm.get("sft") if isinstance(arm, dict) else None
            if not isinstance(over, dict) or not over:
                continue
            merged = arm_sft(cfg, name)
            prefix = (section, name, "sft")
            for e in sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.absolute_path))):
                p = list(e.absolute_path)
                if p and p[0] not in over:
                    continue  # the top-level sft's own error
                if not p and e.validator == "additionalProperties":
                    if not set(over) - set(optim.get("properties", {})):
                        continue
                    out.append(_describe(e, prefix, cli=cli, only=set(over)))
                elif p:
                    out.append(_describe(e, prefix, cli=cli))
    return out


def recipe_errors(recipe: dict, *, what: str = "config key") -> list[str]:
    """Problems of one training recipe (the optim schema: sft, model.pretrain, the recipe keys
    of an ssd_math.train spec), one line each naming the key."""
    optim = {**schema_node("$defs/optim"), "$defs": _root()["$defs"]}
    errors = jsonschema.Draft202012Validator(optim).iter_errors(recipe)
    return [_describe(e, what=what) for e in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))]


def validate(cfg: dict, schema: dict | None = None, *, cli_overrides: dict | None = None) -> dict:
    """Validate against the JSON schema and the semantic rules; fill in the schema's defaults
    (:func:`fill_defaults`, in place) and return the config.

    Every arm's merged SFT recipe (its ``sft:`` overrides over the top-level ``sft``) is checked
    with the same schema, its messages naming ``arms.<arm>.sft.<key>``. ``cli_overrides``: the
    ``--config`` values (Snakemake's ``workflow.config_settings.config``), so that a nested value
    Snakemake passed as a string is explained. Raises :class:`ConfigError` listing every problem,
    each naming its key."""
    schema = schema or project_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    msgs = [_describe(e, cli=cli_overrides) for e in errors]
    if isinstance(cfg, dict):
        msgs += _arm_spec_errors(cfg, schema, cli_overrides)
    if msgs:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(dict.fromkeys(msgs)))
    fill_defaults(cfg, schema)
    problems = check_semantics(cfg)
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
    return cfg


def fill_defaults(cfg: dict, schema: dict | None = None) -> dict:
    """Set every absent key whose schema entry has a ``default:`` (in place; nested objects
    too, through ``$ref``; not inside arrays or maps of named entries such as ``arms``), so the
    rules read ``config[...]`` directly and each default lives once, in the schema."""
    schema = schema or project_schema()
    return _fill(schema, cfg, schema)


def main(argv: list[str] | None = None) -> int:
    """``python -m ssd_math.config CONFIG.yaml ...``: check config files without Snakemake.

    Snakemake reads ``--configfile`` files itself, before the workflow's code runs, and reports a
    YAML syntax error as "Config file is not valid JSON or YAML" without the file or the line;
    this check names both (and runs every schema and semantic check)."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m ssd_math.config CONFIG.yaml [...]", file=sys.stderr)
        return 2
    rc = 0
    for path in paths:
        try:
            load_config(path)
        except (ConfigError, OSError) as exc:
            print(f"{path}: {exc}" if not str(exc).startswith(str(path)) else str(exc), file=sys.stderr)
            rc = 1
        else:
            print(f"{path}: ok")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
