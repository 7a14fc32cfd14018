"""What is done, pending, failed? Every group of the plan, from the repo's history and work area.

Group states, in the order they are decided:

- `committed`: the branch has a commit of the group with its current inputs;
- `failed`: a shard of the group has an error marker (its last scan failed);
- `changed`: the group was committed, but from other inputs (files or template changed);
- `waiting`: every shard is scanned with the current inputs; the group waits for its commit;
- `scanning`: some shards are scanned, not all;
- `pending`: no shard is scanned yet.

Only `committed` needs no work: `needs_work` is what `plan` hands to the fan-out. Shards have
their own states (`scanned`, `failed`, `pending`) for the picture `vcube status --plot` draws.
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vcube import scan, storage, workarea
from vcube.layout import CommitError
from vcube.places import Places
from vcube.plan import Plan, PlanError, PlannedFile
from vcube.repo import History, history, inputs_digest
from vcube.spec import DatasetSpec
from vcube.template import Template, TemplateError, load_template

GROUP_STATES = ("committed", "failed", "changed", "waiting", "scanning", "pending")
SHARD_STATES = ("scanned", "failed", "pending")

# One colour per state (RGB): groups in the top strip, shards in the grid below it. Distinct
# from each other, from black text and from the white background, so a picture can be read
# back by its pixels.
COLOURS: dict[str, tuple[int, int, int]] = {
    "committed": (44, 160, 44),
    "failed": (214, 39, 40),
    "changed": (255, 127, 14),
    "waiting": (148, 103, 189),
    "scanning": (174, 199, 232),
    "pending": (199, 199, 199),
    "scanned": (31, 119, 180),
}


def needs_work(plan: Plan, hist: History, template: Template | None) -> dict[str, bool]:
    """Per group: True unless the branch has its commit with the current inputs.

    Without a template (the cube was never initialized, or init will derive a new one) every
    group needs work.
    """
    out = {}
    for g in plan.groups:
        snap = hist.groups.get(g)
        out[g] = (
            template is None
            or snap is None
            or snap.metadata.get("inputs") != inputs_digest(plan, template, g)
        )
    return out


def current_template(
    places: Places,
    plan: Plan,
    hist: History,
    shard_files: dict[str, list[PlannedFile]] | None = None,
) -> Template | None:
    """The template `init` will use for this plan, if it is the stored one (else None: init
    derives a new one, and every group's inputs may change with it). With `shard_files`, the
    plan's file lists are taken from there rather than from the work area."""
    try:
        tmpl = load_template(places.work)
        pf = workarea.template_file(places.work, places.spec, plan, shard_files)
    except (TemplateError, PlanError):
        return None
    return tmpl if template_holds(tmpl, places.spec, pf, hist) else None


def template_holds(tmpl: Template, spec: DatasetSpec, pf: PlannedFile, hist: History) -> bool:
    """Is `tmpl` still the template of the cube (`init` derives a new one if not)? It is not
    when the template file or the spec changed, or when the template file was rewritten since
    the last init read it (its revision, recorded in the init commit; a repository whose init
    did not record one is taken as unchanged)."""
    if tmpl.source_key != pf.key or tmpl.spec_digest != spec.digest():
        return False
    read = hist.init.metadata.get("template_file", pf.revision) if hist.init else pf.revision
    return bool(read == pf.revision)


def read_history(places: Places) -> History:
    """The branch's history; an empty one if the repo does not exist yet."""
    try:
        repo = places.repo()
    except CommitError:
        return History()
    return history(repo, places.spec.target.branch)


def shard_states(
    work: storage.Location, plan: Plan, template: Template | None, shards: list[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(state per shard, error message per failed shard) for the given shards.

    A result counts as scanned only if it was made from the current inputs (its digest), so
    a stale scan of a changed shard shows as pending. One listing per prefix, then the small
    meta of each listed result, in parallel.
    """
    wanted = set(shards)
    failed: dict[str, str] = {}
    for info in storage.list_objects(work, prefix="errors/"):
        sid = info.key.removeprefix("errors/").removesuffix(".json")
        if sid in wanted:
            with contextlib.suppress(FileNotFoundError):  # a scan that just succeeded
                failed[sid] = json.loads(storage.read_bytes(work, info.key)).get("error", "?")
    listed = workarea.shards_with_results(work, wanted)

    def current(sid: str) -> bool:
        if template is None:
            return False
        try:
            meta = scan.read_meta(storage.read_bytes(work, workarea.result_key(sid)))
        except FileNotFoundError:
            return False
        return bool(meta.get("digest") == scan.result_digest(plan.shards[sid]["digest"], template))

    with ThreadPoolExecutor(max_workers=16) as pool:
        scanned = {sid for sid, ok in zip(listed, pool.map(current, listed), strict=True) if ok}
    states = {
        s: "failed"
        if s in failed and s not in scanned
        else "scanned"
        if s in scanned
        else "pending"
        for s in shards
    }
    return states, {s: m for s, m in failed.items() if states[s] == "failed"}


def group_state(committed: str | None, shards: list[str]) -> str:
    """A group's state from its commit ("committed", "changed" or None) and its shards' states."""
    if committed == "committed":
        return "committed"
    if "failed" in shards:
        return "failed"
    if committed == "changed":
        return "changed"
    done = shards.count("scanned")
    if shards and done == len(shards):
        return "waiting"
    return "scanning" if done else "pending"


def status(at: DatasetSpec | Places) -> dict[str, Any]:
    """Per group: its state, its shards' states, its snapshot; counts per state."""
    places = Places.of(at)
    spec = places.spec
    plan = workarea.load_plan(places.work, spec)
    hist = read_history(places)
    try:
        tmpl: Template | None = load_template(places.work)
    except TemplateError:
        tmpl = None  # not initialized yet
    work = needs_work(plan, hist, tmpl)
    open_shards = [s for g, todo in work.items() if todo for s in plan.groups[g]]
    sstates, errors = shard_states(places.work, plan, tmpl, open_shards)
    groups: dict[str, Any] = {}
    for g, todo in work.items():
        snap = hist.groups.get(g)
        commit = None if snap is None else "changed" if todo else "committed"
        shards = {s: "committed" if not todo else sstates[s] for s in plan.groups[g]}
        state = group_state(commit, list(shards.values()))
        entry: dict[str, Any] = {"state": state, "shards": shards}
        if snap is not None:
            entry["snapshot"] = snap.id
            entry["written_at"] = snap.written_at.isoformat()
        bad = {s: errors[s] for s in plan.groups[g] if s in errors}
        if bad:
            entry["failed_shards"] = bad
        groups[g] = entry
    counts = dict.fromkeys(GROUP_STATES, 0)
    for e in groups.values():
        counts[e["state"]] += 1
    return {
        "step": "status",
        "initialized": hist.init is not None,
        "counts": {k: v for k, v in counts.items() if v},
        "groups": groups,
        "tip": hist.tip,
    }


# --- the picture --------------------------------------------------------------------------------


def cell_colour(group_state: str, shard_state: str) -> tuple[int, int, int]:
    """A shard's cell: green in a committed group; else its own state's colour, except that the
    shards of a changed group not rescanned yet show the group's `changed`."""
    if group_state == "committed":
        return COLOURS["committed"]
    if group_state == "changed" and shard_state == "pending":
        return COLOURS["changed"]
    return COLOURS[shard_state]


def plot_status(summary: dict[str, Any], path: str | Path, *, title: str = "") -> dict[str, Any]:
    """Draw groups (x) x shards (y) coloured by state, with a strip of group states on top.

    Returns the picture's geometry in pixels (origin top left): `strip` and `grid` boxes
    (x0, y0, x1, y1) and the number of groups and shard rows, so the PNG can be read back.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise PlotUnavailable(
            "vcube status --plot needs matplotlib, which the core install leaves out: "
            "pip install 'vcube[plot]'"
        ) from None
    import numpy as np

    groups = summary["groups"]
    ids = list(groups)
    rows = max((len(e["shards"]) for e in groups.values()), default=1) or 1
    n = max(len(ids), 1)
    strip = np.full((1, n, 3), 255, np.uint8)
    grid = np.full((rows, n, 3), 255, np.uint8)
    for x, g in enumerate(ids):
        e = groups[g]
        strip[0, x] = COLOURS[e["state"]]
        for y, st in enumerate(e["shards"].values()):
            grid[y, x] = cell_colour(e["state"], st)
    dpi = 100
    width_in, height_in = 12.0, 4.0 + min(rows, 40) * 0.1
    fig = plt.figure(figsize=(width_in, height_in), dpi=dpi)
    left, right = 0.08, 0.98
    ax_strip = fig.add_axes((left, 0.80, right - left, 0.06))
    ax_grid = fig.add_axes((left, 0.32, right - left, 0.44))
    for ax, img in ((ax_strip, strip), (ax_grid, grid)):
        ax.imshow(img, aspect="auto", interpolation="nearest")
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    ax_strip.set_xticks([])
    ax_strip.set_ylabel("group", rotation=0, ha="right", va="center")
    ax_grid.set_ylabel("shard", rotation=0, ha="right", va="center")
    step = max(1, n // 20)
    ax_grid.set_xticks(range(0, n, step), [ids[i] for i in range(0, len(ids), step)], fontsize=7)
    ax_grid.set_xlabel("group")
    counts = summary.get("counts", {})
    used = [s for s in GROUP_STATES if counts.get(s)]
    legend = [Patch(facecolor=_rgb(COLOURS[s]), label=f"{s} ({counts[s]})") for s in used]
    if any(st == "scanned" for e in groups.values() for st in e["shards"].values()):
        legend.append(Patch(facecolor=_rgb(COLOURS["scanned"]), label="shard scanned"))
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=len(legend), frameon=False)
    fig.suptitle(title or f"{len(ids)} groups", y=0.97)
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # e.g. a pod's fresh outputs dir
    fig.savefig(path, dpi=dpi)
    size = fig.get_size_inches() * dpi
    geometry = {
        "size": (round(size[0]), round(size[1])),
        "strip": _box(ax_strip, size[1]),
        "grid": _box(ax_grid, size[1]),
        "groups": len(ids),
        "rows": rows,
    }
    plt.close(fig)
    return geometry


def _rgb(c: tuple[int, int, int]) -> tuple[float, float, float]:
    return (c[0] / 255, c[1] / 255, c[2] / 255)


def _box(ax: Any, height: float) -> tuple[int, int, int, int]:
    """An axes' box in image pixels, origin top left."""
    x0, y0, x1, y1 = ax.get_window_extent().extents
    return (round(x0), round(height - y1), round(x1), round(height - y0))


class PlotUnavailable(RuntimeError):
    """The optional plotting dependency is not installed."""
