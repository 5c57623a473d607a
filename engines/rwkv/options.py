"""The RWKV engine's options (``models[].options``), validated once at load: a misspelt
option stops startup instead of being ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RWKVOptions"]


class RWKVOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: str | None = Field(
        None, description="cpu fp32 | cpu bf16 | cuda fp16 | cuda bf16 (default: by hardware)."
    )
    jit: bool = Field(True, description="RWKV_JIT_ON for the package's own forward.")
    cuda_kernels: bool = Field(False, description="RWKV_CUDA_ON: build the package's kernel.")
    context_length: int = Field(8192, ge=16, description="Most tokens of prompt and answer.")
    max_batch_size: int = Field(8, ge=1, le=4096, description="Sequences decoded together.")
    max_queued: int = Field(64, ge=0, description="Requests waiting beyond this answer 429.")
    max_prefill_chunk: int = Field(
        256, ge=1, description="Most tokens of one prompt prefilled per scheduler step."
    )
    max_prefill_batch: int = Field(
        8, ge=1, le=512, description="Prompts prefilled together in one step."
    )
    step_token_budget: int = Field(
        1024,
        ge=1,
        description=(
            "Tokens per scheduler step, shared by the decode rows (one each) and prefill "
            "chunks (every prefilling prompt advances at least one token), so a long "
            "prompt never stalls decoding. On a CPU each prefill slice is a pass over all "
            "the weights: small budgets put that cost into more steps and raise the "
            "running streams' median gap; large ones make rarer, longer gaps."
        ),
    )
    prefix_cache_bytes: int = Field(
        256 * 2**20, ge=0, description="Prefix-state cache on the model's device."
    )
    prefix_cache_host_bytes: int | None = Field(
        None,
        ge=0,
        description=(
            "Prefix states spilled to host memory past prefix_cache_bytes (null: four times "
            "prefix_cache_bytes on a GPU, none on a CPU, whose memory is the host's)."
        ),
    )
    state_store: Literal["dir", "postgres"] = Field(
        "dir",
        description=(
            "Where the shared (disk) tier of states lives: `dir`, a directory "
            "(state_disk_dir); `postgres`, a table in PostgreSQL (state_postgres_dsn, else "
            "the knowledge base's database), which every replica reads."
        ),
    )
    state_disk_dir: str | None = Field(
        None,
        description=(
            "Directory of the disk tier of prefix states (null: data_dir/states). Processes "
            "and replicas serving the same model may share it."
        ),
    )
    state_postgres_dsn: str | None = Field(
        None,
        description=(
            "PostgreSQL DSN of the `postgres` state store (null: the knowledge base's when "
            "its backend is postgres)."
        ),
    )
    state_disk_bytes: int = Field(
        4 * 2**30,
        ge=0,
        description=(
            "Byte budget of the disk tier; the least recently used states go past it "
            "(0: no disk tier)."
        ),
    )
    state_retention_s: float = Field(
        7 * 86400.0,
        ge=0,
        description="Disk states unused for this long are deleted (0: kept until evicted).",
    )
    state_disk_min_tokens: int = Field(
        64,
        ge=0,
        description=(
            "Shorter prefixes are not written to disk: re-reading them costs less than a file."
        ),
    )
    state_disk_queue: int = Field(
        64,
        ge=1,
        description="States waiting to be written behind; past it new ones are not saved.",
    )
    cuda_graphs: bool = Field(True, description="Capture the decode step as CUDA graphs.")
    cuda_graph_capture_mode: Literal["thread_local", "global", "relaxed"] = Field(
        "thread_local",
        description=(
            "CUDA's stream-capture mode for the decode graphs: thread_local lets other "
            "threads (models loading beside this one) use the GPU during a capture; global "
            "makes their unsafe calls fail the capture."
        ),
    )
    prefill_kernel: Literal["auto", "fla", "rwkv-cuda", "torch"] = Field(
        "auto",
        description=(
            "WKV for prefill: fla (flash-linear-attention, CUDA), rwkv-cuda (the package's "
            "kernel, one prompt at a time), torch (chunked matrix form); auto picks."
        ),
    )
    linear_kernel: Literal["auto", "dense", "onednn", "int8"] = Field(
        "auto",
        description=(
            "How the CPU step multiplies by its large weights: dense (x @ W, as the rwkv "
            "package keeps them), onednn (packed once for oneDNN: several times faster for "
            "2-16 rows; keeps a second fp32 copy of those weights), int8 (dynamically "
            "quantized, a quarter of the bytes, approximate logits); auto: onednn for "
            "cpu fp32 while that copy fits in a quarter of the machine's memory, else dense."
        ),
    )
    wkv_chunk: int = Field(16, ge=1, le=128, description="Tokens per chunk of the torch WKV.")
    fla_chunk: Literal[16, 32, 64] = Field(
        64, description="Tokens per chunk of fla's RWKV-7 prefill kernel."
    )
    stalled_reader_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "A stream whose reader takes nothing for this long, with events piling up, is "
            "cancelled and frees its slot."
        ),
    )
    stalled_reader_events: int = Field(
        64, ge=1, description="Unread events that, with the timeout, make a reader stalled."
    )
    max_share_per_key: float = Field(
        0.5,
        gt=0,
        le=1,
        description=(
            "While others wait, one API key may hold at most this share of the batch slots."
        ),
    )
    states: dict[str, str] = Field(default_factory=dict, description="State files by name.")
    chat_template: dict[str, Any] | None = Field(None, description="The chat template.")
