"""`rwkv-rag models pull | ls | catalog`: fetch a known model (or any hub file or
repository) into ``data_dir/models`` and add it to a config file."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["model_entry", "register", "update_config"]


def _say(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201 - the command's own progress


def _out(text: str) -> None:
    print(text)  # noqa: T201 - the command's own output


def _data_dir(args: argparse.Namespace) -> Path:
    """``--data-dir``, else the settings' (the config file when it exists, the env)."""
    from gateway.settings import load_settings

    if args.data_dir:
        return Path(args.data_dir)
    config = args.config if args.config and Path(args.config).is_file() else None
    return load_settings(config).data_dir


def default_options(kind: str, strategy: str | None) -> tuple[dict[str, Any], str]:
    """``--strategy`` for a chat model, else what suits the hardware found here."""
    from engines.pull import suggest_options

    if kind == "chat" and strategy:
        return {"strategy": strategy}, "as given by --strategy"
    return suggest_options(kind)


def model_entry(
    model_id: str, kind: str, engine: str, path: Path, options: dict[str, Any]
) -> dict[str, Any]:
    """The `models:` item that serves a pulled model."""
    return {
        "id": model_id,
        "kind": kind,
        "engine": engine,
        "path": str(path.resolve()),
        "options": options,
    }


def _default_models(kind: str) -> list[dict[str, Any]]:
    """What a config without `models:` serves; a real chat model replaces the random demo."""
    from gateway.settings import Settings

    models = Settings.model_fields["models"].get_default(call_default_factory=True)
    return [
        m.model_dump(exclude_defaults=True, mode="json")
        for m in models
        if not (kind == "chat" and m.kind == "chat")
    ]


def update_config(path: Path, entry: dict[str, Any]) -> str:
    """Add (or replace, by id) ``entry`` in the YAML config at ``path``, keeping every other
    setting; a missing file is created. Comments survive when the entry is appended to a
    block list; otherwise the file is rewritten. Returns what was done."""
    text = path.read_text("utf-8") if path.is_file() else ""
    data = yaml.safe_load(text) if text.strip() else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    models = data.get("models")
    if models is None:
        models = _default_models(entry["kind"])
    if not isinstance(models, list):
        raise ValueError(f"{path}: `models` is not a list")
    replaced = any(isinstance(m, dict) and m.get("id") == entry["id"] for m in models)
    new_models = [
        entry if isinstance(m, dict) and m.get("id") == entry["id"] else m for m in models
    ]
    if not replaced:
        new_models.append(entry)
    wanted = {**data, "models": new_models}
    if replaced:
        candidate = None
    elif "models" in data:
        candidate = _append_item(text, entry)
    else:
        models_yaml = yaml.safe_dump({"models": new_models}, sort_keys=False, allow_unicode=True)
        candidate = (text if not text or text.endswith("\n") else text + "\n") + models_yaml
    if candidate is None or yaml.safe_load(candidate) != wanted:
        candidate = yaml.safe_dump(wanted, sort_keys=False, allow_unicode=True)
    _check_settings(candidate, path)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(candidate, "utf-8")
    os.replace(tmp, path)
    return "replaced" if replaced else ("created" if not text else "added")


def _append_item(text: str, entry: dict[str, Any]) -> str | None:
    """``text`` with ``entry`` appended to its top-level block list `models:`, or None."""
    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == "models:")
    except StopIteration:
        return None
    end, indent = start + 1, None
    for i in range(start + 1, len(lines)):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not lines[i][0].isspace() and not lines[i].startswith("-"):
            break
        if indent is None and stripped.startswith("- "):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        end = i + 1
    if indent is None:
        return None
    item = yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=10_000).strip()
    if lines[end - 1] and not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    lines.insert(end, f"{indent}- {item}\n")
    return "".join(lines)


def _check_settings(text: str, path: Path) -> None:
    """Refuse to write a config the gateway would not start with."""
    from gateway.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / path.name
        trial.write_text(text, "utf-8")
        load_settings(trial)


def _pull(args: argparse.Namespace) -> int:
    from engines.pull import PullError, load_catalog, pull, resolve

    try:
        catalog = load_catalog(Path(args.catalog) if args.catalog else None)
        name, entry = resolve(args.source, catalog, args.name)
        models_dir = _data_dir(args) / "models"
        if args.kind:
            entry = entry.model_copy(update={"kind": args.kind, "engine": args.engine or "auto"})
        elif args.engine:
            entry = entry.model_copy(update={"engine": args.engine})
        _say(f"pulling {name} from hf://{entry.repo}@{entry.revision} into {models_dir / name}")
        result = pull(name, entry, models_dir, force=args.force, say=_say)
    except PullError as exc:
        _say(f"rwkv-rag: {exc}")
        return 1
    model_id = args.id or name
    if result.already_present:
        _say(f"{name}: already present in {result.directory}")
        if args.config and _configured(Path(args.config), model_id):
            # Leave the entry as it is: it may have been edited since (another strategy).
            _say(f"{args.config}: model {model_id!r} already configured")
            return 0
    options, why = default_options(entry.kind, args.strategy)
    _say(f"options {options}: {why}")
    item = model_entry(model_id, entry.kind, entry.engine, result.path, options)
    if args.config:
        done = update_config(Path(args.config), item)
        _say(f"{args.config}: {done} model {item['id']!r}")
    else:
        _say("add this to your config's `models:` (or pass --config FILE):")
        _out(yaml.safe_dump({"models": [item]}, sort_keys=False, allow_unicode=True).rstrip())
    return 0


def _configured(path: Path, model_id: str) -> bool:
    if not path.is_file():
        return False
    data = yaml.safe_load(path.read_text("utf-8")) or {}
    models = data.get("models") if isinstance(data, dict) else None
    return isinstance(models, list) and any(
        isinstance(m, dict) and m.get("id") == model_id for m in models
    )


def _served_by(models: list[Any], target: Path) -> list[str]:
    ids = []
    for m in models:
        if not m.path or m.path.startswith("builtin:"):
            continue
        path = Path(m.path).resolve()
        if path == target or target in path.parents:
            ids.append(m.id)
    return ids


def _ls(args: argparse.Namespace) -> int:
    from engines.pull import human_size, list_local
    from gateway.settings import load_settings

    config = args.config if args.config and Path(args.config).is_file() else None
    settings = load_settings(config)
    models_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    models_dir = models_dir / "models"
    found = list_local(models_dir)
    if not found:
        _say(f"no models in {models_dir} (rwkv-rag models pull NAME)")
        return 0
    rows = [("NAME", "SIZE", "KIND", "SOURCE", "SERVED AS")]
    for m in found:
        size = human_size(m.size)
        if m.partial_bytes:
            size += f" (+{human_size(m.partial_bytes)} incomplete)"
        served = ", ".join(_served_by(settings.models, m.directory.resolve())) or "-"
        rows.append((m.name, size, m.kind or "-", m.source or "-", served))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        _out("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from engines.pull import load_catalog

    catalog = load_catalog(Path(args.catalog) if args.catalog else None)
    for name, e in catalog.models.items():
        what = ", ".join(f.path for f in e.files) if e.files else "whole repository"
        _out(f"{name:22} {e.kind:9} {e.params or '':6} hf://{e.repo} ({what})")
    return 0


def register(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    models = sub.add_parser("models", help="fetch models into the data directory, list them")
    msub = models.add_subparsers(dest="models_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        add_config(p)
        p.add_argument("--data-dir", help="data directory (default: the settings' data_dir)")
        p.add_argument("--catalog", help="a catalog YAML file instead of the shipped one")

    p = msub.add_parser(
        "pull",
        help="fetch a model (a catalog NAME, hf://owner/repo or hf://owner/repo/file), "
        "verify it and add it to --config",
    )
    common(p)
    p.add_argument("source", help="catalog name, hf://owner/repo[@rev] or hf://owner/repo/file")
    p.add_argument("--name", help="directory name under data_dir/models (default: derived)")
    p.add_argument("--id", help="model id in the config (default: the name)")
    p.add_argument("--kind", choices=["chat", "embedding", "rerank"], help="override the kind")
    p.add_argument("--engine", help="override the engine")
    p.add_argument("--strategy", help="RWKV strategy (default: picked for this hardware)")
    p.add_argument("--force", action="store_true", help="fetch again even when present")
    p.set_defaults(func=_pull)

    p = msub.add_parser("ls", help="models in data_dir/models, their size and configured id")
    common(p)
    p.set_defaults(func=_ls)

    p = msub.add_parser("catalog", help="the models `pull` knows by name")
    common(p)
    p.set_defaults(func=_catalog)
