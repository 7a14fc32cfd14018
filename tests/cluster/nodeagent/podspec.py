"""From a pod spec to what a container process gets (test infrastructure): env, argv, files.

Pure functions, so the kubelet rules they copy can be unit-tested without servers: $(VAR)
expansion, the downward API (fieldRef, resourceFieldRef), env/envFrom precedence, and the file
layout of configMap/secret/downwardAPI/projected volumes. Lookups of ConfigMaps, Secrets and
tokens go through a ``Resolver`` the caller provides.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from .fit import container_requests, parse_quantity

Obj = Mapping[str, Any]

# The image's own PATH, as a Debian/Python base image sets it; the agent puts the venv first.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ConfigError(Exception):
    """The pod cannot start yet (kubelet: CreateContainerConfigError), e.g. a missing ConfigMap."""


class Resolver(Protocol):
    """Where env and volumes get cluster data from."""

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap, or None if it does not exist."""
        ...

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret, or None if it does not exist."""
        ...


# -- $(VAR) expansion (k8s.io/kubernetes/third_party/forked/golang/expansion) -------------------

_OPERATOR = "$"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Replace $(NAME) by env[NAME]; unknown names stay as written; $$ is a literal $."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == _OPERATOR and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == _OPERATOR:
                out.append(_OPERATOR)
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


# -- downward API --------------------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Obj, path: str, *, host_ip: str) -> str:
    """The value of a downward-API fieldRef (the paths the kubelet supports)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": host_ip,
        "status.podIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        return format_map(meta.get(path.split(".")[1]) or {})
    m = _SUBSCRIPT.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def format_map(values: Mapping[str, str]) -> str:
    """labels/annotations as the downward API writes them: key="value" lines, sorted."""
    return "\n".join(f'{k}="{_quote(v)}"' for k, v in sorted(values.items()))


def _quote(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def resource_value(container: Obj, ref: Obj, *, allocatable: Mapping[str, str]) -> str:
    """A resourceFieldRef: the container's request/limit (limits default to node allocatable)."""
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = Decimal(1)
    value: Decimal
    if kind == "limits":
        raw = (resources.get("limits") or {}).get(name)
        value = (
            parse_quantity(raw) if raw is not None else parse_quantity(allocatable.get(name, "0"))
        )
    elif kind == "requests":
        value = container_requests(container).get(name, Decimal(0))
    else:
        raise ConfigError(f"unsupported resourceFieldRef {resource!r}")
    return str(math.ceil(value / divisor))


# -- env ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvContext:
    """What env resolution needs besides the spec."""

    pod: Obj
    resolver: Resolver
    host_ip: str
    allocatable: Mapping[str, str]


def _data_of(obj: Obj | None, *, secret: bool) -> dict[str, str]:
    if obj is None:
        return {}
    out: dict[str, str] = dict(obj.get("stringData") or {}) if secret else {}
    for k, v in (obj.get("data") or {}).items():
        out[k] = base64.b64decode(v).decode() if secret else v
    if not secret:
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v).decode(errors="replace")
    return out


def container_env(container: Obj, ctx: EnvContext, base: Mapping[str, str]) -> dict[str, str]:
    """The container's environment: base (image + service links), envFrom, then env in order."""
    ns = (ctx.pod.get("metadata") or {}).get("namespace", "default")
    env = dict(base)
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        if src.get("configMapRef"):
            ref = src["configMapRef"]
            obj = ctx.resolver.config_map(ns, ref["name"])
            if obj is None and not ref.get("optional"):
                raise ConfigError(f'configmap "{ref["name"]}" not found')
            data = _data_of(obj, secret=False)
        elif src.get("secretRef"):
            ref = src["secretRef"]
            obj = ctx.resolver.secret(ns, ref["name"])
            if obj is None and not ref.get("optional"):
                raise ConfigError(f'secret "{ref["name"]}" not found')
            data = _data_of(obj, secret=True)
        else:
            continue
        for k, v in data.items():
            env[prefix + k] = v
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item or item["valueFrom"] is None:
            env[name] = expand(item.get("value") or "", env)
            continue
        value = _value_from(item["valueFrom"], container, ctx, ns)
        if value is not None:
            env[name] = value
    return env


def _value_from(src: Obj, container: Obj, ctx: EnvContext, ns: str) -> str | None:
    if src.get("fieldRef"):
        return field_value(ctx.pod, src["fieldRef"]["fieldPath"], host_ip=ctx.host_ip)
    if src.get("resourceFieldRef"):
        ref = src["resourceFieldRef"]
        target = container
        if ref.get("containerName"):
            target = _find_container(ctx.pod, ref["containerName"])
        return resource_value(target, ref, allocatable=ctx.allocatable)
    for key, secret in (("configMapKeyRef", False), ("secretKeyRef", True)):
        if src.get(key):
            ref = src[key]
            obj = (ctx.resolver.secret if secret else ctx.resolver.config_map)(ns, ref["name"])
            kind = "secret" if secret else "configmap"
            if obj is None:
                if ref.get("optional"):
                    return None
                raise ConfigError(f'{kind} "{ref["name"]}" not found')
            data = _data_of(obj, secret=secret)
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
            return data[ref["key"]]
    raise ConfigError(f"unsupported valueFrom {sorted(src)}")


def _find_container(pod: Obj, name: str) -> Obj:
    spec = pod.get("spec") or {}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if c.get("name") == name:
            return c
    raise ConfigError(f"resourceFieldRef names no container {name!r}")


def service_env(host: str, port: int) -> dict[str, str]:
    """The default/kubernetes service link variables, pointing at the real API server."""
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def container_argv(container: Obj, env: Mapping[str, str], *, argoexec: str) -> list[str]:
    """command + args with $(VAR) expanded; the word `argoexec` is the real binary's path.

    Raises ConfigError when there is no command: the agent has no image to take one from.
    """
    command = [expand(s, env) for s in container.get("command") or []]
    args = [expand(s, env) for s in container.get("args") or []]
    if not command:
        raise ConfigError(
            f"container {container.get('name')!r} has no command (the node agent ignores images, "
            "so it cannot use the image's entrypoint)"
        )
    if command[0] == "argoexec":
        command[0] = argoexec
    return command + args


# -- volume files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeFile:
    """One file a configMap/secret/downwardAPI/projected volume holds."""

    path: str
    content: bytes
    mode: int


def _items(
    data: Mapping[str, bytes],
    items: list[Obj] | None,
    default_mode: int,
    *,
    where: str,
    optional: bool,
) -> list[VolumeFile]:
    if not items:
        return [VolumeFile(k, v, default_mode) for k, v in sorted(data.items())]
    out = []
    for it in items:
        if it["key"] not in data:
            if optional:
                continue
            raise ConfigError(f"{where}: no key {it['key']!r}")
        out.append(VolumeFile(it["path"], data[it["key"]], it.get("mode") or default_mode))
    return out


def _bytes_of(obj: Obj, *, secret: bool) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if secret:
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        return out
    for k, v in (obj.get("data") or {}).items():
        out[k] = v.encode()
    for k, v in (obj.get("binaryData") or {}).items():
        out[k] = base64.b64decode(v)
    return out


def _object_files(
    ref: Obj, obj: Obj | None, where: str, default_mode: int, *, secret: bool
) -> list[VolumeFile]:
    """The files of a ConfigMap or Secret volume source `ref` whose object is `obj` (None: not
    found, which only an optional source may be)."""
    if obj is None:
        if ref.get("optional"):
            return []
        raise ConfigError(f"{where} not found")
    return _items(
        _bytes_of(obj, secret=secret),
        ref.get("items"),
        ref.get("defaultMode", default_mode),
        where=where,
        optional=bool(ref.get("optional")),
    )


def source_files(
    source: Obj,
    *,
    pod: Obj,
    resolver: Resolver,
    default_mode: int,
    host_ip: str,
    allocatable: Mapping[str, str],
    token: TokenSource,
) -> list[VolumeFile]:
    """The files of one volume source (or one projected source)."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    if "configMap" in source and source["configMap"] is not None:
        ref = source["configMap"]
        obj = resolver.config_map(ns, ref["name"])
        return _object_files(ref, obj, f'configmap "{ref["name"]}"', default_mode, secret=False)
    if "secret" in source and source["secret"] is not None:
        ref = source["secret"]
        name = ref.get("secretName") or ref.get("name")
        obj = resolver.secret(ns, name)
        return _object_files(ref, obj, f'secret "{name}"', default_mode, secret=True)
    if "downwardAPI" in source and source["downwardAPI"] is not None:
        ref = source["downwardAPI"]
        mode = ref.get("defaultMode", default_mode)
        out = []
        for it in ref.get("items") or []:
            if it.get("fieldRef"):
                value = field_value(pod, it["fieldRef"]["fieldPath"], host_ip=host_ip)
            elif it.get("resourceFieldRef"):
                rf = it["resourceFieldRef"]
                value = resource_value(
                    _find_container(pod, rf.get("containerName", "")), rf, allocatable=allocatable
                )
            else:
                continue
            out.append(VolumeFile(it["path"], value.encode(), it.get("mode") or mode))
        return out
    if "serviceAccountToken" in source and source["serviceAccountToken"] is not None:
        ref = source["serviceAccountToken"]
        value = token(ref.get("audience") or "", int(ref.get("expirationSeconds") or 3600))
        return [VolumeFile(ref["path"], value.encode(), default_mode)]
    if "clusterTrustBundle" in source or "podCertificate" in source:
        raise ConfigError(f"unsupported projected source {sorted(source)}")
    raise ConfigError(f"unsupported volume source {sorted(k for k in source if k != 'name')}")


class TokenSource(Protocol):
    """Returns a ServiceAccount token for (audience, expirationSeconds), bound to the pod."""

    def __call__(self, audience: str, expiration_seconds: int) -> str:
        """The token."""
        ...


def volume_files(
    volume: Obj,
    *,
    pod: Obj,
    resolver: Resolver,
    host_ip: str,
    allocatable: Mapping[str, str],
    token: TokenSource,
) -> list[VolumeFile] | None:
    """The files of a configMap/secret/downwardAPI/projected volume; None for other kinds."""
    common = {
        "pod": pod,
        "resolver": resolver,
        "host_ip": host_ip,
        "allocatable": allocatable,
        "token": token,
    }
    if volume.get("projected") is not None:
        proj = volume["projected"]
        mode = proj.get("defaultMode", 0o644)
        out: list[VolumeFile] = []
        for src in proj.get("sources") or []:
            out.extend(source_files(src, default_mode=mode, **common))  # type: ignore[arg-type]
        return out
    for kind in ("configMap", "secret", "downwardAPI"):
        if volume.get(kind) is not None:
            return source_files({kind: volume[kind]}, default_mode=0o644, **common)  # type: ignore[arg-type]
    return None
