"""What is every step of both templates made of? The names, options and pod parts they share.

A step is a container running the ``vcube`` CLI with explicit arguments (`vcube_container`);
the pods share nothing but the spec (its work area in object storage holds the plan and the
shard results). Each is locked down (non-root, read-only root filesystem, no capabilities), with
a ``/tmp`` emptyDir as its only writable place, JSON logs and its JSON summary as an output
parameter. Retries cover transient failures only (`retry`), committers hold one mutex per
target repo (`committer`), and both WorkflowTemplates share their workflow-level settings
(`workflow_spec_defaults`) and are turned into plain dicts the same way (`finish`). The parent
is `workflows.build`, the group body `workflows.group`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hera.workflows import (
    Artifact,
    Container,
    EmptyDirVolume,
    Env,
    Parameter,
    Resources,
    WorkflowTemplate,
)
from hera.workflows.models import (
    Backoff,
    Capabilities,
    Counter,
    IntOrString,
    Metrics,
    Mutex,
    PodGC,
    PodSecurityContext,
    Prometheus,
    RetryStrategy,
    SeccompProfile,
    SecurityContext,
    Synchronization,
    TTLStrategy,
    ValueFrom,
    WorkflowMetadata,
)
from hera.workflows.models import Metadata as PodMetadata
from hera.workflows.models import MetricLabel as Label

from vcube.argo import TEMPLATE_NAME

ARGO_VERSION = "v4.1.2"
SCHEMA_URL = (
    f"https://raw.githubusercontent.com/argoproj/argo-workflows/{ARGO_VERSION}"
    "/api/jsonschema/schema.json"
)
GROUP_TEMPLATE_NAME = "vcube-build-group"
# Untagged on purpose: the kustomize overlay sets the tag (`images:`), so the rendered base
# never drifts from what the image pipeline built.
IMAGE = "vcube-worker"
SERVICE_ACCOUNT = "vcube"
# The pod's writable scratch: the root filesystem is read-only, /tmp is an emptyDir.
SCRATCH = "/tmp"
OUTPUTS_DIR = f"{SCRATCH}/outputs"
DISPLAY_NAME = "workflows.argoproj.io/display-name"
APP_LABELS = {"app.kubernetes.io/name": "vcube", "app.kubernetes.io/part-of": "vcube"}
SPEC = "{{workflow.parameters.spec}}"
COMMIT_MUTEX = "vcube-commit"


def labels(component: str) -> dict[str, str]:
    """The label scheme applied to every object and pod: one app, one component per role."""
    return {**APP_LABELS, "app.kubernetes.io/component": component}


@dataclass(frozen=True)
class BuildOptions:
    """Knobs of the rendered template; defaults are what `make render` commits."""

    name: str = TEMPLATE_NAME
    group_name: str = GROUP_TEMPLATE_NAME
    image: str = IMAGE
    service_account: str = SERVICE_ACCOUNT
    default_spec: str = "/app/datasets/oae-atlas.yaml"
    # Child workflows (one per group) running at a time, each with its shards' scans in
    # parallel: with 4 shards per group, 25 groups = up to 100 scan pods. An integer field in
    # the CRD, so not an Argo parameter: the overlay patches it, `make submit PARALLELISM=N`
    # overrides it per run.
    parallelism: int = 25
    active_deadline_seconds: int = 2 * 24 * 3600
    group_deadline_seconds: int = 6 * 3600
    ttl_after_success: int = 24 * 3600
    ttl_after_failure: int = 7 * 24 * 3600
    on_demand_selector: dict[str, str] = field(
        default_factory=lambda: {"karpenter.sh/capacity-type": "on-demand"}
    )


# The CLI exits 1 when the data or the cube is at fault and 2 on a bad spec or usage: retrying
# those only repeats the failure (and a commit would hold the repo's mutex through every
# backoff). Retried: errors (pod or node lost, e.g. spot reclaim), exit 3 (storage or network
# unreachable), 130/137/143 (interrupted, killed) and -1 (no exit code: the pod never reported).
# Argo ANDs this expression with retryPolicy Always; lastRetry.exitCode is a string.
TRANSIENT_EXIT_CODES = ("3", "130", "137", "143", "-1")
RETRY_TRANSIENT = (
    'lastRetry.status == "Error" || lastRetry.exitCode in ['
    + ", ".join(f'"{c}"' for c in TRANSIENT_EXIT_CODES)
    + "]"
)


def retry(
    limit: int, first_backoff: str, *, factor: int = 2, transient_only: bool = True
) -> RetryStrategy:
    """Retries with exponential backoff from first_backoff, each wait capped at 5 minutes.

    Argo waits out the next backoff before it evaluates ``expression`` (v4.0.5
    processNodeRetries; seen on the real controller: a commit that exited 1 failed its node
    30 s later, holding the mutex). Steps under a mutex therefore start from a 1 s backoff and
    grow fast (factor 4: 1, 4, 16, 64, 256 s), so a deterministic failure frees the lock at once
    and a transient one is still retried over ~6 minutes.

    No ``maxDuration``: Argo counts it from the first attempt's start and also uses it as the
    deadline of every later attempt (v4.0.5 processNodeRetries), so any value shorter than
    ``limit`` × the step's deadline would kill or skip a legitimate retry. ``limit`` and each
    attempt's ``activeDeadlineSeconds`` bound the time instead.
    """
    return RetryStrategy(
        limit=IntOrString(str(limit)),
        retry_policy="Always" if transient_only else "OnError",
        expression=RETRY_TRANSIENT if transient_only else None,
        backoff=Backoff(duration=first_backoff, factor=IntOrString(str(factor)), cap="5m"),
    )


def _pod_security_context() -> PodSecurityContext:
    return PodSecurityContext(
        run_as_non_root=True,
        run_as_user=1000,
        run_as_group=1000,
        fs_group=1000,
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )


def _container_security_context() -> SecurityContext:
    return SecurityContext(
        run_as_non_root=True,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=Capabilities(drop=["ALL"]),
    )


def _summary_output() -> Parameter:
    # The step's one-line JSON summary, shown in the Argo UI node's outputs.
    return Parameter(
        name="summary",
        value_from=ValueFrom(path=f"{OUTPUTS_DIR}/summary.json"),
        description="the step's JSON summary (vcube --outputs-dir)",
    )


def scalar_output(key: str, description: str) -> Parameter:
    """One plain-text file per scalar summary key; feeds the Prometheus metrics."""
    return Parameter(
        name=key,
        value_from=ValueFrom(path=f"{OUTPUTS_DIR}/{key}", default="0"),
        description=description,
    )


def counter_metric(name: str, help_: str, output: str) -> Prometheus:
    """A Prometheus counter per spec, incremented by a succeeded step's output parameter."""
    return Prometheus(
        name=name,
        help=help_,
        labels=[Label(key="spec", value=SPEC)],
        when="{{status}} == Succeeded",
        counter=Counter(value=f"{{{{outputs.parameters.{output}}}}}"),
    )


def vcube_container(
    opts: BuildOptions,
    name: str,
    args: list[str],
    *,
    cpu: str,
    memory: str,
    memory_limit: str,
    display: str,
    inputs: list[Parameter] | None = None,
    outputs: list[Parameter | Artifact] | None = None,
    **kwargs: Any,
) -> Container:
    """One container template running the vcube CLI; shared security, scratch and labels."""
    return Container(
        name=name,
        image=opts.image,
        command=["vcube"],
        args=[*args, "--outputs-dir", OUTPUTS_DIR],
        inputs=inputs,
        outputs=[_summary_output(), *(outputs or [])],
        env=[
            Env(name="HOME", value=SCRATCH),
            Env(name="TMPDIR", value=SCRATCH),
            Env(name="VCUBE_LOG_FORMAT", value="json"),  # one JSON object per log line
        ],
        resources=Resources(cpu_request=cpu, memory_request=memory, memory_limit=memory_limit),
        security_context=_container_security_context(),
        volumes=[EmptyDirVolume(name="scratch", mount_path=SCRATCH)],
        labels=labels(name),
        annotations={DISPLAY_NAME: display},
        # A failed step's last log lines (the CLI's one-line reason, naming the file or group)
        # become the node's message in the Argo UI, not just "exit code 1".
        termination_message_policy="FallbackToLogsOnError",
        **kwargs,
    )


def workflow_spec_defaults(opts: BuildOptions, component: str) -> dict[str, Any]:
    """Workflow-level settings shared by the parent and the per-group child templates."""
    return {
        "labels": labels(component),
        "service_account_name": opts.service_account,
        "pod_gc": PodGC(strategy="OnPodSuccess"),
        "ttl_strategy": TTLStrategy(
            seconds_after_success=opts.ttl_after_success,
            seconds_after_failure=opts.ttl_after_failure,
        ),
        "security_context": _pod_security_context(),
        "workflow_metadata": WorkflowMetadata(labels=labels(component)),
        "pod_metadata": PodMetadata(labels=dict(APP_LABELS)),
    }


def spec_parameter(opts: BuildOptions) -> Parameter:
    """The ``spec`` workflow parameter of both templates."""
    return Parameter(
        name="spec",
        value=opts.default_spec,
        description=(
            "Path of the dataset spec inside the pod (the specs are baked into the image "
            "under /app/datasets/)."
        ),
    )


def commit_mutex() -> Synchronization:
    """One writer per target repo (one spec = one repo): racing commits on one branch only
    conflict. Mutexes are namespace-wide, so this holds across the per-group workflows."""
    return Synchronization(mutexes=[Mutex(name=f"{COMMIT_MUTEX}-{SPEC}")])


def committer(opts: BuildOptions, name: str, args: list[str], **kwargs: Any) -> Container:
    """A step that commits groups: on-demand, one per target repo, transient failures retried.

    Only transient failures are retried (the mutex is held through every backoff); conflicts
    with other writers are rebased inside the CLI, and re-running a committed group is a no-op
    (the CLI checks the commit metadata).
    """
    return vcube_container(
        opts,
        name,
        args,
        cpu="1",
        memory="2Gi",
        memory_limit="3Gi",
        outputs=[scalar_output("refs", "chunk refs written by this step")],
        node_selector=opts.on_demand_selector,
        synchronization=commit_mutex(),
        retry_strategy=retry(5, "1s", factor=4),
        metrics=Metrics(
            prometheus=[
                counter_metric("vcube_refs_committed", "Chunk refs committed by vcube", "refs")
            ]
        ),
        **kwargs,
    )


def _set_template_annotations(obj: dict[str, Any]) -> None:
    """Move display-name annotations from pod metadata to the template's own ``annotations``.

    Hera 7.1 puts a template's ``annotations`` into pod ``metadata``; Argo reads the node
    display name from the template-level ``annotations`` field (present in v4.0.5's types and
    the v4 CRD: Template.GetDisplayName).
    """
    for template in obj["spec"]["templates"]:
        meta = template.get("metadata") or {}
        pod_annotations = meta.get("annotations") or {}
        if DISPLAY_NAME in pod_annotations:
            template["annotations"] = {DISPLAY_NAME: pod_annotations.pop(DISPLAY_NAME)}
            if not pod_annotations:
                meta.pop("annotations")
            if not meta:
                template.pop("metadata")


def finish(wt: WorkflowTemplate) -> dict[str, Any]:
    """A built WorkflowTemplate as the plain dict that is rendered and applied."""
    obj = wt.to_dict()
    _set_template_annotations(obj)
    return obj
