"""What runs for a whole build? ``vcube-build``: plan → init → scans, one child workflow per
group, while one committer commits each group as its scans complete → validate.

Argo parameters carry ids only: ``plan`` writes ``groups.json`` (``[{"group", "shards"}]``),
the parent fans out over it: one item per group needing work, or, for shards with little to
scan (a new month), pods of packed shards (`vcube.packing`: ``{"group": "p0003", "shards":
["A,B,C", ...]}``). Each group's scans run as their own child Workflow
(`workflows.group`) because one Workflow holding all 690 atlas groups would carry thousands of
nodes, near Argo's 1 MiB object limit even gzip-compressed (bench/scale.py, README "Scale").
The fan-in is one long-lived ``commit-all`` pod (README "Fan-in"): a pod per commit behind a
mutex spent ~25 s of pod lifecycle per group, 690 times in a row.

Sizing assumptions (per pod; see README.md for the numbers behind them):
- plan lists the source prefix (~500 k keys for the atlas): 0.5 CPU, 1 Gi.
- init reads one template file's metadata and writes coordinates: 1 CPU, 2 Gi.
- commit-all commits each group's refs (~24 k refs, one commit per group) for the whole
  fan-out: 1 CPU, 2 Gi. On-demand nodes, one per target repo (a mutex); conflicts are rebased
  inside the CLI.
- validate samples values through the cube and from the sources: 1 CPU, 2 Gi.
"""

from __future__ import annotations

from typing import Any

import yaml
from hera.workflows import (
    DAG,
    Artifact,
    NoneArchiveStrategy,
    Parameter,
    Resource,
    Step,
    Steps,
    Task,
    WorkflowTemplate,
)
from hera.workflows.models import ContinueOn, Mutex, Synchronization, ValueFrom

from workflows import parts
from workflows.group import child_workflow

# Names this build's fan-out for commit-all and scans-done (a retried committer keeps it).
RUN_ID = "{{workflow.uid}}"
BUILD_MUTEX = "vcube-build"
LAUNCHER_SERVICE_ACCOUNT = "vcube-launcher"


def _build_mutex() -> Synchronization:
    # One build per cube at a time, whoever submits it (make submit, the CronWorkflow, the
    # Sensor): a second build waits Pending until the first finishes. Workflow-level, so Argo
    # substitutes the global parameter into the name before taking the lock.
    return Synchronization(mutexes=[Mutex(name=f"{BUILD_MUTEX}-{parts.SPEC}")])


def build_template(opts: parts.BuildOptions | None = None) -> WorkflowTemplate:
    """The parent ``vcube-build``: plan → init → one child workflow per group → validate."""
    opts = opts or parts.BuildOptions()
    # Rendered before entering this template's context: Hera would add the child's steps here.
    # Unfolded: the parent substitutes expression tags in this text before parsing it.
    child = yaml.safe_dump(child_workflow(opts), sort_keys=False, width=1 << 30)
    with WorkflowTemplate(
        name=opts.name,
        annotations={
            "workflows.argoproj.io/description": (
                "Build or update a virtual Zarr datacube (Icechunk) from a dataset spec: "
                "plan, init, one child workflow per work item (a commit group's shards, or "
                "small scans packed together) scanning while one committer commits each group, "
                "validate."
            ),
        },
        entrypoint="build",
        on_exit="exit",
        parallelism=opts.parallelism,
        active_deadline_seconds=opts.active_deadline_seconds,
        synchronization=_build_mutex(),
        arguments=[
            parts.spec_parameter(opts),
            Parameter(
                name="groups",
                value="",
                description=(
                    "Comma-separated commit group ids to build (e.g. 000,001); empty = all. "
                    "Groups already committed with the same inputs are no-ops."
                ),
            ),
        ],
        **parts.workflow_spec_defaults(opts, "build"),
    ) as wt:
        plan = parts.vcube_container(
            opts,
            "plan",
            ["plan", parts.SPEC, "--groups", "{{workflow.parameters.groups}}"],
            outputs=[
                Parameter(
                    name="groups",
                    value_from=ValueFrom(path=f"{parts.OUTPUTS_DIR}/groups.json"),
                    description='work items [{"group": id, "shards": [ids]}], ids only; a '
                    'packed item: {"group": "p0003", "shards": ["A,B,C", ...]}',
                ),
                parts.scalar_output("todo", "groups that need work: 0 = nothing to scan or commit"),
            ],
            cpu="500m",
            memory="1Gi",
            memory_limit="2Gi",
            display="plan",
            node_selector=opts.on_demand_selector,
            retry_strategy=parts.retry(2, "30s"),
            active_deadline_seconds=3600,
        )
        init = parts.vcube_container(
            opts,
            "init",
            ["init", parts.SPEC],
            cpu="1",
            memory="2Gi",
            memory_limit="3Gi",
            display="init-cube",
            node_selector=opts.on_demand_selector,
            synchronization=parts.commit_mutex(),
            retry_strategy=parts.retry(5, "1s", factor=4),
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
                Parameter(
                    name="group",
                    description="work item: a commit group id (012) or packed scans (p0003)",
                ),
                Parameter(
                    name="shards",
                    description="JSON list of what each scan pod scans: a shard id, or a "
                    "comma-separated list of packed shards",
                ),
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
                    description="the child workflow that scanned this work item",
                )
            ],
            labels=parts.labels("group"),
            annotations={parts.DISPLAY_NAME: "group-{{inputs.parameters.group}}"},
            node_selector=opts.on_demand_selector,
            # Applies and watches Workflows: its own identity, not the workers'.
            service_account_name=LAUNCHER_SERVICE_ACCOUNT,
            # Only a lost waiting pod is retried: it re-applies the same child (no second one)
            # and waits again. A failed child fails the step.
            retry_strategy=parts.retry(2, "30s", transient_only=False),
        )
        commit_all = parts.committer(
            opts,
            "commit-all",
            [
                "commit-all",
                parts.SPEC,
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
        scans_done = parts.vcube_container(
            opts,
            "scans-done",
            ["scans-done", parts.SPEC, "--run-id", RUN_ID],
            cpu="100m",
            memory="256Mi",
            memory_limit="512Mi",
            display="scans-done",
            node_selector=opts.on_demand_selector,
            retry_strategy=parts.retry(5, "5s"),
            active_deadline_seconds=600,
        )
        validate = parts.vcube_container(
            opts,
            "validate",
            ["validate", parts.SPEC, "--groups", "{{workflow.parameters.groups}}"],
            cpu="1",
            memory="2Gi",
            memory_limit="3Gi",
            display="validate",
            node_selector=opts.on_demand_selector,
            retry_strategy=parts.retry(2, "30s"),
            active_deadline_seconds=3 * 3600,
        )
        stop = parts.vcube_container(
            opts,
            "stop-children",
            ["stop-children", "{{workflow.name}}"],
            cpu="100m",
            memory="256Mi",
            memory_limit="512Mi",
            display="stop-children",
            node_selector=opts.on_demand_selector,
            service_account_name=LAUNCHER_SERVICE_ACCOUNT,
            retry_strategy=parts.retry(3, "10s"),
            active_deadline_seconds=600,
        )
        status = parts.vcube_container(
            opts,
            "status",
            ["status", parts.SPEC, "--plot", f"{parts.OUTPUTS_DIR}/status.png"],
            outputs=[
                Artifact(
                    name="status",
                    path=f"{parts.OUTPUTS_DIR}/status.png",
                    optional=True,
                    archive=NoneArchiveStrategy(),
                )
            ],
            cpu="500m",
            memory="1Gi",
            memory_limit="2Gi",
            display="status",
            node_selector=opts.on_demand_selector,
            retry_strategy=parts.retry(2, "10s"),
            active_deadline_seconds=600,
        )
        # Nothing to do (every listed group committed with its current inputs): plan and
        # validate only. Otherwise the scans (one child per group) and the one committer run
        # side by side; the committer commits each group as its scans complete and finishes
        # once scans-done marks the fan-out over. A failed group does not stop the others
        # (failFast false): every group that can be committed is, and the build still fails,
        # naming the failed group.
        todo = "{{tasks.plan.outputs.parameters.todo}} > 0"
        with DAG(name="build", labels=parts.labels("build"), fail_fast=False):
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
        with Steps(name="exit", labels=parts.labels("build")) as exit_steps, exit_steps.parallel():
            Step(
                name="stop-children",
                template=stop,
                when="{{workflow.status}} != Succeeded",
            )
            Step(name="status", template=status, continue_on=ContinueOn(error=True, failed=True))
    return wt


def template_dict(opts: parts.BuildOptions | None = None) -> dict[str, Any]:
    """The parent WorkflowTemplate as the plain dict that is rendered and applied."""
    return parts.finish(build_template(opts))
