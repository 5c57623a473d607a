"""Fetch a model from a Hugging Face hub into ``data_dir/models/NAME``, verified.

Only `rwkv-rag models pull` calls this: serving never downloads. Requests go through
``huggingface_hub`` (so ``HF_ENDPOINT``, ``HF_TOKEN`` and the proxy variables apply), but
each file is written to a partial file of our own, kept across runs, so a pull cut short
resumes with a Range request where it stopped. A finished file is checked against the
hub's size and, for LFS files, its sha256 (the hub's ETag), and against the catalog's
values when it has them; a mismatch removes the file and is refused.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Catalog",
    "CatalogEntry",
    "LocalModel",
    "PullError",
    "PullResult",
    "human_size",
    "list_local",
    "load_catalog",
    "pull",
    "resolve",
    "suggest_options",
]

MANIFEST = ".pull.json"
PARTIAL_DIR = ".incomplete"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_CHUNK = 8 * 1024 * 1024


class PullError(Exception):
    """A pull that cannot go on; ``code`` names why (for tests and scripts)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="The file's path inside the repository.")
    size: int | None = Field(None, ge=0, description="Expected size in bytes, when known.")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Expected sha256, when known."
    )


class CatalogEntry(BaseModel):
    """One known model: where it lives and how the gateway serves it."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(pattern=r"^[^/\s]+/[^/\s]+$", description="owner/name on the hub.")
    revision: str = Field("main", description="Branch, tag or commit.")
    files: list[FileSpec] | None = Field(
        None, description="Single files to fetch; none fetches the whole repository."
    )
    ignore: list[str] = Field(
        default_factory=list, description="Glob patterns left out of a whole-repository fetch."
    )
    kind: Literal["chat", "embedding", "rerank"]
    engine: str
    params: str | None = None
    description: str = ""


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, CatalogEntry]


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog shipped with the package, or the YAML file at ``path``."""
    if path is None:
        text = resources.files("engines").joinpath("catalog.yaml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return Catalog.model_validate(yaml.safe_load(text))


def resolve(source: str, catalog: Catalog, name: str | None = None) -> tuple[str, CatalogEntry]:
    """``NAME`` from the catalog, ``hf://owner/repo[@rev]`` (the whole repository) or
    ``hf://owner/repo[@rev]/path/to/file`` -> (local name, what to fetch)."""
    if not source.startswith("hf://"):
        entry = catalog.models.get(source)
        if entry is None:
            known = ", ".join(sorted(catalog.models))
            raise PullError(
                f"unknown model {source!r}; known: {known} (or hf://owner/repo[/file])",
                "unknown_model",
            )
        return name or source, entry
    parts = source[len("hf://") :].strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise PullError(f"{source!r}: expected hf://owner/repo[/path/to/file]", "bad_source")
    repo_name, _, revision = parts[1].partition("@")
    repo = f"{parts[0]}/{repo_name}"
    file = "/".join(parts[2:])
    kind, engine = _guess_kind(repo, file)
    entry = CatalogEntry(
        repo=repo,
        revision=revision or "main",
        files=[FileSpec(path=file)] if file else None,
        kind=kind,
        engine=engine,
    )
    default = Path(file).stem if file else repo_name
    return name or default.lower(), entry


def _guess_kind(repo: str, file: str) -> tuple[Literal["chat", "embedding", "rerank"], str]:
    if file.endswith(".pth"):
        return "chat", "rwkv"
    if "rerank" in repo.lower():
        return "rerank", "flag-reranker"
    return "embedding", "bge"


@dataclass
class PullResult:
    name: str
    directory: Path
    path: Path  # the file (single-file models) or the directory the config points at
    entry: CatalogEntry
    commit: str | None
    fetched: list[str] = field(default_factory=list)
    already_present: bool = False


Say = Callable[[str], None]


def pull(
    name: str,
    entry: CatalogEntry,
    models_dir: Path,
    *,
    force: bool = False,
    say: Say = lambda _: None,
) -> PullResult:
    """Fetch ``entry`` into ``models_dir/name``; a complete earlier pull is a no-op."""
    if not _NAME.match(name):
        raise PullError(f"{name!r} is not a usable model name", "bad_name")
    directory = models_dir / name
    main = directory / entry.files[0].path if entry.files else directory
    manifest = _read_manifest(directory)
    if not force and manifest is not None and _complete(directory, manifest, entry):
        return PullResult(name, directory, main, entry, manifest.get("commit"), [], True)

    from huggingface_hub import HfApi, constants

    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")
    commit = None
    specs: list[FileSpec]
    if entry.files is not None:
        specs = entry.files
        revision = entry.revision
    else:
        info = _call(
            lambda: HfApi(endpoint=endpoint).model_info(
                entry.repo, revision=entry.revision, files_metadata=True
            ),
            f"{entry.repo}@{entry.revision}",
        )
        commit = info.sha
        revision = commit or entry.revision
        specs = [
            FileSpec(path=s.rfilename, size=s.size, sha256=s.lfs.sha256 if s.lfs else None)
            for s in info.siblings or []
            if not any(fnmatch.fnmatch(s.rfilename, p) for p in entry.ignore)
        ]
    files: dict[str, dict[str, Any]] = {}
    fetched: list[str] = []
    for spec in specs:
        record, did_fetch = _fetch_file(
            endpoint, entry.repo, revision, spec, directory, force=force, say=say
        )
        file_commit = record.pop("commit", None)
        commit = commit or file_commit
        files[spec.path] = record
        if did_fetch:
            fetched.append(spec.path)
    with contextlib.suppress(OSError):  # gone or still holding another file's partial
        (directory / PARTIAL_DIR).rmdir()
    _write_manifest(
        directory,
        {
            "source": f"hf://{entry.repo}",
            "revision": entry.revision,
            "commit": commit,
            "kind": entry.kind,
            "engine": entry.engine,
            "files": files,
        },
    )
    return PullResult(name, directory, main, entry, commit, fetched, not fetched)


def _call(func: Callable[[], Any], what: str) -> Any:
    """Run one hub call; its failures in the project's words."""
    import httpx2
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return func()
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise PullError(
            f"{what}: not found on the hub ({type(exc).__name__})", "not_found"
        ) from exc
    except OfflineModeIsEnabled as exc:
        raise PullError(f"{what}: HF_HUB_OFFLINE is set; unset it to pull", "offline") from exc
    except HfHubHTTPError as exc:
        raise PullError(f"{what}: the hub answered an error: {exc}", "hub_error") from exc
    except (httpx2.HTTPError, OSError) as exc:
        # Connection errors, and huggingface_hub's check that a body had its full length.
        raise PullError(f"{what}: the download failed: {exc}", "interrupted") from exc


def _fetch_file(
    endpoint: str,
    repo: str,
    revision: str,
    spec: FileSpec,
    directory: Path,
    *,
    force: bool,
    say: Say,
) -> tuple[dict[str, Any], bool]:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils._headers import build_hf_headers

    what = f"{repo}/{spec.path}"
    url = hf_hub_url(repo, spec.path, revision=revision, endpoint=endpoint)
    meta = _call(lambda: get_hf_file_metadata(url, endpoint=endpoint), what)
    size: int | None = meta.size
    hub_sha = meta.etag if meta.etag and _SHA256.match(meta.etag) else None
    _agree(what, "size", spec.size, size)
    _agree(what, "sha256", spec.sha256, hub_sha)
    size = size if size is not None else spec.size
    sha256 = hub_sha or spec.sha256
    record: dict[str, Any] = {"size": size, "sha256": sha256, "commit": meta.commit_hash}
    dest = directory / spec.path
    if not force and dest.is_file() and _matches(dest, size, sha256):
        return record, False

    partial = directory / PARTIAL_DIR / f"{spec.path.replace('/', '--')}.{meta.etag}.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    if force or (size is not None and have > size):
        partial.unlink(missing_ok=True)
        have = 0
    # huggingface_hub finds the token itself: HF_TOKEN, or a saved `hf auth login`.
    headers = build_hf_headers()
    location = meta.location or url
    if urlsplit(location).netloc != urlsplit(url).netloc:
        # A signed CDN address must not see the hub token.
        headers.pop("authorization", None)
    say(f"{what}: {human_size(size)}" + (f", resuming at {human_size(have)}" if have else ""))

    def download() -> None:
        with partial.open("ab") as out:
            http_get(location, out, resume_size=have, headers=headers, expected_size=size)

    try:
        _call(download, what)
    except PullError as exc:
        kept = partial.stat().st_size if partial.exists() else 0
        if not kept:
            raise
        # The bytes that arrived stay; the next run asks for the rest with a Range request.
        raise PullError(
            f"{exc}; {human_size(kept)} kept, run the same command again to resume", exc.code
        ) from exc
    _verify(what, partial, size, sha256, say)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, dest)
    return record, True


def _agree(what: str, field_name: str, catalog: object, hub: object) -> None:
    if catalog is not None and hub is not None and catalog != hub:
        raise PullError(
            f"{what}: the hub's {field_name} ({hub}) is not the catalog's ({catalog}); refused",
            "checksum_mismatch" if field_name == "sha256" else "size_mismatch",
        )


def _verify(what: str, path: Path, size: int | None, sha256: str | None, say: Say) -> None:
    got = path.stat().st_size
    if size is not None and got != size:
        path.unlink(missing_ok=True)
        raise PullError(
            f"{what}: got {got} bytes, expected {size}; the partial file was removed",
            "size_mismatch",
        )
    if sha256 is None:
        return
    say(f"{what}: checking sha256")
    digest = _sha256(path)
    if digest != sha256:
        path.unlink(missing_ok=True)
        raise PullError(
            f"{what}: sha256 {digest} is not the expected {sha256}; the file was removed",
            "checksum_mismatch",
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _matches(path: Path, size: int | None, sha256: str | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or _sha256(path) == sha256


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_manifest(directory: Path, data: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), "utf-8")
    os.replace(tmp, directory / MANIFEST)


def _complete(directory: Path, manifest: dict[str, Any], entry: CatalogEntry) -> bool:
    """The manifest is of this source, and every file it lists is there at its size."""
    files = manifest.get("files")
    if manifest.get("source") != f"hf://{entry.repo}" or not isinstance(files, dict) or not files:
        return False
    if entry.files is not None and {f.path for f in entry.files} != set(files):
        return False
    for rel, rec in files.items():
        path = directory / rel
        if not path.is_file() or (
            rec.get("size") is not None and path.stat().st_size != rec["size"]
        ):
            return False
    return True


@dataclass
class LocalModel:
    name: str
    directory: Path
    size: int
    partial_bytes: int
    source: str | None
    kind: str | None
    files: list[Path]


def list_local(models_dir: Path) -> list[LocalModel]:
    """What ``models_dir`` holds: one entry per model directory (pulled or copied in)."""
    out: list[LocalModel] = []
    if not models_dir.is_dir():
        return out
    for directory in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if directory.name.startswith("."):
            continue
        files = sorted(
            p
            for p in directory.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        )
        partial = directory / PARTIAL_DIR
        partial_bytes = (
            sum(p.stat().st_size for p in partial.iterdir() if p.is_file())
            if partial.is_dir()
            else 0
        )
        manifest = _read_manifest(directory) or {}
        out.append(
            LocalModel(
                name=directory.name,
                directory=directory,
                size=sum(p.stat().st_size for p in files),
                partial_bytes=partial_bytes,
                source=manifest.get("source"),
                kind=manifest.get("kind"),
                files=files,
            )
        )
    return out


def suggest_options(kind: str) -> tuple[dict[str, Any], str]:
    """Engine options for the hardware torch sees here, and why."""
    import torch  # here, not at import: listing and fetching never need it

    if torch.cuda.is_available():
        why = f"CUDA device found ({torch.cuda.get_device_name(0)})"
        if kind == "chat":
            return {"strategy": "cuda fp16"}, why
        return {"device": "cuda", "fp16": True}, why
    why = "no CUDA device (torch.cuda.is_available() is false)"
    if kind == "chat":
        return {"strategy": "cpu fp32"}, why
    return {"device": "cpu"}, why


def human_size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{n} B"
