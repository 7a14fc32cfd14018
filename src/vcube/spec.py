"""What is the dataset? A typed, frozen description of one archive and the cube built from it.

Everything dataset-specific lives in the spec file, so nothing in vcube knows about the atlas.
Validation messages say what to change in the YAML.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FIELD_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Keys that would put a credential into a spec file: refused, credentials come from the environment.
_SECRET_KEYS = {
    "access_key_id",
    "secret_access_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "session_token",
    "aws_session_token",
    "token",
    "password",
    "secret",
}


class SpecError(ValueError):
    """A spec file that cannot be used; the message says what to change."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class StorageOptions(_Model):
    """How to reach an object store. Credentials never live here: they come from the AWS chain."""

    endpoint: str | None = None
    region: str | None = None
    anonymous: bool = False
    force_path_style: bool = False
    allow_http: bool = False

    @model_validator(mode="before")
    @classmethod
    def _refuse_credentials(cls, data: object) -> object:
        if isinstance(data, dict):
            found = sorted(k for k in data if str(k).lower() in _SECRET_KEYS)
            if found:
                raise ValueError(
                    f"storage options must not contain credentials ({', '.join(found)}): "
                    "remove them and provide credentials through the AWS environment "
                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, IRSA or Pod Identity)"
                )
        return data


class Source(_Model):
    """Where the files are and how their paths encode the concat-dimension keys."""

    root: str
    pattern: str
    storage: StorageOptions = StorageOptions()

    @property
    def fields(self) -> list[str]:
        """The distinct path fields, in order of first appearance."""
        return list(dict.fromkeys(FIELD_RE.findall(self.pattern)))

    @field_validator("pattern")
    @classmethod
    def _pattern_has_fields(cls, v: str) -> str:
        if not FIELD_RE.search(v):
            raise ValueError("pattern must contain at least one {field}")
        if v.startswith("/"):
            raise ValueError("pattern is relative to source.root: remove the leading '/'")
        return v


class DimSpec(_Model):
    """One concat dimension, ordered by path fields; coordinates from the files or the path."""

    name: str
    order_by: list[str] = Field(min_length=1)
    values: Literal["file", "path"] = "file"


class CubeSpec(_Model):
    dims: list[DimSpec] = Field(min_length=1)
    shard_by: list[str]
    commit_by: str
    inline: list[str] = []
    drop: list[str] = []
    template: str | None = None  # a source key; default: the first planned file
    # The netCDF4/HDF5 group inside each file that the cube is built from ("a/b"); default: the
    # root. Other groups in the files must be listed under `drop` as "/path" (left out).
    file_group: str | None = None

    @field_validator("file_group")
    @classmethod
    def _group_path(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip("/") or "//" in v):
            raise ValueError(
                "file_group names a group inside the files, e.g. 'ocean' or 'model/ocean' "
                "(leave it out to build from the root group)"
            )
        return v.strip("/") if v is not None else None

    @property
    def dropped_groups(self) -> list[str]:
        """Groups of the files to leave out: the `drop` entries that start with '/'."""
        return [d.strip("/") for d in self.drop if d.startswith("/")]

    @property
    def dropped_variables(self) -> list[str]:
        return [d for d in self.drop if not d.startswith("/")]

    @property
    def dim_names(self) -> list[str]:
        return [d.name for d in self.dims]


class Target(_Model):
    repo: str
    branch: str = "main"
    storage: StorageOptions = StorageOptions()
    # Where plans and shard results go; default: "<repo>.work" next to the repo.
    work: str | None = None

    @model_validator(mode="after")
    def _work_needs_a_prefix(self) -> Target:
        bare_bucket = self.repo.startswith("s3://") and "/" not in self.repo[5:].strip("/")
        if bare_bucket and self.work is None:
            raise ValueError(
                "target.repo is a bucket root: set target.work to a prefix for plans and scans "
                "(the default '<repo>.work' would name another bucket)"
            )
        return self

    @property
    def work_url(self) -> str:
        return self.work if self.work is not None else self.repo.rstrip("/") + ".work"


class DatasetSpec(_Model):
    name: str
    source: Source
    cube: CubeSpec
    target: Target

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", v):
            raise ValueError(
                "name must be lower-case letters, digits and '-' (it names k8s objects)"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        fields = set(self.source.fields)
        names = self.cube.dim_names
        if len(set(names)) != len(names):
            raise ValueError(f"cube.dims has a repeated name: {names}")
        for d in self.cube.dims:
            unknown = [f for f in d.order_by if f not in fields]
            if unknown:
                raise ValueError(
                    f"cube.dims[{d.name}].order_by uses {unknown}, which the pattern does not "
                    f"define (pattern fields: {sorted(fields)})"
                )
        bad = [s for s in self.cube.shard_by if s not in names]
        if bad:
            raise ValueError(f"cube.shard_by {bad} must be names from cube.dims {names}")
        if self.cube.commit_by not in self.cube.shard_by:
            raise ValueError(
                f"cube.commit_by {self.cube.commit_by!r} must be one of cube.shard_by "
                f"{self.cube.shard_by}: a shard must lie inside one commit group"
            )
        both = set(self.cube.inline) & set(self.cube.drop)
        if both:
            raise ValueError(f"variables both inline and dropped: {sorted(both)}")
        return self

    def digest(self) -> str:
        """A stable hash of everything that shapes the cube.

        How the stores are reached (endpoint, region, ...) and the target are left out: pointing
        at the same archive through another endpoint must not rebuild the cube.
        """
        payload = {
            "root": self.source.root,
            "pattern": self.source.pattern,
            "cube": self.cube.model_dump(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a spec file; every problem is reported with its location in the file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {p}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: expected a mapping at the top level")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}")
        raise SpecError(f"{p}: invalid spec\n" + "\n".join(lines)) from None
