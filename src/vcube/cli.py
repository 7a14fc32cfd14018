"""What does a person or a pod type? The `vcube` command: the same verbs on a laptop and in Argo.

Machine-readable JSON goes to stdout (and to --outputs-dir for Argo output parameters),
progress and logs to stderr. Exit codes: 0 success, 1 the data or the cube is at fault,
2 bad usage or spec, 3 storage unreachable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vcube import __version__

EXIT_FAILED, EXIT_USAGE, EXIT_STORAGE, EXIT_INTERRUPTED = 1, 2, 3, 130
log = logging.getLogger("vcube")


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, with the `fields` passed in `extra` (what log shippers want)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        return json.dumps(out, default=str)


# Words of the object-store clients (obstore/object_store, Icechunk, h5py over a reader) when
# the network or the server failed rather than the data: such a failure is exit 3 (retried).
_NETWORK_WORDS = (
    "connection refused",
    "connection reset",
    "connection closed",
    "connection aborted",
    "broken pipe",
    "error sending request",
    "dispatch failure",
    "timed out",
    "timeout",
    "dns error",
    "service unavailable",
    "slowdown",
    "io error",
    "network",
)


def _is_storage_failure(e: BaseException) -> bool:
    """An unexpected exception that is the store's or the network's fault, not the data's.

    Walks the exception chain: the standard connection errors, vcube's remote read errors, and
    the object-store libraries' errors whose message says the request itself failed.
    """
    from vcube.remote import RemoteReadError

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (RemoteReadError, ConnectionError, TimeoutError)):
            return True
        module = type(cur).__module__ or ""
        if module.split(".")[0] in ("obstore", "icechunk", "_icechunk_python", "botocore"):
            text = str(cur).lower()
            if any(w in text for w in _NETWORK_WORDS):
                return True
        cur = cur.__cause__ or cur.__context__
    return False


def _setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def _grid(text: str) -> tuple[int, int]:
    try:
        a, b = text.lower().split("x")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NLATxNLON like 48x40, got {text!r}") from None


def _ids(text: str) -> list[str] | None:
    """A comma-separated id list; empty means all."""
    return [g.strip() for g in text.split(",") if g.strip()] or None


def _progress_writer() -> Callable[[int, int], None] | None:
    """Argo shows task progress from the file named by ARGO_PROGRESS_FILE ("N/M")."""
    path = os.environ.get("ARGO_PROGRESS_FILE")
    if not path:
        return None

    def write(done: int, total: int) -> None:
        # Whole or not at all: a reader (Argo's executor, a test) never sees it half-written
        # (write_text truncates first, and an empty file was read once between the two).
        tmp = Path(f"{path}.{os.getpid()}.tmp")
        tmp.write_text(f"{done}/{total}")
        tmp.replace(path)

    return write


def _emit(summary: dict[str, Any], outputs_dir: str | None) -> None:
    print(json.dumps(summary, sort_keys=True, default=str))
    if outputs_dir:
        out = Path(outputs_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, sort_keys=True, default=str))
        for k, v in summary.items():
            if isinstance(v, (int, float, str, bool)):
                (out / k).write_text(str(v).lower() if isinstance(v, bool) else str(v))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcube", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"vcube {__version__}")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("VCUBE_LOG_FORMAT", "text"),
        help="log lines on stderr (env VCUBE_LOG_FORMAT; pods use json)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str, spec: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        if spec:
            sp.add_argument("spec", metavar="SPEC", help="dataset spec file (YAML)")
            sp.add_argument(
                "--outputs-dir",
                default=os.environ.get("VCUBE_OUTPUTS_DIR"),
                help="also write summary.json and one file per scalar here (Argo outputs)",
            )
        return sp

    s = cmd("sample", "write a synthetic archive with the OAE atlas layout", spec=False)
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--polygons", type=int, default=2)
    s.add_argument("--dates", type=int, default=4, help="injection months (1-4)")
    s.add_argument("--months", type=int, default=12)
    s.add_argument("--grid", type=_grid, default=(48, 40), help="NLATxNLON (default 48x40)")
    s.add_argument("--levels", type=int, default=60)
    s.add_argument("--seed", type=int, default=0)

    s = cmd("plan", "list the source and write the plan to the work area (opens no file)")
    s.add_argument(
        "--allow-missing",
        action="store_true",
        help="leave the chunks of planned-but-missing files empty instead of failing",
    )
    s.add_argument(
        "--groups", default="", help="only these groups in groups.json (the plan is whole)"
    )
    cmd("init", "create or grow the Icechunk cube to the planned shape (idempotent)")
    s = cmd("scan", "scan one shard's files (HDF5 metadata only) into the work area")
    s.add_argument(
        "--shard",
        required=True,
        help="a shard id, or a comma-separated list scanned in turn (one pod of packed work)",
    )
    s = cmd("commit", "write one group into the cube and commit it (no-op if already committed)")
    s.add_argument("--group", required=True)
    s = cmd(
        "commit-all",
        "the fan-in's one committer: commit each group needing work once all its shards are "
        "scanned, while scans go on",
    )
    s.add_argument(
        "--run-id",
        help="wait for more scans until `vcube scans-done --run-id` marks this build's scans over "
        "(default: commit what is complete now)",
    )
    s.add_argument("--poll", type=float, default=5.0, help="seconds between looks (default 5)")
    s.add_argument("--groups", default="", help="only these groups (default: all needing work)")
    s = cmd("scans-done", "mark a build's scan fan-out as over (its committer then finishes)")
    s.add_argument("--run-id", required=True, help="the id given to `commit-all` (Argo: uid)")
    s = cmd("validate", "check dims, chunks and sampled values against the source files")
    s.add_argument("--samples", type=int, default=3, help="files compared value by value")
    s.add_argument("--groups", default="", help="validate only these groups (default: all)")
    s = cmd("run", "the whole build on this machine: plan, init, scan, commit, validate")
    s.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    s.add_argument("--groups", default="", help="comma-separated group ids (default: all)")
    s.add_argument("--allow-missing", action="store_true")
    s.add_argument("--samples", type=int, default=3)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s = cmd(
        "status",
        "per group: committed / failed / changed / waiting / scanning / pending; "
        "an Argo workflow's progress",
    )
    s.add_argument("--workflow", help="also show this Argo workflow's phase and progress")
    s.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw groups x shards coloured by state (needs the 'plot' extra: matplotlib)",
    )
    cmd("info", "print the Python snippet that opens the cube")
    s = cmd(
        "stop-children",
        "stop every unfinished child workflow of an Argo build (its exit handler; in a pod)",
        spec=False,
    )
    s.add_argument("parent", metavar="WORKFLOW", help="the parent vcube-build workflow's name")
    s.add_argument("--outputs-dir", default=os.environ.get("VCUBE_OUTPUTS_DIR"))
    return p


def _dispatch(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.command == "sample":
        from vcube.sample import write_sample_archive

        files = write_sample_archive(
            args.dir,
            polygons=args.polygons,
            dates=args.dates,
            months=args.months,
            grid=args.grid,
            levels=args.levels,
            seed=args.seed,
            progress=sys.stderr.isatty(),
        )
        return {"step": "sample", "dir": str(args.dir), "files": len(files)}

    if args.command == "stop-children":
        from vcube import argo

        return argo.stop_children(args.parent)

    from vcube import spec as spec_mod
    from vcube import steps
    from vcube.places import Places
    from vcube.repo import opening_snippet

    spec = spec_mod.load_spec(args.spec)
    places = Places.of(spec)  # resolved once; the repo opened once, by the first step that needs it
    if args.command == "plan":
        out = Path(args.outputs_dir) if args.outputs_dir else None

        def write_listing(groups: list[dict[str, Any]]) -> None:
            if out:  # Argo fans out over it: ids only
                out.mkdir(parents=True, exist_ok=True)
                (out / "groups.json").write_text(json.dumps(groups))

        return steps.plan_step(
            places,
            allow_missing=args.allow_missing,
            only=_ids(args.groups),
            on_listing=write_listing,
        )
    if args.command == "init":
        return steps.init_step(places)
    if args.command == "scan":
        return steps.scan_shards_step(places, args.shard, on_file=_progress_writer())
    if args.command == "commit":
        return steps.commit_step(places, args.group, on_file=_progress_writer())
    if args.command == "commit-all":
        progress = _progress_writer()

        def on_group(done: int, total: int) -> None:
            if progress:
                progress(done, total)
            if done:
                log.info("commit-all: %d/%d groups", done, total)

        return steps.commit_all_step(
            places, groups=_ids(args.groups), run_id=args.run_id, poll=args.poll, on_group=on_group
        )
    if args.command == "scans-done":
        return steps.scans_done_step(places, args.run_id)
    if args.command == "validate":
        return steps.validate_step(places, samples=args.samples, groups=_ids(args.groups))
    if args.command == "status":
        summary = steps.status_step(places)
        print(
            "status: "
            + ", ".join(f"{n} {state}" for state, n in summary["counts"].items())
            + f" (of {len(summary['groups'])} groups)",
            file=sys.stderr,
        )
        if args.plot:
            from vcube.status import plot_status

            plot_status(summary, args.plot, title=f"{spec.name}: {len(summary['groups'])} groups")
            summary["plot"] = args.plot
        if args.workflow:
            from vcube import argo

            summary["workflow"] = argo.workflow_progress(args.workflow)
        return summary
    if args.command == "info":
        print(opening_snippet(spec, places.source, places.target))
        return None
    if args.command == "run":
        from vcube.run_local import run_local

        summary = run_local(
            places,
            workers=args.workers,
            groups=_ids(args.groups),
            allow_missing=args.allow_missing,
            samples=args.samples,
            progress=not args.quiet,
        )
        print(
            f"\nvcube: {summary['files']} files, {summary['refs']} chunk refs written, "
            f"{summary['commits']} commits, {summary['seconds']} s"
            + (" (the cube was already up to date)" if summary["up_to_date"] else ""),
            file=sys.stderr,
        )
        print(
            "Open the cube with xarray:\n\n"
            + opening_snippet(spec, places.source, places.target)
            + "\n",
            file=sys.stderr,
        )
        return summary
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_format)
    # Icechunk warns about local-filesystem commits on every open; the local executor commits
    # from one process, so only errors are worth a line. Set ICECHUNK_LOG to see more.
    os.environ.setdefault("ICECHUNK_LOG", "error")
    from vcube.argo import ArgoError
    from vcube.layout import CommitError
    from vcube.plan import PlanError
    from vcube.scan import ScanError
    from vcube.spec import SpecError
    from vcube.status import PlotUnavailable
    from vcube.storage import StorageError, first_line
    from vcube.template import TemplateError
    from vcube.validate import ValidationFailed

    try:
        summary = _dispatch(args)
    except KeyboardInterrupt:
        print("vcube: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SpecError, PlotUnavailable) as e:
        print(f"vcube: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (StorageError, ArgoError) as e:
        print(f"vcube: {e}", file=sys.stderr)
        return EXIT_STORAGE
    except (PlanError, ScanError, TemplateError, CommitError, ValidationFailed) as e:
        if e.__cause__ is not None and _is_storage_failure(e.__cause__):
            print(f"vcube: {args.command}: storage unreachable: {e}", file=sys.stderr)
            return EXIT_STORAGE
        print(f"vcube: {args.command} failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:
        if os.environ.get("VCUBE_DEBUG"):
            raise
        if _is_storage_failure(e):
            print(f"vcube: {args.command}: storage unreachable: {first_line(e)}", file=sys.stderr)
            return EXIT_STORAGE
        print(
            f"vcube: {args.command} failed: {type(e).__name__}: {first_line(e, '')} "
            "(set VCUBE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if summary is not None:
        if args.log_format == "json":  # pods: the summary as a structured log line too
            log.info("%s done", args.command, extra={"fields": summary})
        _emit(summary, getattr(args, "outputs_dir", None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
