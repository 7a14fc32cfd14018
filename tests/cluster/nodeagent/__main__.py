"""``python -m tests.cluster.nodeagent``: run the node agent (test infrastructure) until SIGTERM.

Example (what ``make cluster-up`` runs):
    .venv/bin/python -m tests.cluster.nodeagent --kubeconfig build/cluster/kubeconfig \\
        --workdir build/cluster/nodeagent --argoexec PATH_TO_ARGOEXEC
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .agent import Agent, AgentConfig
from .kube import Client, load_kubeconfig
from .nodes import parse_nodes


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped), as in a Docker env file."""
    out: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        out[key.strip()] = value
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m tests.cluster.nodeagent",
        description="TEST INFRASTRUCTURE: play kubelet + scheduler for a local API server, "
        "running pods' containers as processes (images are ignored).",
    )
    p.add_argument(
        "--kubeconfig", type=Path, required=True, help="admin kubeconfig of the API server"
    )
    p.add_argument(
        "--workdir", type=Path, required=True, help="pod volumes, container logs, launch specs"
    )
    p.add_argument(
        "--argoexec", required=True, help="the argoexec binary run for `argoexec` commands"
    )
    p.add_argument(
        "--nodes",
        default="spot,on-demand,system",
        help="node pools to register, POOL[=COUNT],... (pools: spot, on-demand, system); "
        "nodes are named POOL-INDEX (default: %(default)s)",
    )
    p.add_argument(
        "--node-cpu", default="4", help="allocatable CPU per node (default: %(default)s)"
    )
    p.add_argument(
        "--node-memory", default="16Gi", help="allocatable memory per node (default: %(default)s)"
    )
    p.add_argument("--node-pods", default="110", help="pods per node (default: %(default)s)")
    p.add_argument(
        "--pod-env-file",
        type=Path,
        help="KEY=VALUE lines added to every container's env (spec env wins): the one mocked part, "
        "standing in for EKS IRSA credentials (e.g. the local S3 server's keys)",
    )
    p.add_argument(
        "--kubelet-port",
        type=int,
        default=10250,
        help="kubelet endpoint on the host IP: kubectl logs, Argo's kill-by-exec; 0: none "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--default-workdir",
        default="/",
        help="working directory of containers without workingDir, standing in for the image's "
        "WORKDIR (default: %(default)s)",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT, then kill every pod process and exit."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if os.geteuid() != 0:
        raise SystemExit("the node agent needs root (mount and PID namespaces per container)")
    argoexec = Path(args.argoexec)
    if not os.access(argoexec, os.X_OK):
        raise SystemExit(f"--argoexec {argoexec}: not an executable file")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = load_kubeconfig(args.kubeconfig, workdir / "agent-creds")
    nodes = parse_nodes(args.nodes, cpu=args.node_cpu, memory=args.node_memory, pods=args.node_pods)
    extra_env = read_env_file(args.pod_env_file) if args.pod_env_file else {}
    cfg = AgentConfig(
        kubeconfig=kubeconfig,
        workdir=workdir,
        argoexec=str(argoexec.resolve()),
        venv_bin=str(Path(sys.executable).parent),
        nodes=nodes,
        extra_env=extra_env,
        kubelet_port=args.kubelet_port,
        default_workdir=args.default_workdir,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent = Agent(cfg, Client(kubeconfig))
    agent.start()
    stop.wait()
    logging.getLogger("nodeagent").info("stopping: killing pod processes")
    agent.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
