"""Strict offline validation of rendered manifests against the official CRD / JSON schemas.

Shared by tests/workflows and tests/k8s: ``from tests.schemas import validate_object``.
The schemas are pinned upstream files kept outside the repository: ``$VCUBE_SCHEMAS``, else
``../shared/schemas`` next to the repo root; ``scripts/fetch-schemas.sh`` fetches them (README,
"Development"). Kubernetes' API server prunes unknown fields silently, so a typo in a
rendered manifest would pass ``kubectl apply`` and do nothing; here an unknown field is an
error. Core kinds (ServiceAccount, ConfigMap, ...) are not covered: use kubernetes-validate.

Families:
- Argo Workflows, Argo CD, Karpenter: ``spec.versions[].schema.openAPIV3Schema`` of the CRD,
  made strict (``additionalProperties: false`` wherever an object lists ``properties`` and
  does not say ``x-kubernetes-preserve-unknown-fields``), int-or-string as string|integer.
- Argo Events: the CRDs carry no field schema, so ``argo-events/schema.json`` definitions.
- eksctl ClusterConfig: ``eksctl/schema.json``.
``validate_argo_loose`` is the second, looser check against ``argo-workflows/schema.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[1]


def _schemas_dir() -> Path:
    """``$VCUBE_SCHEMAS`` (relative paths start at the repo root), else ``../shared/schemas``."""
    configured = Path(os.environ.get("VCUBE_SCHEMAS") or "../shared/schemas")
    return (REPO / configured).resolve()


SCHEMAS_DIR = _schemas_dir()
MISSING_HELP = (
    "The tests validate manifests against pinned upstream schemas kept outside the repository, "
    "in $VCUBE_SCHEMAS (default ../shared/schemas next to the repo root): argo-workflows v4.1.2, "
    "argo-events v1.9.11, argo-cd v3.5.1, karpenter-provider-aws v1.14.1, eksctl v0.230.0. "
    "Fetch them with `scripts/fetch-schemas.sh` (needs access to GitHub) or point "
    "VCUBE_SCHEMAS at a copy."
)


def schema_files() -> dict[str, Path]:
    """Every schema file (JSON/YAML) under SCHEMAS_DIR by relative path; fails if there are none."""
    files = {
        str(p.relative_to(SCHEMAS_DIR)): p
        for p in sorted(SCHEMAS_DIR.rglob("*"))
        if p.suffix in (".json", ".yaml")
    }
    if not files:
        raise FileNotFoundError(f"no schema files in {SCHEMAS_DIR}. {MISSING_HELP}")
    return files


# (apiVersion group, kind) -> (family, file relative to SCHEMAS_DIR, definition name or None).
_CRD = "crd"
_JSON = "json"
_KINDS: dict[tuple[str, str], tuple[str, str, str | None]] = {
    ("argoproj.io", "Workflow"): (_CRD, "argo-workflows/argoproj.io_workflows.yaml", None),
    ("argoproj.io", "WorkflowTemplate"): (
        _CRD,
        "argo-workflows/argoproj.io_workflowtemplates.yaml",
        None,
    ),
    ("argoproj.io", "ClusterWorkflowTemplate"): (
        _CRD,
        "argo-workflows/argoproj.io_clusterworkflowtemplates.yaml",
        None,
    ),
    ("argoproj.io", "CronWorkflow"): (_CRD, "argo-workflows/argoproj.io_cronworkflows.yaml", None),
    ("argoproj.io", "WorkflowEventBinding"): (
        _CRD,
        "argo-workflows/argoproj.io_workfloweventbindings.yaml",
        None,
    ),
    ("argoproj.io", "Application"): (_CRD, "argo-cd/application-crd.yaml", None),
    ("argoproj.io", "ApplicationSet"): (_CRD, "argo-cd/applicationset-crd.yaml", None),
    ("argoproj.io", "AppProject"): (_CRD, "argo-cd/appproject-crd.yaml", None),
    ("karpenter.sh", "NodePool"): (_CRD, "karpenter/karpenter.sh_nodepools.yaml", None),
    ("karpenter.k8s.aws", "EC2NodeClass"): (
        _CRD,
        "karpenter/karpenter.k8s.aws_ec2nodeclasses.yaml",
        None,
    ),
    ("argoproj.io", "EventBus"): (
        _JSON,
        "argo-events/schema.json",
        "io.argoproj.events.v1alpha1.EventBus",
    ),
    ("argoproj.io", "EventSource"): (
        _JSON,
        "argo-events/schema.json",
        "io.argoproj.events.v1alpha1.EventSource",
    ),
    ("argoproj.io", "Sensor"): (
        _JSON,
        "argo-events/schema.json",
        "io.argoproj.events.v1alpha1.Sensor",
    ),
    ("eksctl.io", "ClusterConfig"): (_JSON, "eksctl/schema.json", "ClusterConfig"),
}

_ARGO_WORKFLOW_KINDS = {
    "Workflow",
    "WorkflowTemplate",
    "ClusterWorkflowTemplate",
    "CronWorkflow",
    "WorkflowEventBinding",
}


class SchemaViolationError(AssertionError):
    """Raised with every violation of one object, one ``$.json.path: message`` per line."""


@dataclass(frozen=True)
class Violation:
    """One schema violation: where in the object, and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def supported_kinds() -> list[tuple[str, str]]:
    """The (group, kind) pairs this module validates, for tests that want to know."""
    return sorted(_KINDS)


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def _strictify(node: Any) -> Any:
    """Rewrite Kubernetes OpenAPI extensions into plain JSON Schema, closed objects.

    Kubernetes treats an object schema with ``properties`` as closed (unknown fields are
    pruned), unless ``x-kubernetes-preserve-unknown-fields``; JSON Schema treats it as open.
    Walks schema keywords only, so a property *named* like a keyword is left alone.
    """
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _strictify(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_strictify(sub) for sub in out[key]]
    for key in _SCHEMA_ONE:
        if isinstance(out.get(key), dict):
            out[key] = _strictify(out[key])
    if out.get("x-kubernetes-int-or-string") is True:
        # CRDs spell it anyOf[integer, string] plus the flag; one type list is simpler
        # and gives a single readable error.
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and out.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    return out


@cache
def _load(relpath: str) -> Any:
    path = SCHEMAS_DIR / relpath
    if not path.is_file():
        raise FileNotFoundError(f"schema file {path} is missing. {MISSING_HELP}")
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@cache
def _strict_validator(group: str, version: str, kind: str) -> jsonschema.protocols.Validator:
    try:
        family, relpath, definition = _KINDS[(group, kind)]
    except KeyError:
        known = ", ".join(f"{g}/{k}" for g, k in sorted(_KINDS))
        raise SchemaViolationError(
            f"no CRD/JSON schema for {group}/{kind} (known: {known}); "
            "core kinds go through kubernetes-validate"
        ) from None
    doc = _load(relpath)
    if family == _CRD:
        versions = {v["name"]: v for v in doc["spec"]["versions"]}
        if version not in versions:
            raise SchemaViolationError(
                f"{group}/{kind}: apiVersion version {version!r} not in the CRD "
                f"(has {sorted(versions)})"
            )
        schema = _strictify(versions[version]["schema"]["openAPIV3Schema"])
    else:
        strict_doc = _strictify(doc)
        strict_doc.pop("oneOf", None)
        strict_doc.pop("$ref", None)
        strict_doc.pop("type", None)
        strict_doc.pop("$schema", None)
        schema = {**strict_doc, "$ref": f"#/definitions/{definition}"}
    return jsonschema.Draft202012Validator(schema)


@cache
def _loose_argo_validator(kind: str) -> jsonschema.protocols.Validator:
    doc = _load("argo-workflows/schema.json")
    schema = {key: value for key, value in doc.items() if key not in ("oneOf", "type", "$schema")}
    # schema.json types IntOrString and Quantity as plain strings (a generator artefact);
    # the API server and the CRD accept integers there too, so widen both.
    definitions = dict(schema["definitions"])
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"type": ["integer", "string"]}
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {"type": ["number", "string"]}
    schema["definitions"] = definitions
    schema["$ref"] = f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}"
    return jsonschema.Draft202012Validator(schema)


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """Descend into anyOf/oneOf so the message names the innermost field at fault."""
    if error.context:
        return [leaf for sub in error.context for leaf in _leaf_errors(sub)]
    return [error]


def collect_violations(validator: jsonschema.protocols.Validator, obj: Any) -> list[Violation]:
    """Every violation of ``obj``, sorted by JSON path, duplicates removed."""
    found: set[Violation] = set()
    for error in validator.iter_errors(obj):
        top = error.validator in ("anyOf", "oneOf") and error.context
        for leaf in _leaf_errors(error) if top else [error]:
            found.add(Violation(leaf.json_path, leaf.message))
    return sorted(found, key=lambda v: (v.path, v.message))


def _identify(obj: Any) -> tuple[str, str, str, str]:
    if not isinstance(obj, dict):
        raise SchemaViolationError(f"$: expected a mapping, got {type(obj).__name__}")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise SchemaViolationError("$: apiVersion and kind must both be set")
    group, version = _split_api_version(api_version)
    name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get(
        "generateName", "?"
    )
    return group, version, kind, f"{kind}/{name}"


def _raise_if(violations: list[Violation], label: str, schema_name: str) -> None:
    if violations:
        lines = "\n".join(f"  {v}" for v in violations)
        raise SchemaViolationError(
            f"{label} violates {schema_name} ({len(violations)} error(s)):\n{lines}"
        )


def validate_object(obj: dict[str, Any]) -> None:
    """Validate one rendered object strictly; raise SchemaViolationError listing all errors."""
    group, version, kind, label = _identify(obj)
    validator = _strict_validator(group, version, kind)
    relpath = _KINDS[(group, kind)][1]
    _raise_if(collect_violations(validator, obj), label, relpath)


def validate_argo_loose(obj: dict[str, Any]) -> None:
    """Second check of an Argo Workflows object: argo-workflows/schema.json, objects open."""
    group, _version, kind, label = _identify(obj)
    if group != "argoproj.io" or kind not in _ARGO_WORKFLOW_KINDS:
        raise SchemaViolationError(f"{label}: not an Argo Workflows kind")
    validator = _loose_argo_validator(kind)
    _raise_if(collect_violations(validator, obj), label, "argo-workflows/schema.json")
