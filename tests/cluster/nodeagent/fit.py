"""Scheduling decisions of the node agent (test infrastructure): pure functions over API dicts.

Only the predicates a vcube cluster test can meet are implemented, the way kube-scheduler's
filter plugins define them: NodeUnschedulable, TaintToleration (NoSchedule/NoExecute),
NodeSelector + required node affinity, NodeResourcesFit (requests vs allocatable, pod count).
Pod (anti-)affinity and topology spread are not evaluated (``unsupported`` names them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

Obj = Mapping[str, Any]

_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_BINARY_SUFFIXES = {
    s: Decimal(1024) ** (i + 1) for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
}


def parse_quantity(text: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("500m", "1Gi", "2", "1e3") as a Decimal in base units."""
    if isinstance(text, int | float):
        return Decimal(str(text))
    s = text.strip()
    for suffix, factor in _BINARY_SUFFIXES.items():
        if s.endswith(suffix):
            return _number(s[: -len(suffix)], text) * factor
    if s and s[-1] in _DECIMAL_SUFFIXES and not s[-1].isdigit():
        return _number(s[:-1], text) * _DECIMAL_SUFFIXES[s[-1]]
    return _number(s, text)


def _number(s: str, original: object) -> Decimal:
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"not a Kubernetes quantity: {original!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a Kubernetes quantity: {original!r}")
    return value


# -- resources ---------------------------------------------------------------------------------


def container_requests(container: Obj) -> dict[str, Decimal]:
    """A container's requests; a resource with only a limit requests its limit (API defaulting)."""
    resources = container.get("resources") or {}
    out = {k: parse_quantity(v) for k, v in (resources.get("limits") or {}).items()}
    out.update({k: parse_quantity(v) for k, v in (resources.get("requests") or {}).items()})
    return out


def pod_requests(pod: Obj) -> dict[str, Decimal]:
    """What a pod occupies on a node: max(sum of containers, largest init) + overhead."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        for k, v in container_requests(c).items():
            total[k] = total.get(k, Decimal(0)) + v
    for c in spec.get("initContainers") or []:
        for k, v in container_requests(c).items():
            total[k] = max(total.get(k, Decimal(0)), v)
    for k, v in (spec.get("overhead") or {}).items():
        total[k] = total.get(k, Decimal(0)) + parse_quantity(v)
    return total


# -- taints and tolerations --------------------------------------------------------------------


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Whether one toleration matches one taint (core/v1 Toleration.ToleratesTaint)."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return not key or key == taint.get("key")
    if operator != "Equal":
        return False
    return key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taints(pod: Obj, node: Obj) -> list[Obj]:
    """The node's NoSchedule/NoExecute taints that none of the pod's tolerations match."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    taints = list((node.get("spec") or {}).get("taints") or [])
    if (node.get("spec") or {}).get("unschedulable"):
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
    return [
        t
        for t in taints
        if t.get("effect") in ("NoSchedule", "NoExecute")
        and not any(tolerates(tol, t) for tol in tolerations)
    ]


# -- node selector and affinity ----------------------------------------------------------------


def _match_expression(expr: Obj, values_of: Mapping[str, str]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator", "")
    values = list(expr.get("values") or [])
    present = key in values_of
    value = values_of.get(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            have, want = int(str(value)), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _match_term(term: Obj, node: Obj) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    fields = {"metadata.name": (node.get("metadata") or {}).get("name", "")}
    exprs = term.get("matchExpressions") or []
    field_exprs = term.get("matchFields") or []
    if not exprs and not field_exprs:
        return False  # an empty term matches nothing
    return all(_match_expression(e, labels) for e in exprs) and all(
        _match_expression(e, fields) for e in field_exprs
    )


def matches_node_selector(pod: Obj, node: Obj) -> bool:
    """nodeSelector (all labels equal) and requiredDuringScheduling node affinity (any term)."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if terms is None:
        return True
    return any(_match_term(t, node) for t in terms)


def unsupported(pod: Obj) -> list[str]:
    """Scheduling constraints this agent ignores (logged, so a test author sees them)."""
    spec = pod.get("spec") or {}
    affinity = spec.get("affinity") or {}
    out = [k for k in ("podAffinity", "podAntiAffinity") if affinity.get(k)]
    if spec.get("topologySpreadConstraints"):
        out.append("topologySpreadConstraints")
    return out


# -- choosing a node ---------------------------------------------------------------------------


@dataclass
class NodeUsage:
    """Requests of the pods already on a node that are not terminated."""

    requests: dict[str, Decimal] = field(default_factory=dict)
    pods: int = 0

    def add(self, pod: Obj) -> None:
        """Count one more pod."""
        for k, v in pod_requests(pod).items():
            self.requests[k] = self.requests.get(k, Decimal(0)) + v
        self.pods += 1


def usage_by_node(pods: Iterable[Obj]) -> dict[str, NodeUsage]:
    """Per node name, the usage of its bound, non-terminal pods."""
    out: dict[str, NodeUsage] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if node and phase not in ("Succeeded", "Failed"):
            out.setdefault(node, NodeUsage()).add(pod)
    return out


def insufficient(pod: Obj, node: Obj, usage: NodeUsage) -> list[str]:
    """Resources ("cpu", "memory", "pods", ...) the node has too little of for the pod."""
    allocatable = {
        k: parse_quantity(v)
        for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()
    }
    out = []
    if "pods" in allocatable and usage.pods + 1 > allocatable["pods"]:
        out.append("pods")
    for k, want in sorted(pod_requests(pod).items()):
        if want <= 0:
            continue
        have = allocatable.get(k, Decimal(0)) - usage.requests.get(k, Decimal(0))
        if want > have:
            out.append(k)
    return out


@dataclass(frozen=True)
class Decision:
    """Where a pod goes, or why it goes nowhere (the PodScheduled=False message)."""

    node: str | None
    message: str = ""


def choose_node(pod: Obj, nodes: Iterable[Obj], usage: Mapping[str, NodeUsage]) -> Decision:
    """The least-loaded node (by requested CPU fraction) that passes every filter."""
    reasons: dict[str, int] = {}
    best: tuple[float, str] | None = None
    node_list = list(nodes)

    def fail(reason: str) -> None:
        reasons[reason] = reasons.get(reason, 0) + 1

    for node in node_list:
        name = (node.get("metadata") or {}).get("name", "")
        if not _is_ready(node):
            fail("node(s) were not ready")
            continue
        if not matches_node_selector(pod, node):
            fail("node(s) didn't match Pod's node affinity/selector")
            continue
        taints = untolerated_taints(pod, node)
        if taints:
            t = taints[0]
            value = f": {t.get('value')}" if t.get("value") else ""
            fail(f"node(s) had untolerated taint {{{t.get('key')}{value}}}")
            continue
        node_usage = usage.get(name, NodeUsage())
        short = insufficient(pod, node, node_usage)
        if short:
            for k in short:
                fail("Too many pods" if k == "pods" else f"Insufficient {k}")
            continue
        cpu = parse_quantity(((node.get("status") or {}).get("allocatable") or {}).get("cpu", "1"))
        used = node_usage.requests.get("cpu", Decimal(0)) + pod_requests(pod).get("cpu", Decimal(0))
        score = (float(used / cpu) if cpu > 0 else math.inf, name)
        if best is None or score < best:
            best = score
    if best is not None:
        return Decision(best[1])
    detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    message = f"0/{len(node_list)} nodes are available"
    return Decision(None, f"{message}: {detail}." if detail else f"{message}.")


def _is_ready(node: Obj) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False
