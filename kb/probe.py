"""How well an embedding model reads a script, measured once per model: it embeds fixed
paraphrase pairs in Latin and in CJK script, and the gap between the paraphrases' mean
cosine and mismatched pairs' mean cosine puts its cosine on a common scale
(``scoring``) and says how far to trust its dense ranking for queries in that script
(``fusion``). Nothing here is a setting: a multilingual model earns its weight on
Chinese, an English-only one does not."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PAIRS", "Probe", "probe_from_vectors"]

# (a, b) says the same thing twice; a[i] against b[j], i != j, are unrelated.
PAIRS: dict[str, list[tuple[str, str]]] = {
    "latin": [
        ("How do I reset my password?", "I forgot my password and need to change it."),
        (
            "The train to the airport leaves every ten minutes.",
            "Airport trains depart six times an hour.",
        ),
        ("Refunds arrive within five business days.", "You get your money back in about a week."),
        ("The museum is closed on Mondays.", "On Mondays you cannot visit the museum."),
        (
            "Water the tomatoes every morning in summer.",
            "In hot months, tomato plants need daily watering.",
        ),
        (
            "The server returned an out-of-memory error.",
            "The process crashed because it ran out of RAM.",
        ),
        (
            "Our office moves to the fifth floor next week.",
            "Next week the team relocates upstairs to floor five.",
        ),
        (
            "Add two eggs and stir the batter gently.",
            "Mix the batter softly after putting in a couple of eggs.",
        ),
    ],
    "cjk": [
        ("怎么重置我的密码？", "我忘记密码了，需要修改。"),
        ("去机场的火车每十分钟一班。", "机场列车一小时发车六次。"),
        ("退款会在五个工作日内到账。", "大约一周内钱就会退回来。"),
        ("博物馆周一闭馆。", "星期一不能参观博物馆。"),
        ("夏天每天早上给西红柿浇水。", "天热的时候番茄需要每天浇水。"),
        ("服务器返回了内存不足的错误。", "进程因为内存耗尽而崩溃了。"),
        ("我们办公室下周搬到五楼。", "下周团队要搬到楼上的五层。"),
        ("加入两个鸡蛋，轻轻搅拌面糊。", "放进几个鸡蛋后慢慢把面糊拌匀。"),
    ],
}
# The gap of a model that reads a script well (MiniLM on English: ~0.55); trust is the
# model's gap over this, capped at 1.
_GOOD_GAP = 0.45


@dataclass(frozen=True)
class Probe:
    """Per script: (mean cosine of unrelated pairs, of paraphrases)."""

    unrelated: dict[str, float]
    paraphrase: dict[str, float]

    def z(self, cos: np.ndarray | float, script: str) -> np.ndarray | float:
        lo, hi = self.unrelated[script], self.paraphrase[script]
        return (cos - lo) / max(hi - lo, 1e-3)

    def trust(self, script: str) -> float:
        gap = self.paraphrase[script] - self.unrelated[script]
        return float(min(1.0, max(0.0, gap / _GOOD_GAP)))


def probe_sentences() -> list[str]:
    return [s for script in ("latin", "cjk") for pair in PAIRS[script] for s in pair]


def probe_from_vectors(vectors: np.ndarray) -> Probe:
    """The probe from the embeddings of ``probe_sentences()`` (unit vectors, in order)."""
    unrelated, paraphrase = {}, {}
    at = 0
    for script in ("latin", "cjk"):
        n = len(PAIRS[script])
        a = vectors[at : at + 2 * n : 2]
        b = vectors[at + 1 : at + 2 * n : 2]
        at += 2 * n
        sims = a @ b.T
        paraphrase[script] = float(np.mean(np.diag(sims)))
        off = sims[~np.eye(n, dtype=bool)]
        unrelated[script] = float(np.mean(off))
    return Probe(unrelated, paraphrase)
