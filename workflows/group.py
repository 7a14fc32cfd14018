"""What runs for one work item of a build? Its scan pods in parallel, then (by hand) a commit.

The same body serves twice. ``vcube-build-group`` is a WorkflowTemplate of its own, to redo
one group by hand: scan per shard, then commit the group. Inside a build, the parent's
``group`` step applies a child Workflow with the scans inline (`child_workflow`) per work item:
a group (a scan pod per shard), or pods of shards with little to scan packed together
(`vcube.packing`); the parent's one ``commit-all`` commits each group.

Sizing assumption (per pod; see README.md for the numbers behind it): a scan reads HDF5
metadata only (~40 ms CPU and ~0.3 MB per file, 180 files per shard): 0.5 CPU, 512 Mi request /
1 Gi limit. Runs on spot capacity, retried on node loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hera.workflows import DAG, Parameter, Task, WorkflowTemplate
from hera.workflows.models import Metrics, Toleration

from vcube.argo import PARENT_LABEL
from workflows import parts


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

    def scan_display(self) -> str:
        """The scan node's display name: ``scan-012-04``, or for a pod of packed shards
        ``scan-012-04-to-015-01`` (its first and last shard: commas and a long list are not
        allowed in a display name). Argo's expression language, whose ``split`` fails on the
        parent's missing input, so the parent leaves the tag to the child (checked with
        Argo v4.0.5's own `util/template.Replace`: a sprig function would have returned "")."""
        shard = "inputs.parameters.shard"
        # The parent substitutes the child's manifest as raw YAML text, then holds it as JSON:
        # the tag must read the same in the text as in the value. So no <, > or & (Go escapes
        # them in JSON: "failed to unmarshall JSON expression"), no ": " or " #" (the YAML
        # would quote the string and double its quotes), written on one line (child_workflow
        # dumps without folding). Both seen on the real controller, which errored every group.
        expr = f"let s=split({shard},',');len(s)==1?s[0]:s[0]+'-to-'+s[-1]"
        return f"scan-{{{{={expr}}}}}"


STANDALONE = _GroupRefs(
    group="{{workflow.parameters.group}}", shards="{{workflow.parameters.shards}}", inline=False
)
INLINE = _GroupRefs(
    group="{{inputs.parameters.group}}",
    shards="{{inputs.parameters.shards}}",
    inline=True,
    scan_capacity="{{inputs.parameters.scan-capacity}}",
)


def _group_templates(opts: parts.BuildOptions, refs: _GroupRefs) -> DAG:
    """scan per shard (fan-out), then (standalone only) commit: the body of one group.

    Inside a build the group's commit is the parent's ``commit-all``; a group redone by hand
    (the standalone template) commits itself.
    """
    shard = refs.own_input("shard")
    scan = parts.vcube_container(
        opts,
        "scan",
        ["scan", parts.SPEC, "--shard", shard],
        inputs=[
            Parameter(
                name="shard",
                description="shard id, e.g. 012-04, or packed shards: a comma-separated list",
            )
        ],
        outputs=[parts.scalar_output("files", "files of the shards this pod scanned")],
        cpu="500m",
        memory="512Mi",
        memory_limit="1Gi",
        display=refs.scan_display(),
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
        retry_strategy=parts.retry(5, "15s"),
        metrics=Metrics(
            prometheus=[
                parts.counter_metric(
                    "vcube_files_scanned", "Source files scanned by vcube", "files"
                )
            ]
        ),
        active_deadline_seconds=3600,
    )
    commit = None
    if not refs.inline:
        group = refs.own_input("group")
        commit = parts.committer(
            opts,
            "commit",
            ["commit", parts.SPEC, "--group", group],
            display=f"commit-{group}",
            inputs=[Parameter(name="group", description="commit group id, e.g. 012")],
            active_deadline_seconds=3600,
        )
    with DAG(name="group", labels=parts.labels("build-group")) as dag:
        scans = Task(
            name="scan",
            template=scan,
            arguments={"shard": "{{item}}"},
            with_param=refs.shards,
        )
        if commit is not None:
            scans >> Task(name="commit", template=commit, arguments={"group": refs.group})
    return dag


def build_group_template(opts: parts.BuildOptions | None = None) -> WorkflowTemplate:
    """The standalone ``vcube-build-group``: redo one group by hand (scan its shards, commit).

    A build does not reference it: each child carries the same body inline (`child_workflow`),
    so a template synced mid-build never changes the groups of a running build.
    """
    opts = opts or parts.BuildOptions()
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
            parts.spec_parameter(opts),
            Parameter(name="group", value="", description="commit group id, e.g. 012"),
            Parameter(
                name="shards",
                value="[]",
                description='JSON list of the group\'s shard ids, e.g. ["012-01", "012-04"]',
            ),
        ],
        **parts.workflow_spec_defaults(opts, "build-group"),
    ) as wt:
        _group_templates(opts, STANDALONE)
    return wt


def child_workflow(opts: parts.BuildOptions) -> dict[str, Any]:
    """The child Workflow one ``group`` step of the parent applies: its whole spec inline.

    Inline rather than ``workflowTemplateRef``: Argo resolves a reference when the child is
    created, so a template synced mid-build would run later groups on another image and spec.
    The parent's own spec is pinned (``status.storedWorkflowTemplateSpec``), and with it this
    manifest. The name is deterministic, so a retried step re-applies the same child instead of
    creating a second one. Its values are the parent ``group`` step's inputs.
    """
    with WorkflowTemplate(
        name="child",
        entrypoint="group",
        active_deadline_seconds=opts.group_deadline_seconds,
        arguments=[
            Parameter(name="spec", value=parts.SPEC),
            Parameter(name="group", value=INLINE.group),
            Parameter(name="shards", value=INLINE.shards),
        ],
        **parts.workflow_spec_defaults(opts, "build-group"),
    ) as wt:
        _group_templates(opts, INLINE)
    spec = parts.finish(wt)["spec"]
    # The image is the group step's input, which kustomize's `images:` sets like every other
    # image of the template (k8s/base/kustomizeconfig.yaml): a string manifest is opaque to it.
    for t in spec["templates"]:
        if "container" in t:
            t["container"]["image"] = "{{inputs.parameters.image}}"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            # Workflow names end up in label values (63 characters at most). The label is a
            # group id, or a packed item's p0003 (vcube.packing).
            "name": "{{workflow.name}}-g{{inputs.parameters.group}}",
            "labels": {
                **parts.labels("build-group"),
                PARENT_LABEL: "{{workflow.name}}",
            },
            "annotations": {"workflows.argoproj.io/title": "work item {{inputs.parameters.group}}"},
        },
        "spec": spec,
    }


def group_template_dict(opts: parts.BuildOptions | None = None) -> dict[str, Any]:
    """The standalone per-group WorkflowTemplate as a plain dict."""
    return parts.finish(build_group_template(opts))
