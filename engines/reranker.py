"""Cross-encoder reranker through FlagEmbedding's FlagReranker on a local path.

FlagReranker loads the tokenizer and sequence-classification model; like the embedder we
run one forward per batch instead of ``compute_score`` (which probes first). Scores are
the model's logit through a sigmoid, so every ``relevance_score`` is in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engines.base import ModelInfo, RerankScores
from engines.hf import HFTokenizer, max_input_tokens, offline_env, pick_device, place
from engines.options import RerankerOptions

__all__ = ["FlagCrossEncoder"]


class FlagCrossEncoder:
    def __init__(
        self, info: ModelInfo, path: Path, options: Mapping[str, Any] | RerankerOptions
    ) -> None:
        opts = RerankerOptions.of(options)
        offline_env()
        import torch
        from FlagEmbedding import FlagReranker

        self._torch = torch
        self.device = pick_device(opts.device)
        use_fp16 = self.device.startswith("cuda") if opts.fp16 is None else opts.fp16
        flag: Any = FlagReranker(str(path), use_fp16=use_fp16, devices=self.device)
        self._flag = flag
        self._model = place(flag.model, self.device)
        self._hf_tokenizer = flag.tokenizer
        self.max_input_tokens = max_input_tokens(self._model.config, opts.max_length)
        self.normalize = opts.normalize
        self.tokenizer = HFTokenizer(self._hf_tokenizer, self.max_input_tokens)
        self.info = ModelInfo(
            id=info.id,
            kind="rerank",
            engine="flag-reranker",
            owned_by=info.owned_by,
            created=info.created,
            max_input_tokens=self.max_input_tokens,
            extra={"device": self.device},
        )

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        return self.score_pairs(pairs, self.max_input_tokens).scores

    def score_pairs(self, pairs: list[tuple[str, str]], max_tokens: int) -> RerankScores:
        torch = self._torch
        enc = self._hf_tokenizer(
            [q for q, _ in pairs],
            [d for _, d in pairs],
            padding=True,
            truncation=True,
            max_length=min(max_tokens, self.max_input_tokens),
            return_tensors="pt",
        ).to(self.device)
        counts = [int(n) for n in enc["attention_mask"].sum(dim=1).tolist()]
        with torch.inference_mode():
            logits = self._model(**enc, return_dict=True).logits.view(-1).float()
            scores = torch.sigmoid(logits) if self.normalize else logits
        return RerankScores([float(s) for s in scores.cpu().tolist()], counts)

    def flag_compute_score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """FlagEmbedding's own compute_score (with its probe forward); for the benchmark."""
        out = self._flag.compute_score([list(p) for p in pairs], normalize=self.normalize)
        return [float(x) for x in (out if isinstance(out, list) else [out])]

    def close(self) -> None:
        self._model = None
        self._flag = None
