"""Build the retrieval evaluation sets from text that is already on the machine (see
SOURCES.md). Nothing is downloaded and no external benchmark is copied: the documents
are read where they lie, the queries are generated from them, and the sets are written
to ``bench/eval/generated/`` (not committed; rebuilt on demand, deterministic).

Queries are made two ways from a sentence picked in a document:
- **cloze**: the sentence is removed from the document that is indexed and used as the
  query, so the query's words are not in the answer verbatim and only the context around
  the gap can find it (a paraphrase-like query);
- **keywords**: three or four of that sentence's content words (jieba words for Chinese).

Every query is labelled dev or test by a hash of its text; tune on dev, report test. A
query's relevant documents are every document that still contains the removed sentence
(near-duplicate documents are relevant too).

    python bench/eval/build.py
"""

from __future__ import annotations

import gettext
import hashlib
import importlib.metadata as md
import json
import random
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from kb.keywords import STOPWORDS  # noqa: E402

OUT = ROOT / "bench" / "eval" / "generated"
_CJK = re.compile(r"[\u4e00-\u9fff]")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_SENT_EN = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_SENT_ZH = re.compile(r"(?<=[。！？；])")


def split_of(text: str) -> str:
    return (
        "dev"
        if int(hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest(), 16) % 2 == 0
        else "test"
    )


# -- sources -------------------------------------------------------------------------------


def pydoc_topics() -> dict[str, str]:
    """Python's language reference topics (``pydoc_data``, in every CPython)."""
    from pydoc_data.topics import topics

    return {f"py-{k}": v for k, v in sorted(topics.items()) if len(v) > 1500}


def package_readmes() -> dict[str, str]:
    """Long descriptions of the installed distributions (their READMEs)."""
    docs = {}
    for dist in md.distributions():
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        name = str(dist.metadata["Name"]).lower()
        if len(body) > 3000 and "\ufffd" not in body:
            docs[f"readme-{name}"] = str(body)
    return dict(sorted(docs.items()))


def gettext_zh(root: Path = Path("/usr/share/locale/zh_CN/LC_MESSAGES")) -> dict[str, str]:
    """Chinese translations of programs' messages (one document per catalog)."""
    docs: dict[str, str] = {}
    seen: set[str] = set()
    for path in sorted(root.glob("*.mo")):
        try:
            catalog = gettext.GNUTranslations(path.open("rb"))._catalog  # type: ignore[attr-defined]
        except (OSError, ValueError):
            continue
        lines = [v.strip() for k, v in catalog.items() if k and isinstance(v, str) and v.strip()]
        text = "\n".join(dict.fromkeys(lines))
        digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        if len(_CJK.findall(text)) >= 3000 and digest not in seen:
            seen.add(digest)
            docs[f"mo-{path.stem}"] = text
    return docs


def authored(lang: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The project's own small set (documents written for it, with human questions)."""
    data = json.loads((ROOT / "bench" / "eval" / f"{lang}.json").read_text())
    queries = [
        {
            "q": item["q"],
            "relevant": [item["doc"]],
            "kind": "question",
            "split": split_of(item["q"]),
        }
        for item in data["questions"]
    ]
    return data["docs"], queries


# -- queries -------------------------------------------------------------------------------


def _sentences(text: str, lang: str) -> list[str]:
    parts = _SENT_ZH.split(text) if lang == "zh" else _SENT_EN.split(text)
    out = []
    for p in (x.strip() for x in parts):
        if lang == "zh":
            for line in p.splitlines():
                if len(_CJK.findall(line)) >= 12 and len(line) <= 200:
                    out.append(line.strip())
        elif 8 <= len(p.split()) <= 40 and "\n\n" not in p and not p.startswith(("```", ">>>")):
            out.append(" ".join(p.split()))
    return out


def _keywords(sentence: str, lang: str, rng: random.Random) -> str | None:
    if lang == "zh":
        import jieba

        words = [w for w in jieba.cut(sentence) if len(_CJK.findall(w)) >= 2]
    else:
        words = [w for w in _WORD.findall(sentence) if w.lower() not in STOPWORDS]
    words = list(dict.fromkeys(words))
    if len(words) < 3:
        return None
    picked = rng.sample(words, min(len(words), rng.choice([3, 4])))
    return " ".join(picked) if lang != "zh" else "".join(picked)


def generated(
    docs: dict[str, str], lang: str, per_doc: int, seed: int
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Cloze and keyword queries, ``per_doc`` sentences per document at most."""
    rng = random.Random(seed)
    indexed = dict(docs)
    queries: list[dict[str, Any]] = []
    used: set[str] = set()
    for doc_id, text in docs.items():
        candidates = [s for s in _sentences(text, lang) if s not in used]
        for sentence in rng.sample(candidates, min(per_doc, len(candidates))):
            used.add(sentence)
            indexed[doc_id] = indexed[doc_id].replace(sentence, " ", 1)
            relevant = [doc_id] + [d for d, t in indexed.items() if d != doc_id and sentence in t]
            queries.append(
                {"q": sentence, "relevant": relevant, "kind": "cloze", "split": split_of(sentence)}
            )
            words = _keywords(sentence, lang, rng)
            if words:
                queries.append(
                    {"q": words, "relevant": relevant, "kind": "keywords", "split": split_of(words)}
                )
    return indexed, queries


def build() -> dict[str, dict[str, Any]]:
    sets: dict[str, dict[str, Any]] = {}

    def add(
        name: str, lang: str, source: str, docs: dict[str, str], queries: Iterable[dict[str, Any]]
    ) -> None:
        qs = list(queries)
        sets[name] = {"lang": lang, "source": source, "docs": docs, "queries": qs}

    for lang in ("en", "zh"):
        docs, qs = authored(lang)
        add(f"{lang}-authored", lang, f"bench/eval/{lang}.json", docs, qs)
    docs, qs = generated(pydoc_topics(), "en", 4, 1)
    add("en-pydoc", "en", "pydoc_data.topics", docs, qs)
    readmes = package_readmes()
    if readmes:
        docs, qs = generated(readmes, "en", 3, 2)
        add("en-readmes", "en", "installed distributions' long descriptions", docs, qs)
    mo = gettext_zh()
    if mo:
        docs, qs = generated(mo, "zh", 8, 3)
        add("zh-gettext", "zh", "/usr/share/locale/zh_CN gettext catalogs", docs, qs)
    return sets


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (OUT / f"{name}.json").write_text(json.dumps(data, ensure_ascii=False))
        dev = sum(q["split"] == "dev" for q in data["queries"])
        chars = sum(len(t) for t in data["docs"].values())
        print(
            f"{name:<14} {len(data['docs']):>5} docs {chars:>9} chars "
            f"{dev:>5} dev / {len(data['queries']) - dev:>5} test queries"
        )


if __name__ == "__main__":
    main()
