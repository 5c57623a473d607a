#!/usr/bin/env bash
# GPU checks, one prepared script: batched decode step vs the package on CUDA (x060, x070),
# then bench/chat.py on a 1.6B-shaped random x070 in fp16 (engine in process).
set -uo pipefail
OUT="${OUT:-bench/results}"
mkdir -p "$OUT" /tmp/models
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
export PYTHONUNBUFFERED=1
python3 bench/chat.py --device cuda --transport engine --version x060 --layers 12 --embd 1024 \
  --verify-only --model-dir /tmp/models --out "$OUT/verify-x060.json" 2>&1 | grep -v "^$" | tee "$OUT/verify-x060.log"
python3 bench/chat.py --device cuda --transport engine --version x070 --layers 24 --embd 2048 \
  --verify --tokens 256 --stream-tokens 128 --model-dir /tmp/models --out "$OUT/chat-cuda.json" 2>&1 \
  | grep -v "^$" | tee "$OUT/chat-cuda.log"
