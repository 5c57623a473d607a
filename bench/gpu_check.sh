#!/usr/bin/env bash
# GPU checks, one prepared script that installs what it needs (about 8 minutes on an H200):
#  0. install: the wheels `make gpu-wheels` put in .whl/ (no index, no dependency
#     resolution) into a scratch site directory; the machine's own torch and triton stay;
#  1. verify: the batched decode (eager and graph) and the chunked prefill (fla kernels)
#     against the package's own forward, x070 then x060 (bench/gpu_verify.py);
#  2. chat: bench/chat.py on a 1.5B shape (24 x 2048 x070, fp16): decode at 1/16/64/256
#     streams, prefill 1x2048 and 8x2048, TTFT of a 2,000-token prompt, the package's loop,
#     HTTP, and json_schema-constrained vs plain rows (--constrained).
# Each part writes its JSON as it ends, and $OUT/gpu-check.json records every part's status
# after each one, so a timeout keeps what was done. The first failure stops the script with
# a line saying which part failed.
#
# DEVICE=cpu: a dry run of every part on a tiny shape in the current environment (no
# install step, no .whl/): CI runs it (tests/engines/test_gpu_check.py).
set -euo pipefail
DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-bench/results}"
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
SITE="${SITE:-/tmp/gpu-check-site}"
CHAT_TIMEOUT="${CHAT_TIMEOUT:-330}"
CHAT_PORT="${CHAT_PORT:-18900}"
SUMMARY="$OUT/gpu-check.json"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

# status PART STATUS: record PART's status in the summary (created on the first call).
status() {
  "$PY" - "$SUMMARY" "$DEVICE" "$1" "$2" <<'EOF'
import json, sys, time
from pathlib import Path

path, device, part, state = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
data = json.loads(path.read_text()) if path.exists() else {"device": device, "parts": {}}
data["parts"][part] = {"status": state, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
path.write_text(json.dumps(data, indent=2))
EOF
}

fail() {
  echo "gpu_check: FAILED in part '$1' (see $OUT/$1.log); its last lines:" >&2
  tail -n 30 "$OUT/$1.log" >&2 2>/dev/null || true
  status "$1" failed || true
  exit 1
}

rm -f "$SUMMARY"
status start ok

if [ "$DEVICE" = cuda ]; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || fail install
  {
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHEELS"/*.whl
  } >"$OUT/install.log" 2>&1 || fail install
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import fla, rwkv, llguidance, litestar, uvicorn, msgspec, pydantic_settings" \
    >>"$OUT/install.log" 2>&1 || fail install
  status install ok
  LAYERS=12 EMBD=1024
  CHAT_ARGS=(--layers 24 --embd 2048 --streams 1,16,64,256 --tokens 128 --prefill-tokens 2048
    --prefill-chunk 2048 --token-budget 16384 --package-tokens 128 --model-dir /tmp/models)
  mkdir -p /tmp/models
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    >"$OUT/gpu.txt" 2>&1 || fail env
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  status install skipped
  LAYERS=1 EMBD=64
  CHAT_ARGS=(--layers 1 --embd 64 --streams 1,2 --tokens 16 --prefill-tokens 64
    --prefill-chunk 64 --token-budget 256 --package-tokens 4)
  : >"$OUT/gpu.txt"
fi
"$PY" -c "import torch; print('torch', torch.__version__, torch.version.cuda)" \
  >>"$OUT/gpu.txt" 2>&1 || fail env
status env ok

"$PY" bench/gpu_verify.py --device "$DEVICE" --layers "$LAYERS" --embd "$EMBD" \
  --out "$OUT/verify-$DEVICE.json" >"$OUT/verify.log" 2>&1 || fail verify
status verify ok

timeout "$CHAT_TIMEOUT" "$PY" bench/chat.py --device "$DEVICE" "${CHAT_ARGS[@]}" --constrained \
  --port "$CHAT_PORT" --server-start-timeout 120 --out "$OUT/chat-$DEVICE.json" \
  >"$OUT/chat.log" 2>&1 || fail chat
status chat ok
echo "gpu_check: every part passed; results in $OUT"
