"""`rwkv-rag models pull / ls` against a local hub on 127.0.0.1.

The fake hub speaks the part of the Hugging Face hub protocol huggingface_hub uses:
HEAD/GET ``/{repo}/resolve/{rev}/{file}`` with X-Repo-Commit, ETag, X-Linked-Etag,
X-Linked-Size and Range, and ``/api/models/{repo}/revision/{rev}`` for whole repositories.
The CLI runs as a real process with HF_ENDPOINT pointed at it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
G1 = ("BlinkDL/rwkv7-g1", "rwkv7-g1-0.1b-20250307-ctx4096.pth")
# Over huggingface_hub's 10 MiB download chunk, so a cut body leaves bytes on disk.
BIG = random.Random(7).randbytes(12 * 1024 * 1024 + 123)


def _lfs(path: str) -> bool:
    return not path.endswith((".json", ".txt", ".md"))


@dataclass
class Hub:
    repos: dict[str, dict[str, bytes]]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    cut: dict[str, int] = field(default_factory=dict)  # file -> GETs to drop mid-body
    fail: dict[str, int] = field(default_factory=dict)  # file -> GETs to answer 503
    corrupt: set[str] = field(default_factory=set)  # files served with wrong bytes
    url: str = ""

    def gets(self, file: str) -> list[dict[str, str]]:
        return [h for m, p, h in self.requests if m == "GET" and p.endswith("/" + file)]


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: Hub

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        body = json.dumps({"error": code}).encode()
        self._reply(
            status,
            {
                "X-Error-Code": code,
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
                "X-Repo-Commit": COMMIT,
            },
            body,
        )

    def do_HEAD(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path = self.path.split("?")[0]
        self.hub.requests.append(
            (self.command, path, {k.lower(): v for k, v in self.headers.items()})
        )
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            return self._info("/".join(parts[2:4]))
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "RepoNotFound")
        repo, file = "/".join(parts[:2]), "/".join(parts[4:])
        files = self.hub.repos.get(repo)
        if files is None:
            return self._error(404, "RepoNotFound")
        if file not in files:
            return self._error(404, "EntryNotFound")
        return self._file(file, files[file])

    def _info(self, repo: str) -> None:
        files = self.hub.repos.get(repo)
        if files is None:
            return self._error(404, "RepoNotFound")
        siblings = []
        for name, data in files.items():
            sib: dict[str, object] = {"rfilename": name, "size": len(data), "blobId": "0" * 40}
            if _lfs(name):
                sib["lfs"] = {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            siblings.append(sib)
        body = json.dumps({"id": repo, "sha": COMMIT, "siblings": siblings}).encode()
        self._reply(
            200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body
        )

    def _file(self, file: str, data: bytes) -> None:
        headers = {"X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes"}
        if _lfs(file):
            sha = hashlib.sha256(data).hexdigest()
            headers |= {
                "ETag": f'"{sha}"',
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
            }
        else:
            headers["ETag"] = f'"{hashlib.sha1(data, usedforsecurity=False).hexdigest()}"'
        if self.command == "HEAD":
            return self._reply(200, headers | {"Content-Length": str(len(data))})
        if self.hub.fail.get(file, 0) > 0 and not self.hub.cut.get(file):
            self.hub.fail[file] -= 1
            return self._error(503, "Unavailable")
        if file in self.hub.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng:
            start, status = int(rng.removeprefix("bytes=").split("-")[0]), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        if self.hub.cut.get(file, 0) > 0:
            self.hub.cut[file] -= 1
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[: len(body) - 1024 * 1024])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return None
        return self._reply(status, headers, body)


@pytest.fixture
def hub() -> Iterator[Hub]:
    state = Hub(
        repos={
            G1[0]: {G1[1]: BIG, "README.md": b"# g1\n"},
            "BAAI/bge-m3": {
                "config.json": b'{"model_type": "xlm-roberta"}',
                "pytorch_model.bin": b"weights" * 1000,
                "colbert_linear.pt": b"colbert" * 100,
                "onnx/model.onnx": b"onnx" * 1000,
            },
        }
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (HubHandler,), {"hub": state}))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def cli(hub: Hub, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper()
        not in {
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "RWKV_RAG_CONFIG",
        }
    }
    env |= {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp / "hf"),
        "HF_TOKEN": "hf_test_token",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "RWKV_RAG_DATA_DIR": str(tmp / "data"),
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "models", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def pulled(tmp: Path) -> Path:
    return tmp / "data" / "models" / "rwkv7-g1-0.1b" / G1[1]


def test_a_catalog_model_is_pulled_byte_exact_and_written_into_a_new_config(
    hub: Hub, tmp_path: Path
) -> None:
    import torch

    config = tmp_path / "serve.yaml"
    run = cli(hub, tmp_path, "pull", "rwkv7-g1-0.1b", "--config", str(config))
    assert run.returncode == 0, run.stderr
    assert pulled(tmp_path).read_bytes() == BIG
    # HF_TOKEN reaches the hub.
    assert all(h.get("authorization") == "Bearer hf_test_token" for h in hub.gets(G1[1]))
    settings = load_settings(config)
    entry = next(m for m in settings.models if m.id == "rwkv7-g1-0.1b")
    assert (entry.kind, entry.engine, Path(entry.path or "")) == ("chat", "rwkv", pulled(tmp_path))
    expected = "cuda fp16" if torch.cuda.is_available() else "cpu fp32"
    assert entry.options == {"strategy": expected}
    assert expected in run.stderr
    # The embedded embedding model stays; the random demo chat model gives way.
    assert [m.id for m in settings.models] == ["all-minilm-l6-v2", "rwkv7-g1-0.1b"]


def test_a_second_pull_of_a_present_model_asks_the_hub_nothing_and_keeps_the_config(
    hub: Hub, tmp_path: Path
) -> None:
    config = tmp_path / "serve.yaml"
    args = ("pull", "rwkv7-g1-0.1b", "--config", str(config), "--strategy", "cpu fp32")
    assert cli(hub, tmp_path, *args).returncode == 0
    seen = len(hub.requests)
    edited = config.read_text().replace("cpu fp32", "cpu bf16")
    config.write_text(edited)
    run = cli(hub, tmp_path, *args)
    assert run.returncode == 0, run.stderr
    assert "already present" in run.stderr
    assert len(hub.requests) == seen
    assert config.read_text() == edited


def test_without_a_config_the_yaml_to_add_is_printed(hub: Hub, tmp_path: Path) -> None:
    run = cli(hub, tmp_path, "pull", f"hf://{G1[0]}/{G1[1]}", "--strategy", "cpu fp32")
    assert run.returncode == 0, run.stderr
    item = yaml.safe_load(run.stdout)["models"][0]
    name = Path(G1[1]).stem
    assert item["id"] == name and item["kind"] == "chat" and item["engine"] == "rwkv"
    assert Path(item["path"]).read_bytes() == BIG
    assert item["options"] == {"strategy": "cpu fp32"}


def test_a_connection_cut_mid_body_is_resumed_with_a_range_request(
    hub: Hub, tmp_path: Path
) -> None:
    hub.cut[G1[1]] = 1
    run = cli(hub, tmp_path, "pull", "rwkv7-g1-0.1b", "--strategy", "cpu fp32")
    assert run.returncode == 0, run.stderr
    gets = hub.gets(G1[1])
    assert len(gets) == 2 and "range" not in gets[0]
    offset = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset < len(BIG)
    assert pulled(tmp_path).read_bytes() == BIG


def test_an_interrupted_pull_keeps_its_bytes_and_the_next_run_resumes(
    hub: Hub, tmp_path: Path
) -> None:
    hub.cut[G1[1]], hub.fail[G1[1]] = 1, 1
    first = cli(hub, tmp_path, "pull", "rwkv7-g1-0.1b", "--strategy", "cpu fp32")
    assert first.returncode == 1
    assert "resume" in first.stderr
    assert not pulled(tmp_path).exists()
    (partial,) = (pulled(tmp_path).parent / ".incomplete").iterdir()
    kept = partial.stat().st_size
    assert 0 < kept < len(BIG)

    second = cli(hub, tmp_path, "pull", "rwkv7-g1-0.1b", "--strategy", "cpu fp32")
    assert second.returncode == 0, second.stderr
    assert hub.gets(G1[1])[-1]["range"] == f"bytes={kept}-"
    assert pulled(tmp_path).read_bytes() == BIG
    assert not partial.parent.exists()


def test_bytes_that_do_not_match_the_hubs_sha256_are_refused_and_removed(
    hub: Hub, tmp_path: Path
) -> None:
    hub.corrupt.add(G1[1])
    run = cli(hub, tmp_path, "pull", "rwkv7-g1-0.1b", "--strategy", "cpu fp32")
    assert run.returncode == 1
    assert "sha256" in run.stderr
    directory = pulled(tmp_path).parent
    assert not pulled(tmp_path).exists()
    assert list((directory / ".incomplete").iterdir()) == []
    assert not (directory / ".pull.json").exists()


def test_a_catalog_sha256_the_hub_contradicts_is_refused_before_downloading(
    hub: Hub, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    wrong = hashlib.sha256(b"something else").hexdigest()
    catalog.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "g1": {
                        "repo": G1[0],
                        "files": [{"path": G1[1], "sha256": wrong}],
                        "kind": "chat",
                        "engine": "rwkv",
                    }
                }
            }
        )
    )
    run = cli(hub, tmp_path, "pull", "g1", "--catalog", str(catalog), "--strategy", "cpu fp32")
    assert run.returncode == 1
    assert wrong in run.stderr
    assert hub.gets(G1[1]) == []


def test_an_unknown_name_is_an_error_that_lists_the_known_names(hub: Hub, tmp_path: Path) -> None:
    run = cli(hub, tmp_path, "pull", "rwkv7-g9-99b")
    assert run.returncode == 1
    assert "rwkv7-g9-99b" in run.stderr
    for name in ("rwkv7-g1-0.4b", "bge-m3", "bge-reranker-v2-m3"):
        assert name in run.stderr
    assert hub.requests == []


def test_a_whole_repository_is_pulled_without_its_ignored_files_into_an_existing_config(
    hub: Hub, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "# my gateway\nport: 9000  # kept\nmodels:\n"
        "  - {id: all-minilm-l6-v2, kind: embedding, engine: bge, path: 'builtin:all-minilm-l6-v2'}\n"
    )
    run = cli(hub, tmp_path, "pull", "bge-m3", "--config", str(config))
    assert run.returncode == 0, run.stderr
    directory = tmp_path / "data" / "models" / "bge-m3"
    for name, data in hub.repos["BAAI/bge-m3"].items():
        assert (directory / name).exists() == (not name.startswith("onnx/"))
        if not name.startswith("onnx/"):
            assert (directory / name).read_bytes() == data
    assert not [p for _, p, _ in hub.requests if "onnx" in p]
    text = config.read_text()
    assert text.startswith("# my gateway\nport: 9000  # kept\n")
    settings = load_settings(config)
    assert settings.port == 9000
    entry = settings.models[-1]
    assert (entry.id, entry.kind, entry.engine, Path(entry.path or "")) == (
        "bge-m3",
        "embedding",
        "bge",
        directory,
    )


def test_ls_lists_pulled_models_with_size_and_the_id_that_serves_them(
    hub: Hub, tmp_path: Path
) -> None:
    config = tmp_path / "serve.yaml"
    assert (
        cli(
            hub,
            tmp_path,
            "pull",
            "rwkv7-g1-0.1b",
            "--config",
            str(config),
            "--strategy",
            "cpu fp32",
            "--id",
            "g1-small",
        ).returncode
        == 0
    )
    assert cli(hub, tmp_path, "pull", "bge-m3", "--strategy", "cpu fp32").returncode == 0
    run = cli(hub, tmp_path, "ls", "--config", str(config))
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines()[1:]}
    assert set(rows) == {"rwkv7-g1-0.1b", "bge-m3"}
    assert rows["rwkv7-g1-0.1b"][1:3] == ["12.58", "MB"]
    assert rows["rwkv7-g1-0.1b"][-1] == "g1-small"
    assert rows["bge-m3"][-1] == "-"


def test_a_pulled_rwkv_checkpoint_is_served_from_the_config_pull_wrote(
    hub: Hub, tmp_path: Path, tiny_dir: Path
) -> None:
    from openai import OpenAI

    from tests.conftest import start_server, stop_server

    hub.repos[G1[0]][G1[1]] = (tiny_dir / "rwkv7-tiny-random.pth").read_bytes()
    config = tmp_path / "serve.yaml"
    run = cli(
        hub, tmp_path, "pull", "rwkv7-g1-0.1b", "--config", str(config), "--strategy", "cpu fp32"
    )
    assert run.returncode == 0, run.stderr
    server = start_server(yaml.safe_load(config.read_text()), tmp_path)
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
        assert "rwkv7-g1-0.1b" in {m.id for m in client.models.list()}
        reply = client.chat.completions.create(
            model="rwkv7-g1-0.1b", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.usage is not None and reply.usage.completion_tokens > 0
    finally:
        stop_server(server)


def test_the_models_command_imports_neither_torch_nor_the_hub_client_until_it_runs() -> None:
    code = (
        "import json, sys, engines.pull, gateway.cli.models; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'huggingface_hub', 'transformers'})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def _entry(model_id: str) -> dict[str, object]:
    return {
        "id": model_id,
        "kind": "chat",
        "engine": "rwkv",
        "path": "/m/x.pth",
        "options": {"strategy": "cpu fp32"},
    }


def test_a_config_without_models_keeps_its_comments_and_serves_the_defaults_plus_the_pull(
    tmp_path: Path,
) -> None:
    from gateway.cli.models import update_config

    config = tmp_path / "c.yaml"
    config.write_text("# mine\nport: 9001  # kept\n")
    assert update_config(config, _entry("g1")) == "added"
    assert config.read_text().startswith("# mine\nport: 9001  # kept\n")
    settings = load_settings(config)
    assert settings.port == 9001
    assert [m.id for m in settings.models] == ["all-minilm-l6-v2", "g1"]


def test_an_entry_with_the_same_id_is_replaced_and_a_flow_list_is_rewritten_whole(
    tmp_path: Path,
) -> None:
    from gateway.cli.models import update_config

    config = tmp_path / "c.yaml"
    config.write_text("models: [{id: g1, kind: chat, engine: rwkv, path: /old.pth}]\n")
    assert update_config(config, _entry("g1")) == "replaced"
    assert update_config(config, _entry("g2")) == "added"
    models = load_settings(config).models
    assert [(m.id, m.path) for m in models] == [("g1", "/m/x.pth"), ("g2", "/m/x.pth")]


def test_a_config_the_gateway_would_refuse_is_not_written(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from gateway.cli.models import update_config

    config = tmp_path / "c.yaml"
    original = "models: [{id: g1, kind: chat, engine: rwkv, path: /g1.pth}]\naliases: {fast: g1}\n"
    config.write_text(original)
    with pytest.raises(ValidationError):
        update_config(config, _entry("fast"))  # an id an alias already names
    assert config.read_text() == original
