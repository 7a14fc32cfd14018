"""Section 4: a few hundred files, `vcube run` vs the reference recipe, same files, same machine.

The reference recipe is what the atlas was first built with: per polygon,
`open_virtual_mfdataset` (VirtualiZarr, HDFParser, the inline variables loaded) then
`to_icechunk(append_dim="polygon_id")` and a commit. vcube runs as the user runs it: the CLI
in a child process (`vcube run SPEC --workers 2`, which also validates sampled files).
The files use the sample's small grid: at full grid the reference recipe alone would take
longer than the whole benchmark budget (section 1 gives the per-file ratio at full grid).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench import common
from tests.support import reference


def vcube_run(spec_path: Path, repo: Path, workers: int) -> float:
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(repo.with_name(repo.name + ".work"), ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "vcube"), "run", str(spec_path)]
    cmd += ["--workers", str(workers), "--quiet", "--samples", "1"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=common.ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def reference_recipe(arch: common.Archive, repo: Path, loadable: list[str]) -> float:
    import icechunk

    shutil.rmtree(repo, ignore_errors=True)
    t0 = time.perf_counter()
    r = reference.create_repo(arch.root, icechunk.local_filesystem_storage(str(repo)))
    polygons = sorted({k.split("/", 1)[0] for k in arch.file_keys()})
    for i, poly in enumerate(polygons):
        urls = [(arch.root / k).as_uri() for k in arch.file_keys() if k.startswith(poly + "/")]
        vds = reference.open_virtual(arch.root, urls, loadable)
        session = r.writable_session("main")
        if i == 0:
            vds.vz.to_icechunk(session.store)
        else:
            vds.vz.to_icechunk(session.store, append_dim="polygon_id")
        session.commit(f"polygon {poly}")
    return time.perf_counter() - t0


def run(arch: common.Archive, *, reps: int, workers: int = 2) -> dict[str, Any]:
    base = common.CACHE / "e2e"
    base.mkdir(parents=True, exist_ok=True)
    spec = common.atlas_spec(str(arch.root), str(base / "vcube-cube"))
    spec_path = base / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    tmpl = common.derive(spec, arch.file_keys()[0])
    loadable = common.loadable_variables(tmpl)
    common.log(f"end_to_end: {arch.n_files} files, {reps} reps")
    ours, theirs = [], []
    for r in range(reps):
        runs = [
            lambda: ours.append(vcube_run(spec_path, base / "vcube-cube", workers)),
            lambda: theirs.append(reference_recipe(arch, base / "ref-cube", loadable)),
        ]
        for fn in runs if r % 2 == 0 else runs[::-1]:
            fn()
    same = _same_cube(spec, base / "ref-cube", arch)
    return {
        "files": arch.n_files,
        "grid": list(arch.grid),
        "polygons": arch.polygons,
        "reps": reps,
        "workers": workers,
        "vcube_run_s": ours,
        "reference_s": theirs,
        "vcube_run_median_s": common.median(ours),
        "reference_median_s": common.median(theirs),
        "speedup": common.median(theirs) / common.median(ours),
        "same_cube": same,
    }


def _same_cube(spec: Any, ref_repo: Path, arch: common.Archive) -> bool:
    """Both cubes hold the same variables, sizes and values (the oracle test, in short)."""
    import icechunk
    import xarray as xr

    from vcube import validate

    r = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(ref_repo)),
        authorize_virtual_chunk_access=reference.credentials(arch.root),
    )
    theirs = xr.open_zarr(r.readonly_session("main").store, consolidated=False, decode_times=False)
    with validate.open_cube(spec, decode_times=False) as ours:
        if dict(ours.sizes) != dict(theirs.sizes) or set(ours.variables) != set(theirs.variables):
            return False
        a, b = ours.load(), theirs[list(ours.variables)].load()
        # The recipe's appends leave the last polygon's global attributes (its `title`):
        # compare the variables (values, dims, coords, variable attrs) without them.
        a.attrs, b.attrs = {}, {}
        try:
            xr.testing.assert_identical(a, b)
        except AssertionError:
            return False
    return True
