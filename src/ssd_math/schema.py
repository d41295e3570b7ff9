"""The config schema, schemas/config.schema.yaml: the one owner of every config key's default and
limits. This module reads it (once), hands out its entries and their defaults, and checks a value
against an entry, so that code below the config modules (the sampler's decoding settings, the
synthetic task's recipe, decontamination) takes its defaults and ranges from the schema instead of
a copy. It imports no other project module."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@functools.cache
def _schema_text() -> str:
    return json.dumps(load_schema())


def project_schema() -> dict:
    """The project's schema (a fresh copy: callers may keep or change it)."""
    return json.loads(_schema_text())


@functools.cache
def _root() -> dict:
    """The schema, parsed once, for reading only (:func:`fill` copies the defaults it sets)."""
    return project_schema()


def resolve(node: dict, schema: dict) -> dict:
    """``node`` with its ``$ref`` (if any) replaced by the entry it points to, overlaid by the
    node's own keys."""
    ref = node.get("$ref")
    if ref:
        target: Any = schema
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_node(pointer: str, root: dict | None = None) -> dict:
    """The schema entry at ``pointer``, e.g. ``$defs/optim`` or ``properties/probe``, its
    ``$ref`` resolved."""
    root = root or _root()
    node: Any = root
    for part in pointer.strip("/").split("/"):
        node = resolve(node, root)[part]
    return resolve(node, root)


def fill(node: dict, inst: Any, root: dict) -> Any:
    """Set every key of ``inst`` absent but given a ``default:`` by ``node`` (in place, nested
    objects too, through ``$ref``)."""
    node = resolve(node, root)
    if not isinstance(inst, dict):
        return inst
    for key, sub in (node.get("properties") or {}).items():
        sub = resolve(sub, root)
        if key not in inst and "default" in sub:
            inst[key] = copy.deepcopy(sub["default"])
        if key in inst:
            fill(sub, inst[key], root)
    return inst


def with_defaults(inst: dict, pointer: str) -> dict:
    """``inst`` (in place) with every absent key the entry at ``pointer`` gives a default."""
    return fill(schema_node(pointer), inst, _root())


def schema_defaults(pointer: str) -> dict:
    """Every ``default:`` under the object at ``pointer`` (nested objects too), in the schema's
    key order: what a section resolves to when the config leaves it out."""
    return fill(schema_node(pointer), {}, _root())


def default(pointer: str) -> Any:
    """The ``default:`` of the one entry at ``pointer`` (a copy); a KeyError naming the pointer
    when the schema gives that entry none."""
    node = schema_node(pointer)
    if "default" not in node:
        raise KeyError(f"schemas/config.schema.yaml: {pointer} has no default")
    return copy.deepcopy(node["default"])


def errors(value: Any, pointer: str, key: str) -> list[str]:
    """Why ``value`` is not a valid instance of the entry at ``pointer`` (empty when it is): one
    line per problem, naming ``key`` (and the sub-key) and what the schema allows."""
    root = _root()
    node = {**schema_node(pointer, root), "$defs": root.get("$defs", {})}
    out = []
    for e in sorted(
        jsonschema.Draft202012Validator(node).iter_errors(value), key=lambda e: list(map(str, e.absolute_path))
    ):
        where = ".".join([key, *map(str, e.absolute_path)])
        desc = e.schema.get("description") if isinstance(e.schema, dict) else None
        what = f"{where}: {e.message}" if e.validator == "required" else f"{where} = {e.instance!r}: {e.message}"
        out.append(what + (f" ({desc})" if desc else ""))
    return out
