"""Settings: YAML file, env overrides (prefix RWKV_RAG_), validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from gateway.settings import Settings, load_settings


def test_yaml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "port": 9001,
                "models": [{"id": "e", "kind": "embedding", "engine": "fake"}],
                "aliases": {"text-embedding-3-small": "e"},
                "limits": {"max_inputs_per_request": 7},
            }
        )
    )
    s = load_settings(cfg)
    assert s.port == 9001 and s.models[0].id == "e" and s.limits.max_inputs_per_request == 7
    monkeypatch.setenv("RWKV_RAG_PORT", "9002")
    monkeypatch.setenv("RWKV_RAG_LIMITS__MAX_INPUTS_PER_REQUEST", "9")
    s = load_settings(cfg)
    assert s.port == 9002 and s.limits.max_inputs_per_request == 9
    assert load_settings(cfg, port=9003).port == 9003


def test_every_field_has_a_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


@pytest.mark.parametrize(
    "bad",
    [
        {"models": [{"id": "a", "kind": "embedding"}, {"id": "a", "kind": "embedding"}]},
        {"aliases": {"x": "missing"}},
        {"models": [{"id": "a", "kind": "video"}]},
        {"unknown_setting": 1},
    ],
)
def test_invalid_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.yaml")
