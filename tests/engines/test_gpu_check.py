"""The device script bench/gpu_check.sh, dry-run on the CPU (DEVICE=cpu, a tiny shape, the
current environment): every part runs and writes its JSON, as on the GPU."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(600)
def test_the_gpu_check_runs_every_part_on_the_cpu(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
        "CHAT_PORT": str(_free_port()),
        "WHEELS": str(tmp_path / "no-wheels"),  # the CPU run must not need them
    }
    proc = subprocess.run(
        ["bash", "bench/gpu_check.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=570,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((tmp_path / "gpu-check.json").read_text())
    assert summary["device"] == "cpu"
    parts = {k: v["status"] for k, v in summary["parts"].items()}
    assert parts == {
        "start": "ok",
        "install": "skipped",
        "env": "ok",
        "verify": "ok",
        "chat": "ok",
    }

    verify = json.loads((tmp_path / "verify-cpu.json").read_text())
    assert [v["version"] for v in verify] == ["x070", "x060"]
    for v in verify:
        assert "error" not in v
        assert v["prefill_max_abs_diff"] <= 1e-3
        agree, total = map(int, v["decode_greedy_agreement"].split("/"))
        assert agree == total > 0
        assert v["paths"]["decode"] == "eager"
        assert v["paths"]["prefill"] == "torch-chunked"

    chat = json.loads((tmp_path / "chat-cpu.json").read_text())
    assert chat["package_tok_s"] > 0
    assert set(chat["decode_tok_s"]) == {"1", "2"}
    assert all(rate > 0 for rate in chat["decode_tok_s"].values())
    assert set(chat["prefill_tok_s"]) == {"1x64", "8x64"}
    assert chat["paths"] == {
        "decode": "eager",
        "prefill": "torch-chunked",
        "prefill_fallback": None,
    }
    assert chat["constrained"]
    assert set(chat["http_ratio"]) == {"1", "2"}


def test_the_gpu_check_stops_at_a_failing_part_and_says_which(tmp_path: Path) -> None:
    """DEVICE=cuda without the wheels: the install part fails first, recorded as such."""
    env = {
        **os.environ,
        "DEVICE": "cuda",
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
        "WHEELS": str(tmp_path / "no-wheels"),
    }
    proc = subprocess.run(
        ["bash", "bench/gpu_check.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "FAILED in part 'install'" in proc.stderr
    summary = json.loads((tmp_path / "gpu-check.json").read_text())
    assert summary["parts"]["install"]["status"] == "failed"
    assert "verify" not in summary["parts"]


def test_the_chat_benchmark_stops_waiting_when_its_server_dies(tmp_path: Path) -> None:
    """A server that exits during start-up (its model file is missing) is reported at once,
    with its log, instead of being polled for the whole start-up timeout."""
    sys.path.insert(0, str(ROOT))
    from bench.chat import OverHTTP

    missing = tmp_path / "missing.pth"
    with pytest.raises(RuntimeError, match="exited with") as info:
        OverHTTP(missing, {"strategy": "cpu fp32"}, 1, tmp_path, _free_port(), 240.0)
    assert "missing" in str(info.value)
