"""`rwkv-rag kb ...` on a local KB, no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from tests.conftest import FAKE_MODELS


def test_kb_cli_lifecycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    models = [
        *FAKE_MODELS,
        {"id": "small", "kind": "embedding", "engine": "fake", "options": {"dimensions": 16}},
    ]
    cfg.write_text(yaml.safe_dump({"models": models, "data_dir": str(tmp_path / "data")}))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\nHold the red button for ten seconds to reset the pump.")
    (docs / "billing.txt").write_text("Invoices go out on the first business day.")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 nothing else")
    (docs / "skip.bin").write_bytes(b"\x00\x01")
    c = ["--config", str(cfg)]

    assert main(["kb", "create", "manuals", *c]) == 0
    cid = capsys.readouterr().out.strip()
    assert cid.startswith("vs_")
    # One file fails: the command says so and exits 1; the others are stored.
    assert main(["kb", "ingest", "manuals", str(docs), "--quiet", *c]) == 1
    out = capsys.readouterr()
    assert "2 file(s) in manuals; 1 failed" in out.out and "broken.pdf" in out.err + out.out
    # Re-ingesting unchanged files is a no-op.
    assert main(["kb", "ingest", "manuals", str(docs / "pump.md"), "--quiet", *c]) == 0
    assert "unchanged, skipped" in capsys.readouterr().out
    assert main(["kb", "ls", *c]) == 0
    assert "files=3" in capsys.readouterr().out
    assert main(["kb", "search", cid, "reset the pump", "--json", "--no-rerank", *c]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["filename"] == "pump.md" and "red button" in hits[0]["text"]
    assert main(["kb", "ls", "manuals", *c]) == 0
    listing = capsys.readouterr().out
    pump_id = next(line.split()[0] for line in listing.splitlines() if "pump.md" in line)
    assert main(["kb", "rm", "manuals", pump_id, *c]) == 0
    assert "1 chunks" in capsys.readouterr().out
    assert main(["kb", "rebuild", *c]) == 0
    assert f"{cid}: 1 vectors (flat)" in capsys.readouterr().out
    assert main(["kb", "reembed", "manuals", "small", "--quiet", *c]) == 0
    assert f"{cid}: completed" in capsys.readouterr().out
    assert main(["kb", "ls", *c]) == 0
    assert "model=small" in capsys.readouterr().out
    assert main(["kb", "search", "nope", "x", *c]) == 2
    assert "no vector store" in capsys.readouterr().err
