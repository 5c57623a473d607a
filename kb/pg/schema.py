"""The PostgreSQL schema as numbered migrations (never edited once released: a change is a
new migration). Column names follow the SQLite schema so kb/rows.py reads both.

- vectors: ``vector`` without a fixed size (stores differ in dimensions) plus ``dims``;
  one HNSW expression index per dimension in use, ``(embedding::vector(d))`` over the rows
  ``WHERE dims = d``, created when a store of that size appears;
- keywords: ``tsvector`` columns generated from the text (``simple`` configuration: no
  stemming) and from its CJK character bigrams, each with GIN, ranked by BM25 computed in
  SQL from term statistics; since migration 2 also ``stem_tsv``, the text under
  ``kb_stem`` (English Snowball stems for ASCII words, ``simple`` for every other
  script), which replaces ``tsv`` in searches once a background rebuild has filled it
  (kb/pg/stemmed.py);
- uploaded bytes: in ``file_parts`` (``bytea`` parts), so every replica reads them.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: everything the knowledge base stores.
    """
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE collections (
        id TEXT PRIMARY KEY,
        seq BIGSERIAL UNIQUE,
        name TEXT,
        embedding_model TEXT NOT NULL,
        dimensions INTEGER NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}',
        created_at BIGINT NOT NULL,
        expires_after JSONB,
        last_active_at BIGINT,
        chunking_strategy JSONB
    );
    CREATE INDEX collections_name ON collections(name);
    CREATE INDEX collections_order ON collections(created_at, seq);
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        seq BIGSERIAL UNIQUE,
        filename TEXT NOT NULL,
        bytes BIGINT NOT NULL,
        purpose TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        source_url TEXT,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX files_order ON files(created_at, seq);
    CREATE TABLE file_parts (
        file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        part INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (file_id, part)
    );
    CREATE TABLE vector_store_files (
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        file_id TEXT NOT NULL,
        seq BIGSERIAL UNIQUE,
        status TEXT NOT NULL,
        last_error JSONB,
        attributes JSONB NOT NULL DEFAULT '{}',
        chunking_strategy JSONB NOT NULL,
        usage_bytes BIGINT NOT NULL DEFAULT 0,
        batch_id TEXT,
        options JSONB NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION,
        warnings JSONB NOT NULL DEFAULT '[]',
        PRIMARY KEY (collection_id, file_id)
    );
    CREATE INDEX vsf_queue ON vector_store_files(status, created_at, seq);
    CREATE INDEX vsf_batch ON vector_store_files(batch_id);
    CREATE INDEX vsf_store_order ON vector_store_files(collection_id, created_at, seq);
    CREATE TABLE file_batches (
        id TEXT PRIMARY KEY,
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        seq BIGSERIAL UNIQUE,
        kind TEXT NOT NULL,
        collection_id TEXT NOT NULL,
        status TEXT NOT NULL,
        params JSONB NOT NULL DEFAULT '{}',
        progress INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE chunks (
        id BIGSERIAL PRIMARY KEY,
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        file_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        text TEXT NOT NULL,
        token_count INTEGER NOT NULL,
        page INTEGER,
        sheet TEXT,
        "row" INTEGER,
        heading TEXT,
        content_hash TEXT NOT NULL,
        cjk TEXT NOT NULL DEFAULT '',
        dims INTEGER NOT NULL,
        embedding vector NOT NULL,
        tsv_len INTEGER NOT NULL DEFAULT 0,
        cjk_tsv_len INTEGER NOT NULL DEFAULT 0,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
        cjk_tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', cjk)) STORED,
        UNIQUE (collection_id, content_hash)
    );
    CREATE INDEX chunks_collection ON chunks(collection_id);
    CREATE INDEX chunks_tsv ON chunks USING gin(tsv);
    CREATE INDEX chunks_cjk_tsv ON chunks USING gin(cjk_tsv);
    CREATE TABLE chunk_refs (
        chunk_id BIGINT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
        collection_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        seq BIGSERIAL,
        PRIMARY KEY (chunk_id, file_id)
    );
    CREATE INDEX chunk_refs_file ON chunk_refs(collection_id, file_id);
    CREATE TABLE chunk_sparse (
        collection_id TEXT NOT NULL,
        token INTEGER NOT NULL,
        chunk_id BIGINT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
        weight REAL NOT NULL,
        PRIMARY KEY (collection_id, token, chunk_id)
    );
    CREATE INDEX chunk_sparse_chunk ON chunk_sparse(chunk_id);
    CREATE TABLE reembed_staging (
        job_id TEXT NOT NULL,
        chunk_id BIGINT NOT NULL,
        embedding vector NOT NULL,
        PRIMARY KEY (job_id, chunk_id)
    );
    """,
    # 2: stemmed English words. A trigger fills ``stem_tsv`` for new rows; rows stored
    # before are filled, and the GIN index built concurrently, by the background rebuild
    # (kb/pg/stemmed.py), which marks ``keyword_rebuild`` done. Adding nullable columns
    # rewrites nothing, so the migration is instant on a large table.
    """
    CREATE TEXT SEARCH DICTIONARY kb_english_stem (TEMPLATE = snowball, Language = english);
    CREATE TEXT SEARCH CONFIGURATION kb_stem (COPY = simple);
    ALTER TEXT SEARCH CONFIGURATION kb_stem
        ALTER MAPPING FOR asciiword, asciihword, hword_asciipart WITH kb_english_stem;
    ALTER TABLE chunks ADD COLUMN stem_tsv tsvector;
    ALTER TABLE chunks ADD COLUMN stem_tsv_len INTEGER;
    CREATE FUNCTION kb_chunks_stem() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.stem_tsv := to_tsvector('kb_stem', NEW.text);
        NEW.stem_tsv_len := NEW.tsv_len;
        RETURN NEW;
    END
    $$;
    CREATE TRIGGER chunks_stem BEFORE INSERT OR UPDATE OF text, tsv_len ON chunks
        FOR EACH ROW EXECUTE FUNCTION kb_chunks_stem();
    CREATE TABLE keyword_rebuild (name TEXT PRIMARY KEY, done BOOLEAN NOT NULL);
    INSERT INTO keyword_rebuild VALUES ('stem_tsv', NOT EXISTS (SELECT 1 FROM chunks));
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM chunks) THEN
            CREATE INDEX chunks_stem_tsv ON chunks USING gin(stem_tsv);
        END IF;
    END
    $$;
    """,
    # 3: projects own stores and files (core.tenancy); rows from before belong to the
    # admin project. A constant default adds the column without rewriting the table.
    """
    ALTER TABLE collections ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE files ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX collections_project ON collections(project, name);
    CREATE INDEX files_project ON files(project, created_at, seq);
    """,
]
