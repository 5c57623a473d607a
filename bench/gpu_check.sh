#!/usr/bin/env bash
# GPU checks, one prepared script (well under 10 minutes on an H100/H200):
#  1. correctness on CUDA: the batched decode (eager and graph) and the chunked prefill
#     (fla kernels when installed) against the package's own forward, x060 and x070;
#  2. bench/chat.py on a 1.5B shape (24 x 2048 x070, fp16): decode at 1/16/64/256 streams,
#     prefill 1x2048 and 8x2048, TTFT of a 2,000-token prompt, the package's loop, HTTP,
#     and json_schema-constrained vs plain rows at 1 and 8 streams (--constrained).
# Wheels the device lacks (fla-core, einops, the web stack) go in shared/wheels.
set -uo pipefail
OUT="${OUT:-bench/results}"
mkdir -p "$OUT" /tmp/models
if [ -d shared/wheels ]; then pip install -q --no-index --find-links shared/wheels fla-core einops \
  llguidance litestar uvicorn msgspec pydantic-settings prometheus-client sqlite-utils mcp pypdf openpyxl \
  trafilatura multipart charset-normalizer lxml tqdm swagger-ui-bundle httpx 2>&1 | tail -2; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
export PYTHONUNBUFFERED=1
python3 bench/gpu_verify.py --out "$OUT/verify-cuda.json" 2>&1 | tee "$OUT/verify-cuda.log"
timeout 420 python3 bench/chat.py --device cuda --layers 24 --embd 2048 --streams 1,16,64,256 \
  --tokens 128 --prefill-tokens 2048 --prefill-chunk 2048 --token-budget 16384 --package-tokens 128 \
  --constrained --model-dir /tmp/models --out "$OUT/chat-cuda.json" 2>&1 | grep -v "^$" | tee "$OUT/chat-cuda.log"
