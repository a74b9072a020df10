"""Declarative tenant configuration: `gateway apply FILE.yaml` and `gateway export`.

The file describes one tenant completely: providers and models not in the file are removed, so
applying the same file twice changes nothing, and `export` output applies back unchanged.
Errors name the line and the field; nothing is written unless the whole file is valid.

This module reads the file (with line numbers), the tenant itself (`tenant`, `name`, `version`) and
runs the sections the other apps register from their AppConfig.ready(): routing's providers, models
and rules (routing.declarative) and data policies (routing.policies.declarative), billing's money
sections (billing.config). Sections are read, applied and exported in the order they registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from tenants.audit import Actor
from tenants.bounds import MAX_NAME_CHARS, text_problem
from tenants.models import Tenant, slug_validator
from tenants.services import tenant_upsert

SCHEMA_VERSION = 1


class ConfigError(Exception):
    """A problem with the file, located by line and field path."""

    def __init__(self, message: str, *, line: int | None = None, path: str = "") -> None:
        self.line = line
        self.path = path
        where = []
        if line is not None:
            where.append(f"line {line}")
        if path:
            where.append(path)
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


# --- YAML loading with line numbers ------------------------------------------------------------------


class _Located:
    """Maps a field path ("providers[0].kind") to the line it was written on."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rsplit(".", 1)[0] if "." in path else (path.rsplit("[", 1)[0] if "[" in path else "")
        return self.lines.get("")


def _to_python(node: yaml.Node, path: str, loc: _Located) -> Any:
    loc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError("keys must be plain strings", line=key_node.start_mark.line + 1, path=path)
            key = key_node.value
            child = f"{path}.{key}" if path else key
            if key in out:
                raise ConfigError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1, path=child)
            loc.lines[child] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, child, loc)
            loc.lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, f"{path}[{i}]", loc) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def load_yaml(text: str) -> tuple[Any, _Located]:
    loc = _Located()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", line=(mark.line + 1) if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}") from None
    if node is None:
        raise ConfigError("the file is empty")
    return _to_python(node, "", loc), loc


# --- Schema ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """Top-level keys that one app reads and writes as a whole (routing's providers, models and rules,
    which refer to each other). `parse(document, checker)` sees the whole mapping; `apply(tenant, parsed,
    actor=)` returns change lines; `export(tenant)` returns the keys' values in file order (None: left out)."""

    keys: tuple[str, ...]
    parse: Callable[[dict, Any], Any]
    apply: Callable[..., list[str]]
    export: Callable[[Tenant], dict[str, Any]]


# Registered from AppConfig.ready(), run in registration order before the EXTENSIONS.
SECTIONS: dict[str, Section] = {}
# Single top-level sections: name -> (parse(value, path, checker), apply(tenant, parsed or None when the
# section is absent, actor=)); `apply.export(tenant)`, when set, writes the section back (None: left out).
EXTENSIONS: dict[str, tuple[Any, Any]] = {}


@dataclass
class TenantSpec:
    slug: str
    name: str
    sections: dict[str, Any] = field(default_factory=dict)  # SECTIONS name -> what its parse returned
    extra: dict[str, Any] = field(default_factory=dict)  # EXTENSIONS name -> what its parse returned


TOP_LEVEL = {"version", "tenant", "name"}


class _Checker:
    def __init__(self, loc: _Located) -> None:
        self.loc = loc

    def fail(self, message: str, path: str) -> ConfigError:
        return ConfigError(message, line=self.loc.line(path), path=path)

    def mapping(self, value: Any, path: str, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(f"expected a mapping, got {type(value).__name__}", path)
        for key in value:
            if key not in allowed:
                raise self.fail(
                    f"unknown field {key!r} (allowed: {', '.join(sorted(allowed))})",
                    f"{path}.{key}" if path else key,
                )
        for key in sorted(required):
            if key not in value or value[key] is None:
                raise self.fail(f"missing required field {key!r}", path)
        return value

    def string(self, value: Any, path: str, *, allow_empty: bool = False) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(f"expected a string, got {type(value).__name__}", path)
        text = str(value).strip()
        if not text and not allow_empty:
            raise self.fail("must not be empty", path)
        return text

    def sequence(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"expected a list, got {type(value).__name__}", path)
        return value


def parse_config(text: str) -> TenantSpec:
    data, loc = load_yaml(text)
    c = _Checker(loc)
    allowed = TOP_LEVEL.union(*(s.keys for s in SECTIONS.values()), EXTENSIONS)
    c.mapping(data, "", allowed, {"tenant"})
    version = data.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise c.fail(f"unsupported version {version!r}; this gateway reads version {SCHEMA_VERSION}", "version")
    slug = c.string(data["tenant"], "tenant")
    try:
        slug_validator(slug)
    except ValidationError as exc:
        raise c.fail(f"{slug!r}: {exc.messages[0]}", "tenant") from None
    name = c.string(data.get("name") or slug, "name")
    problem = text_problem(name, max_chars=MAX_NAME_CHARS, what="tenant name")
    if problem:
        raise c.fail(problem, "name")
    spec = TenantSpec(slug=slug, name=name)
    for name, section in SECTIONS.items():
        spec.sections[name] = section.parse(data, c)
    for key, (parser, _apply) in EXTENSIONS.items():
        if key in data:
            spec.extra[key] = parser(data[key], key, c)
    return spec


def apply_config(text: str, *, actor: Actor | None = None) -> tuple[Tenant, list[str]]:
    """Validate the whole file, then apply it in one transaction. Returns the tenant and change lines."""
    actor = actor or Actor.cli()
    spec = parse_config(text)
    changes: list[str] = []
    try:
        with transaction.atomic():
            tenant, created = tenant_upsert(slug=spec.slug, name=spec.name, actor=actor)
            if created:
                changes.append(f"+ tenant {tenant.slug}")
            elif tenant.name != spec.name:
                changes.append(f"~ tenant {tenant.slug} name")
            for name, section in SECTIONS.items():
                changes.extend(section.apply(tenant, spec.sections[name], actor=actor))
            for key, (_parse, apply) in EXTENSIONS.items():
                changes.extend(apply(tenant, spec.extra.get(key), actor=actor))
    except ValidationError as exc:
        raise ConfigError(_messages(exc)) from None
    return tenant, changes


def _messages(exc: ValidationError) -> str:
    """A service's refusal as one line, each message after the field it is about."""
    if not hasattr(exc, "error_dict"):
        return "; ".join(exc.messages)
    return "; ".join(
        f"{field}: {message}" if field != "__all__" else message
        for field, messages in exc.message_dict.items()
        for message in messages
    )


def export_config(tenant: Tenant) -> str:
    """YAML that apply_config accepts back unchanged. Secrets appear only as env: references."""
    doc: dict[str, Any] = {"tenant": tenant.slug, "name": tenant.name}
    for section in SECTIONS.values():
        doc.update((key, value) for key, value in section.export(tenant).items() if value is not None)
    for key, (_parse, apply) in EXTENSIONS.items():
        exporter = getattr(apply, "export", None)
        if exporter is not None:
            value = exporter(tenant)
            if value is not None:
                doc[key] = value
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
