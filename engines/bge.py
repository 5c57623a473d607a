"""BGE embedders through FlagEmbedding (FlagModel, BGEM3FlagModel) on a local path.

FlagEmbedding loads the model, tokenizer and (for BGE-M3) its heads. Its ``encode`` runs a
probe forward on every call to size batches; our batcher already sizes batches, so we call
the loaded modules directly: one forward per batch (bench/embeddings.py measures the probe).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EmbeddingBatch, ModelInfo
from engines.hf import HFTokenizer, max_input_tokens, offline_env, pick_device, place
from engines.options import BGEOptions

__all__ = ["BGEEmbedder"]

log = logging.getLogger(__name__)


class BGEEmbedder:
    def __init__(
        self, info: ModelInfo, path: Path, options: Mapping[str, Any] | BGEOptions
    ) -> None:
        opts = BGEOptions.of(options)
        offline_env()
        import torch
        from FlagEmbedding import BGEM3FlagModel, FlagModel

        self._torch = torch
        self.device = pick_device(opts.device)
        use_fp16 = self.device.startswith("cuda") if opts.fp16 is None else opts.fp16
        self.is_m3 = (path / "colbert_linear.pt").exists() if opts.m3 is None else opts.m3
        self.pooling: str = opts.pooling
        if self.is_m3:
            flag: Any = BGEM3FlagModel(
                str(path), use_fp16=use_fp16, devices=self.device, pooling_method="cls"
            )
            self.pooling = "cls"
        else:
            flag = FlagModel(
                str(path),
                use_fp16=use_fp16,
                devices=self.device,
                pooling_method=self.pooling,
                normalize_embeddings=True,
            )
        self._flag = flag
        self._model = place(flag.model, self.device)
        self._hf_tokenizer = flag.tokenizer
        config = self._model.model.config if self.is_m3 else self._model.config
        self.max_input_tokens = max_input_tokens(config, opts.max_length)
        self.dimensions = int(config.hidden_size)
        self.tokenizer = HFTokenizer(self._hf_tokenizer, self.max_input_tokens)
        self.info = ModelInfo(
            id=info.id,
            kind=info.kind,
            engine="bge-m3" if self.is_m3 else "bge",
            owned_by=info.owned_by,
            created=info.created,
            dimensions=self.dimensions,
            max_input_tokens=self.max_input_tokens,
            extra={"pooling": self.pooling, "device": self.device},
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts, self.max_input_tokens).vectors

    def encode(self, texts: list[str], max_tokens: int) -> EmbeddingBatch:
        torch = self._torch
        enc = self._hf_tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=min(max_tokens, self.max_input_tokens),
            return_tensors="pt",
        ).to(self.device)
        counts = [int(n) for n in enc["attention_mask"].sum(dim=1).tolist()]
        with torch.inference_mode():
            sparse = None
            if self.is_m3:
                out = self._model(text_input=dict(enc), return_dense=True, return_sparse=True)
                vecs = out["dense_vecs"]
                sparse = self._lexical(enc, out["sparse_vecs"])
            else:
                hidden = self._model(**enc, return_dict=True).last_hidden_state
                if self.pooling == "mean":
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vecs = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                else:
                    vecs = hidden[:, 0]
            vecs = torch.nn.functional.normalize(vecs.float(), dim=-1)
        return EmbeddingBatch(vecs.cpu().numpy().astype(np.float32, copy=False), counts, sparse)

    def _lexical(self, enc: Any, weights: Any) -> list[dict[int, float]]:
        """Per input, each token id's largest weight (special tokens dropped), as
        BGE-M3's ``lexical_weights``."""
        tok = self._hf_tokenizer
        special = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
        ids = enc["input_ids"].cpu().tolist()
        mask = enc["attention_mask"].cpu().tolist()
        w = weights.squeeze(-1).float().cpu().tolist()
        out: list[dict[int, float]] = []
        for row_ids, row_mask, row_w in zip(ids, mask, w, strict=True):
            lex: dict[int, float] = {}
            for t, m, x in zip(row_ids, row_mask, row_w, strict=True):
                if m and t not in special and x > 0 and x > lex.get(t, 0.0):
                    lex[t] = x
            out.append(lex)
        return out

    def flag_encode(self, texts: list[str]) -> np.ndarray:
        """FlagEmbedding's own encode (with its probe forward); for the benchmark only."""
        out = self._flag.encode(list(texts), batch_size=max(1, len(texts)))
        if isinstance(out, dict):
            out = out["dense_vecs"]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self._model = None
        self._flag = None
