"""The WorkflowTemplates: ``vcube-build`` (plan → init → scans, one child workflow per
group, while one committer commits each group as its scans complete → validate) and
``vcube-build-group`` (scan per shard → commit: one group by hand).

Every step is a container running the ``vcube`` CLI with explicit arguments; the pods share
nothing but the spec (its work area in object storage holds the plan and the shard results).
Argo parameters carry ids only: ``plan`` writes ``groups.json`` (``[{"group", "shards"}]``),
the parent fans out over it. Each group's scans run as their own child Workflow because one
Workflow holding all 690 atlas groups would carry thousands of nodes, near Argo's 1 MiB object
limit even gzip-compressed (bench/scale.py, README "Scale"). The fan-in is one long-lived
``commit-all`` pod (README "Fan-in"): a pod per commit behind a mutex spent ~25 s of pod
lifecycle per group, 690 times in a row.

Sizing assumptions (per pod; see README.md for the numbers behind them):
- plan lists the source prefix (~500 k keys for the atlas): 0.5 CPU, 1 Gi.
- init reads one template file's metadata and writes coordinates: 1 CPU, 2 Gi.
- scan reads HDF5 metadata only (~40 ms CPU and ~0.3 MB per file, 180 files per shard):
  0.5 CPU, 512 Mi request / 1 Gi limit. Runs on spot capacity, retried on node loss.
- commit-all commits each group's refs (~24 k refs, one commit per group) for the whole
  fan-out: 1 CPU, 2 Gi. On-demand nodes, one per target repo (a mutex); conflicts are rebased
  inside the CLI.
- validate samples values through the cube and from the sources: 1 CPU, 2 Gi.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from hera.workflows import (
    DAG,
    Artifact,
    Container,
    EmptyDirVolume,
    Env,
    NoneArchiveStrategy,
    Parameter,
    Resource,
    Resources,
    Step,
    Steps,
    Task,
    WorkflowTemplate,
)
from hera.workflows.models import (
    Backoff,
    Capabilities,
    ContinueOn,
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
    Toleration,
    TTLStrategy,
    ValueFrom,
    WorkflowMetadata,
)
from hera.workflows.models import Metadata as PodMetadata
from hera.workflows.models import MetricLabel as Label

ARGO_VERSION = "v4.1.2"
SCHEMA_URL = (
    f"https://raw.githubusercontent.com/argoproj/argo-workflows/{ARGO_VERSION}"
    "/api/jsonschema/schema.json"
)
TEMPLATE_NAME = "vcube-build"
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


def _retry(
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


def _scalar_output(key: str, description: str) -> Parameter:
    # One plain-text file per scalar summary key; feeds the Prometheus metrics.
    return Parameter(
        name=key,
        value_from=ValueFrom(path=f"{OUTPUTS_DIR}/{key}", default="0"),
        description=description,
    )


def _counter(name: str, help_: str, output: str) -> Prometheus:
    return Prometheus(
        name=name,
        help=help_,
        labels=[Label(key="spec", value="{{workflow.parameters.spec}}")],
        when="{{status}} == Succeeded",
        counter=Counter(value=f"{{{{outputs.parameters.{output}}}}}"),
    )


def _vcube(
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


def _workflow_spec_defaults(opts: BuildOptions, component: str) -> dict[str, Any]:
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


def _spec_parameter(opts: BuildOptions) -> Parameter:
    return Parameter(
        name="spec",
        value=opts.default_spec,
        description=(
            "Path of the dataset spec inside the pod (the specs are baked into the image "
            "under /app/datasets/)."
        ),
    )


def _commit_mutex() -> Synchronization:
    # One writer per target repo (one spec = one repo): racing commits on one branch only
    # conflict. Mutexes are namespace-wide, so this holds across the per-group workflows.
    return Synchronization(mutexes=[Mutex(name=f"{COMMIT_MUTEX}-{SPEC}")])


def _build_mutex() -> Synchronization:
    # One build per cube at a time, whoever submits it (make submit, the CronWorkflow, the
    # Sensor): a second build waits Pending until the first finishes. Workflow-level, so Argo
    # substitutes the global parameter into the name before taking the lock.
    return Synchronization(mutexes=[Mutex(name=f"{BUILD_MUTEX}-{SPEC}")])


SPEC = "{{workflow.parameters.spec}}"
# Names this build's fan-out for commit-all and scans-done (a retried committer keeps it).
RUN_ID = "{{workflow.uid}}"
COMMIT_MUTEX = "vcube-commit"
BUILD_MUTEX = "vcube-build"
PARENT_LABEL = "vcube.io/parent-workflow"
LAUNCHER_SERVICE_ACCOUNT = "vcube-launcher"


@dataclass(frozen=True)
class _GroupRefs:
    """How the per-group templates name their values.

    Standalone (the ``vcube-build-group`` WorkflowTemplate): its own workflow parameters.
    Inline (the child spec inside the parent's resource manifest): the parent substitutes the
    manifest before creating the child, so group and shards are the parent's inputs, and the
    child's own inputs are written as expression tags (``{{=inputs.parameters.shard}}``), which
    the parent neither validates nor resolves (it has no such input) and the child evaluates.
    """

    group: str
    shards: str
    inline: bool
    # Where scans run: the spot pool, unless an overlay moves them (dev: on-demand).
    scan_capacity: str = "spot"

    def own_input(self, name: str) -> str:
        eq = "=" if self.inline else ""
        return f"{{{{{eq}inputs.parameters.{name}}}}}"


STANDALONE = _GroupRefs(
    group="{{workflow.parameters.group}}", shards="{{workflow.parameters.shards}}", inline=False
)
INLINE = _GroupRefs(
    group="{{inputs.parameters.group}}",
    shards="{{inputs.parameters.shards}}",
    inline=True,
    scan_capacity="{{inputs.parameters.scan-capacity}}",
)


def _group_templates(opts: BuildOptions, refs: _GroupRefs) -> DAG:
    """scan per shard (fan-out), then (standalone only) commit: the body of one group.

    Inside a build the group's commit is the parent's ``commit-all``; a group redone by hand
    (the standalone template) commits itself.
    """
    shard = refs.own_input("shard")
    scan = _vcube(
        opts,
        "scan",
        ["scan", SPEC, "--shard", shard],
        cpu="500m",
        memory="512Mi",
        memory_limit="1Gi",
        display=f"scan-{shard}",
        inputs=[Parameter(name="shard", description="shard id, e.g. 012-04")],
        outputs=[_scalar_output("files", "files scanned by this shard")],
        node_selector={"karpenter.sh/capacity-type": refs.scan_capacity},
        tolerations=[
            Toleration(
                key="karpenter.sh/capacity-type",
                operator="Equal",
                value="spot",
                effect="NoSchedule",
            )
        ],
        # Spot reclaim and node loss surface as errors, S3 outages as exit 3: retried; a bad
        # file (exit 1) is not. A scan is pure and deterministic: a retry writes the same bytes.
        retry_strategy=_retry(5, "15s"),
        metrics=Metrics(
            prometheus=[_counter("vcube_files_scanned", "Source files scanned by vcube", "files")]
        ),
        active_deadline_seconds=3600,
    )
    commit = None
    if not refs.inline:
        group = refs.own_input("group")
        commit = _committer(
            opts,
            "commit",
            ["commit", SPEC, "--group", group],
            display=f"commit-{group}",
            inputs=[Parameter(name="group", description="commit group id, e.g. 012")],
            active_deadline_seconds=3600,
        )
    with DAG(name="group", labels=labels("build-group")) as dag:
        scans = Task(
            name="scan",
            template=scan,
            arguments={"shard": "{{item}}"},
            with_param=refs.shards,
        )
        if commit is not None:
            scans >> Task(name="commit", template=commit, arguments={"group": refs.group})
    return dag


def _committer(opts: BuildOptions, name: str, args: list[str], **kwargs: Any) -> Container:
    """A step that commits groups: on-demand, one per target repo, transient failures retried.

    Only transient failures are retried (the mutex is held through every backoff); conflicts
    with other writers are rebased inside the CLI, and re-running a committed group is a no-op
    (the CLI checks the commit metadata).
    """
    return _vcube(
        opts,
        name,
        args,
        cpu="1",
        memory="2Gi",
        memory_limit="3Gi",
        outputs=[_scalar_output("refs", "chunk refs written by this step")],
        node_selector=opts.on_demand_selector,
        synchronization=_commit_mutex(),
        retry_strategy=_retry(5, "1s", factor=4),
        metrics=Metrics(
            prometheus=[_counter("vcube_refs_committed", "Chunk refs committed by vcube", "refs")]
        ),
        **kwargs,
    )


def build_group_template(opts: BuildOptions | None = None) -> WorkflowTemplate:
    """The standalone ``vcube-build-group``: redo one group by hand (scan its shards, commit).

    A build does not reference it: each child carries the same body inline (``_child``), so a
    template synced mid-build never changes the groups of a running build.
    """
    opts = opts or BuildOptions()
    with WorkflowTemplate(
        name=opts.group_name,
        annotations={
            "workflows.argoproj.io/description": (
                "One commit group of a vcube build: scan its shards in parallel, then commit "
                "the group once. vcube-build carries the same steps inline; submit this to redo "
                "one group by hand."
            ),
        },
        entrypoint="group",
        active_deadline_seconds=opts.group_deadline_seconds,
        arguments=[
            _spec_parameter(opts),
            Parameter(name="group", value="", description="commit group id, e.g. 012"),
            Parameter(
                name="shards",
                value="[]",
                description='JSON list of the group\'s shard ids, e.g. ["012-01", "012-04"]',
            ),
        ],
        **_workflow_spec_defaults(opts, "build-group"),
    ) as wt:
        _group_templates(opts, STANDALONE)
    return wt


def _child(opts: BuildOptions) -> dict[str, Any]:
    """The child Workflow one ``group`` step applies: its whole spec inline.

    Inline rather than ``workflowTemplateRef``: Argo resolves a reference when the child is
    created, so a template synced mid-build would run later groups on another image and spec.
    The parent's own spec is pinned (``status.storedWorkflowTemplateSpec``), and with it this
    manifest. The name is deterministic, so a retried step re-applies the same child instead of
    creating a second one.
    """
    with WorkflowTemplate(
        name="child",
        entrypoint="group",
        active_deadline_seconds=opts.group_deadline_seconds,
        arguments=[
            Parameter(name="spec", value=SPEC),
            Parameter(name="group", value=INLINE.group),
            Parameter(name="shards", value=INLINE.shards),
        ],
        **_workflow_spec_defaults(opts, "build-group"),
    ) as wt:
        _group_templates(opts, INLINE)
    spec = _finish(wt)["spec"]
    # The image is the group step's input, which kustomize's `images:` sets like every other
    # image of the template (k8s/base/kustomizeconfig.yaml): a string manifest is opaque to it.
    for t in spec["templates"]:
        if "container" in t:
            t["container"]["image"] = "{{inputs.parameters.image}}"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            # Workflow names end up in label values (63 characters at most).
            "name": "{{workflow.name}}-g{{inputs.parameters.group}}",
            "labels": {
                **labels("build-group"),
                PARENT_LABEL: "{{workflow.name}}",
            },
            "annotations": {"workflows.argoproj.io/title": "group {{inputs.parameters.group}}"},
        },
        "spec": spec,
    }


def build_template(opts: BuildOptions | None = None) -> WorkflowTemplate:
    """The parent ``vcube-build``: plan → init → one child workflow per group → validate."""
    opts = opts or BuildOptions()
    # Rendered before entering this template's context: Hera would add the child's steps here.
    child = yaml.safe_dump(_child(opts), sort_keys=False)
    with WorkflowTemplate(
        name=opts.name,
        annotations={
            "workflows.argoproj.io/description": (
                "Build or update a virtual Zarr datacube (Icechunk) from a dataset spec: "
                "plan, init, one child workflow per commit group (scan shards, commit), validate."
            ),
        },
        entrypoint="build",
        on_exit="exit",
        parallelism=opts.parallelism,
        active_deadline_seconds=opts.active_deadline_seconds,
        synchronization=_build_mutex(),
        arguments=[
            _spec_parameter(opts),
            Parameter(
                name="groups",
                value="",
                description=(
                    "Comma-separated commit group ids to build (e.g. 000,001); empty = all. "
                    "Groups already committed with the same inputs are no-ops."
                ),
            ),
        ],
        **_workflow_spec_defaults(opts, "build"),
    ) as wt:
        plan = _vcube(
            opts,
            "plan",
            ["plan", SPEC, "--groups", "{{workflow.parameters.groups}}"],
            cpu="500m",
            memory="1Gi",
            memory_limit="2Gi",
            display="plan",
            outputs=[
                Parameter(
                    name="groups",
                    value_from=ValueFrom(path=f"{OUTPUTS_DIR}/groups.json"),
                    description='[{"group": id, "shards": [ids]}]: ids only, no file lists',
                ),
                _scalar_output("todo", "groups that need work: 0 = nothing to scan or commit"),
            ],
            node_selector=opts.on_demand_selector,
            retry_strategy=_retry(2, "30s"),
            active_deadline_seconds=3600,
        )
        init = _vcube(
            opts,
            "init",
            ["init", SPEC],
            cpu="1",
            memory="2Gi",
            memory_limit="3Gi",
            display="init-cube",
            node_selector=opts.on_demand_selector,
            synchronization=_commit_mutex(),
            retry_strategy=_retry(5, "1s", factor=4),
            active_deadline_seconds=3600,
        )
        launch = Resource(
            name="group",
            action="apply",
            set_owner_reference=True,
            manifest=child,
            success_condition="status.phase == Succeeded",
            failure_condition="status.phase in (Failed, Error)",
            inputs=[
                Parameter(name="group", description="commit group id, e.g. 012"),
                Parameter(name="shards", description="JSON list of the group's shard ids"),
                Parameter(
                    name="image",
                    value=opts.image,
                    description="the child's worker image (kustomize `images:` sets its tag)",
                ),
                Parameter(
                    name="scan-capacity",
                    value="spot",
                    enum=["spot", "on-demand"],
                    description="Karpenter capacity type of the child's scan pods",
                ),
            ],
            outputs=[
                Parameter(
                    name="workflow",
                    value_from=ValueFrom(json_path="{.metadata.name}"),
                    description="the child workflow that scanned and committed this group",
                )
            ],
            labels=labels("group"),
            annotations={DISPLAY_NAME: "group-{{inputs.parameters.group}}"},
            node_selector=opts.on_demand_selector,
            # Applies and watches Workflows: its own identity, not the workers'.
            service_account_name=LAUNCHER_SERVICE_ACCOUNT,
            # Only a lost waiting pod is retried: it re-applies the same child (no second one)
            # and waits again. A failed child fails the step.
            retry_strategy=_retry(2, "30s", transient_only=False),
        )
        commit_all = _committer(
            opts,
            "commit-all",
            [
                "commit-all",
                SPEC,
                "--groups",
                "{{workflow.parameters.groups}}",
                "--run-id",
                RUN_ID,
                "--poll",
                "5",
            ],
            display="commit-all",
            # It lives as long as the fan-out; the workflow's deadline bounds it.
            active_deadline_seconds=opts.active_deadline_seconds,
        )
        scans_done = _vcube(
            opts,
            "scans-done",
            ["scans-done", SPEC, "--run-id", RUN_ID],
            cpu="100m",
            memory="256Mi",
            memory_limit="512Mi",
            display="scans-done",
            node_selector=opts.on_demand_selector,
            retry_strategy=_retry(5, "5s"),
            active_deadline_seconds=600,
        )
        validate = _vcube(
            opts,
            "validate",
            ["validate", SPEC, "--groups", "{{workflow.parameters.groups}}"],
            cpu="1",
            memory="2Gi",
            memory_limit="3Gi",
            display="validate",
            node_selector=opts.on_demand_selector,
            retry_strategy=_retry(2, "30s"),
            active_deadline_seconds=3 * 3600,
        )
        stop = _vcube(
            opts,
            "stop-children",
            ["stop-children", "{{workflow.name}}"],
            cpu="100m",
            memory="256Mi",
            memory_limit="512Mi",
            display="stop-children",
            node_selector=opts.on_demand_selector,
            service_account_name=LAUNCHER_SERVICE_ACCOUNT,
            retry_strategy=_retry(3, "10s"),
            active_deadline_seconds=600,
        )
        status = _vcube(
            opts,
            "status",
            ["status", SPEC, "--plot", f"{OUTPUTS_DIR}/status.png"],
            cpu="500m",
            memory="1Gi",
            memory_limit="2Gi",
            display="status",
            outputs=[
                Artifact(
                    name="status",
                    path=f"{OUTPUTS_DIR}/status.png",
                    optional=True,
                    archive=NoneArchiveStrategy(),
                )
            ],
            node_selector=opts.on_demand_selector,
            retry_strategy=_retry(2, "10s"),
            active_deadline_seconds=600,
        )
        # Nothing to do (every listed group committed with its current inputs): plan and
        # validate only. Otherwise the scans (one child per group) and the one committer run
        # side by side; the committer commits each group as its scans complete and finishes
        # once scans-done marks the fan-out over. A failed group does not stop the others
        # (failFast false): every group that can be committed is, and the build still fails,
        # naming the failed group.
        todo = "{{tasks.plan.outputs.parameters.todo}} > 0"
        with DAG(name="build", labels=labels("build"), fail_fast=False):
            Task(name="plan", template=plan)
            Task(name="init", template=init, depends="plan", when=todo)
            Task(
                name="group",
                template=launch,
                arguments={"group": "{{item.group}}", "shards": "{{item.shards}}"},
                with_param="{{tasks.plan.outputs.parameters.groups}}",
                depends="init",
            )
            Task(name="commit-all", template=commit_all, depends="init", when=todo)
            Task(
                name="scans-done",
                template=scans_done,
                depends="group.Succeeded || group.Failed || group.Errored",
            )
            Task(name="validate", template=validate, depends="commit-all")
        # Children outlive a stopped or failed parent (owner references cascade only on
        # deletion): the exit handler stops every child still running. It also draws the
        # cube's state (groups x shards) as the build's output artifact, whatever the outcome.
        # Steps, not a DAG: a workflow being stopped fails a DAG at once, even its exit
        # handler's, and completes without waiting for the handler's pods (v4.0.5
        # assessDAGPhase; seen on the real controller).
        with Steps(name="exit", labels=labels("build")) as exit_steps, exit_steps.parallel():
            Step(
                name="stop-children",
                template=stop,
                when="{{workflow.status}} != Succeeded",
            )
            Step(name="status", template=status, continue_on=ContinueOn(error=True, failed=True))
    return wt


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


def _finish(wt: WorkflowTemplate) -> dict[str, Any]:
    obj = wt.to_dict()
    _set_template_annotations(obj)
    return obj


def template_dict(opts: BuildOptions | None = None) -> dict[str, Any]:
    """The parent WorkflowTemplate as the plain dict that is rendered and applied."""
    return _finish(build_template(opts))


def group_template_dict(opts: BuildOptions | None = None) -> dict[str, Any]:
    """The standalone per-group WorkflowTemplate as a plain dict."""
    return _finish(build_group_template(opts))
