"""The knowledge base's own settings: uploads, loaders, ingestion, indexes, retrieval,
web-page fetching. The gateway's root settings hold them under ``knowledge``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["KnowledgeSettings", "UrlFetchSettings"]


class UrlFetchSettings(BaseModel):
    """How the knowledge base fetches web pages (`/v1/vector_stores/{id}/urls`)."""

    model_config = ConfigDict(extra="forbid")

    allow_private_networks: bool = Field(
        False,
        description=(
            "Fetch loopback, private, link-local and other non-public addresses. Off by "
            "default: the check runs after DNS resolution and on every redirect."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names allowed even when they resolve to a private address.",
    )
    timeout_s: float = Field(
        20.0, gt=0, description="Connect timeout, and most time between two reads, of a fetch."
    )
    total_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Most time for a whole fetch: DNS, connect, redirects, headers and the whole "
            "body. A page that dribbles its bytes is cut here."
        ),
    )
    max_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1024,
        description="Largest body fetched from a URL; refused while it arrives, past this.",
    )
    max_redirects: int = Field(5, ge=0, le=20, description="Most redirects followed.")
    user_agent: str = Field("rwkv-rag-gateway/0.1", description="User-Agent of fetches.")


class WebSearchSettings(BaseModel):
    """Web-search ingestion (`/v1/vector_stores/{id}/web_search`)."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["searxng"] | None = Field(
        None, description="The search provider (null: web-search ingestion is off)."
    )
    url: str | None = Field(None, description="The provider's base URL (SearXNG's).")
    timeout_s: float = Field(
        15.0, gt=0, description="Connect timeout, and most time between two reads, of a search."
    )
    total_timeout_s: float = Field(
        20.0,
        gt=0,
        description="Most time for a whole search request, the provider's whole answer included.",
    )
    max_response_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest answer read from the provider; refused while it arrives, past this.",
    )
    default_results: int = Field(5, ge=1, description="Results ingested when none is asked.")
    max_results: int = Field(20, ge=1, description="Most results one search may ingest.")


class PostgresSettings(BaseModel):
    """The shared PostgreSQL + pgvector backend (``knowledge.backend: postgres``)."""

    model_config = ConfigDict(extra="forbid")

    dsn: str | None = Field(
        None,
        description="libpq connection string or URL (postgresql://user:pass@host/db); "
        "never logged.",
    )
    pool_min_size: int = Field(1, ge=0, description="Connections kept open per process.")
    pool_max_size: int = Field(10, ge=1, description="Most connections per process.")
    connect_timeout_s: float = Field(
        5.0, gt=0, description="Seconds to wait for a connection before answering 503."
    )
    statement_timeout_s: float = Field(
        30.0, gt=0, description="Most seconds one statement may run."
    )
    hnsw_ef_search: int = Field(
        100,
        ge=10,
        le=1000,
        description="pgvector's HNSW search beam (hnsw.ef_search) for this backend.",
    )
    file_part_bytes: int = Field(
        1 << 20, ge=4096, description="Uploaded bytes are stored in parts of this size."
    )


class KnowledgeSettings(BaseModel):
    """The knowledge base: uploads, loaders, ingestion, indexes, retrieval."""

    model_config = ConfigDict(extra="forbid")

    embedding_model: str | None = Field(
        None,
        description=(
            "Embedding model of new vector stores (null = the first embedding model served)."
        ),
    )
    rerank_model: str | None = Field(
        "auto",
        description=(
            "Rerank model for vector store search (`auto` = the first rerank model served, "
            "null = no rerank step). A request's ranking_options.ranker `none` skips it."
        ),
    )
    rerank_candidates: int = Field(
        20, ge=1, le=200, description="How many fused hits the reranker re-scores."
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="Largest file accepted by POST /v1/files (streamed to disk; 413 past it).",
    )
    allowed_extensions: list[str] = Field(
        default_factory=lambda: [
            ".txt",
            ".md",
            ".markdown",
            ".pdf",
            ".xlsx",
            ".html",
            ".htm",
            ".csv",
            ".json",
            ".docx",
            ".pptx",
            ".epub",
        ],
        description="File types vector stores ingest (by extension).",
    )
    max_pdf_pages: int = Field(
        2000, ge=1, description="PDF pages read per file; longer PDFs fail with a clear error."
    )
    max_sheet_rows: int = Field(
        200_000, ge=1, description="Spreadsheet rows read per file (all sheets together)."
    )
    max_extracted_chars: int = Field(
        50_000_000, ge=1000, description="Text extracted per file before it fails as too big."
    )
    max_cells_per_row: int = Field(
        16_384, ge=1, description="Most cells in one spreadsheet or CSV row."
    )
    max_cell_chars: int = Field(
        65_536, ge=16, description="Most characters in one spreadsheet or CSV cell."
    )
    max_header_chars: int = Field(
        128,
        ge=8,
        description=(
            "A column header is cut to this many characters where it repeats in each row's record."
        ),
    )
    max_html_depth: int = Field(
        200, ge=16, description="Markup nested deeper is flattened (its text kept)."
    )
    max_text_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest text, CSV, HTML or JSON file read."
    )
    max_xlsx_uncompressed_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024,
        description="Zip-bomb guard: an xlsx whose members inflate past this is refused.",
    )
    max_xlsx_compression_ratio: float = Field(
        200.0, ge=1, description="Zip-bomb guard: refuse an xlsx member inflating past this."
    )
    embed_batch_size: int = Field(
        64, ge=1, description="Chunks embedded per call during ingestion."
    )
    ingest_workers: int = Field(
        2,
        ge=1,
        le=16,
        description=(
            "Files ingested concurrently (per process), so one slow or huge file does not "
            "hold up the files queued behind it."
        ),
    )
    web_search: WebSearchSettings = Field(default_factory=WebSearchSettings)
    ocr: bool = Field(
        True,
        description="OCR PDF pages without a text layer when Tesseract is installed.",
    )
    ocr_languages: str | None = Field(
        None,
        pattern=r"^[A-Za-z_+]+$",
        description="Tesseract languages (e.g. eng+chi_sim); default: eng+chi_sim where "
        "installed. A vector store file's ocr_languages overrides it.",
    )
    ocr_page_timeout_s: float = Field(
        60.0, gt=0, description="Most seconds OCR may spend on one PDF page."
    )
    max_seconds_per_file: float = Field(
        300.0,
        gt=0,
        description="Wall-clock budget of one file's ingestion; past it the file fails.",
    )
    max_chunks_per_file: int = Field(
        250_000, ge=1, description="Most chunks one file may make; past it the file fails."
    )
    backend: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="Where the knowledge base lives: embedded SQLite + FAISS (one process) "
        "or PostgreSQL + pgvector (shared by several gateway replicas).",
    )
    postgres: PostgresSettings = Field(
        default_factory=lambda: PostgresSettings(), description="The postgres backend."
    )
    lease_s: float = Field(
        60.0,
        gt=0,
        description=(
            "An ingestion job's lease: renewed while a worker runs it; a job whose worker "
            "died is taken over once its lease runs out (shared backends)."
        ),
    )
    poll_interval_s: float = Field(
        1.0, gt=0, description="How often idle ingestion workers look for new jobs."
    )
    max_job_attempts: int = Field(
        3, ge=1, description="Interrupted ingestions resumed at most this many times."
    )
    ann_threshold: int = Field(
        50_000,
        ge=1,
        description="Past this many chunks a store's index switches from exact to ANN.",
    )
    ann_index: Literal["hnsw", "ivf"] = Field(
        "hnsw", description="The approximate index past ann_threshold: HNSW graph or IVF."
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW links per node.")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build-time beam width.")
    hnsw_ef_search: int = Field(
        256, ge=8, description="HNSW search beam width (higher = better recall, slower)."
    )
    ann_nprobe: int = Field(32, ge=1, description="IVF lists searched per query.")
    search_candidates: int = Field(
        50, ge=1, le=1000, description="Hits each of dense and keyword search contribute."
    )
    fusion: Literal["calibrated", "convex", "rrf", "relative", "dbsf"] = Field(
        "calibrated",
        description=(
            "How dense and BM25 lists are fused: `calibrated` (every candidate of both "
            "lists ranked by the absolute score's log-odds, kb/scoring.py, plus the "
            "saturated BM25 score times `calibrated_bm25_weight`; stores with BGE-M3 sparse "
            "weights use `relative`), `convex` (a weighted "
            "sum of the cosine on the model's probe scale and the saturated BM25), "
            "`relative` (weighted min-max normalised scores), `dbsf` (scores normalised by "
            "mean +- 3 sigma) or `rrf` (reciprocal rank). Chosen on the evaluation sets' "
            "dev queries (bench/eval/fusion.py)."
        ),
    )
    calibrated_bm25_weight: float = Field(
        8.0,
        ge=0,
        description=(
            "`calibrated` fusion: weight of the saturated BM25 score added to the score "
            "model's log-odds when ordering hybrid hits (the reported score leaves it out)."
        ),
    )
    convex_dense_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "`convex` fusion: the dense score's share of the fused score (the BM25 score "
            "has the rest), before the trust and list weights scale it."
        ),
    )
    bm25_half: float = Field(
        16.0,
        gt=0,
        description=(
            "`calibrated` and `convex` fusion: the BM25 score that counts as half of a "
            "full keyword match (bm25 / (bm25 + half))."
        ),
    )
    rrf_k: float = Field(60.0, gt=0, description="Reciprocal rank fusion constant.")
    keyword_stemming: bool = Field(
        True,
        description=(
            'Search English words by their stems ("installing" finds "install"); CJK '
            "bigrams and other scripts are matched as written. Stores made before the "
            "stemmed index existed are rebuilt in the background at startup and search "
            "unstemmed until that finishes."
        ),
    )
    keyword_rebuild_batch: int = Field(
        500,
        ge=1,
        le=100_000,
        description=(
            "Chunks copied into the stemmed keyword index per transaction by the "
            "background rebuild (ingestion waits for at most one batch)."
        ),
    )
    sparse_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of the lexical (sparse) list in fusion, for BGE-M3 stores.",
    )
    trust_power: float = Field(
        2.0,
        ge=0,
        description=(
            "The dense list's weight is multiplied by trust**trust_power, where trust "
            "(0..1) is how well the embedding model reads the query's script, measured by "
            "a probe (kb/probe.py); 0 turns language-aware fusion off."
        ),
    )
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense list in fusion.")
    keyword_weight: float = Field(1.0, ge=0, description="Weight of the BM25 list in fusion.")
    url: UrlFetchSettings = Field(
        default_factory=lambda: UrlFetchSettings(), description="Web page ingestion."
    )
