"""Submit a Workflow that runs the ``vcube-build`` template (``make submit``).

    python -m workflows.submit datasets/oae-atlas.yaml [--groups 000,001] [--parallelism N]
                                                       [--dry-run]

The spec is checked locally first (a typo fails here, not in a pod), then referenced by its
path inside the image (/app/datasets/<file>). Like ``argo submit``: with ARGO_SERVER set the
Argo Server API is used (ARGO_TOKEN, ARGO_NAMESPACE), otherwise the Kubernetes API with the
current kubeconfig. ``--dry-run`` (or DRY_RUN=1) prints the Workflow YAML and contacts nothing.
Prints the workflow name and its Argo UI URL (ARGO_UI_URL overrides the base URL).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vcube.argo import ArgoError, manifest_yaml, submit, workflow_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_DATASETS = "/app/datasets"
EXIT_USAGE, EXIT_UNREACHABLE = 2, 3


def pod_spec_path(spec: str, pod_datasets: str = IMAGE_DATASETS) -> str:
    """Map a spec given on this machine to its path inside the worker image.

    ``datasets/x.yaml`` (checked locally) -> ``/app/datasets/x.yaml``; an absolute path under
    /app/ is taken as already being a pod path (e.g. a spec mounted from a ConfigMap).
    """
    if spec.startswith("/app/"):
        return spec
    local = Path(spec)
    if not local.is_file():
        raise ValueError(f"spec file not found: {spec}")
    resolved = local.resolve()
    datasets = (REPO_ROOT / "datasets").resolve()
    if resolved.parent != datasets:
        raise ValueError(
            f"{spec}: only specs in datasets/ are baked into the image; add it there "
            "(and rebuild the image), or pass its in-pod path (/app/...)"
        )
    from vcube.spec import SpecError, load_spec

    try:
        load_spec(resolved)
    except SpecError as e:
        raise ValueError(str(e)) from None
    return f"{pod_datasets.rstrip('/')}/{resolved.name}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflows.submit", description=__doc__)
    parser.add_argument("spec", metavar="SPEC", help="datasets/<name>.yaml, or /app/... in-pod")
    parser.add_argument("--groups", default="", help="comma-separated group ids (default: all)")
    parser.add_argument("--parallelism", type=int, help="child workflows at a time (this run)")
    parser.add_argument("--namespace", default=None, help="default: ARGO_NAMESPACE / context")
    parser.add_argument(
        "--pod-datasets",
        default=IMAGE_DATASETS,
        help="where the pods find datasets/ (default: the image's /app/datasets; the local "
        "test cluster's pods run on this machine: pass $PWD/datasets)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=_truthy(os.environ.get("DRY_RUN")),
        help="print the Workflow YAML, submit nothing (env DRY_RUN=1)",
    )
    args = parser.parse_args(argv)
    groups = ",".join(g.strip() for g in args.groups.split(",") if g.strip())
    try:
        manifest = workflow_manifest(
            pod_spec_path(args.spec, args.pod_datasets),
            groups,
            namespace=args.namespace,
            parallelism=args.parallelism,
        )
    except (ValueError, ArgoError) as e:
        print(f"submit: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        print(manifest_yaml(manifest), end="")
        return 0
    try:
        done = submit(manifest)
    except ArgoError as e:
        print(e, file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"{done.name}\n{done.url}")
    print(f"submitted {done.namespace}/{done.name} via {done.via}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
