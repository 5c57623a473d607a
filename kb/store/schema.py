"""The SQLite schema as numbered migrations, applied in order at open (never edited once
released: a change is a new migration)."""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: collections, files, chunks with their vectors, two FTS5 indexes kept by triggers.
    """
    CREATE TABLE collections (
        id TEXT PRIMARY KEY,
        name TEXT,
        embedding_model TEXT NOT NULL,
        dimensions INTEGER NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        file_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        text TEXT NOT NULL,
        token_count INTEGER NOT NULL,
        page INTEGER,
        sheet TEXT,
        row INTEGER,
        content_hash TEXT NOT NULL,
        cjk TEXT NOT NULL DEFAULT '',
        attributes TEXT NOT NULL DEFAULT '{}',
        embedding BLOB NOT NULL,
        UNIQUE (collection_id, content_hash)
    );
    CREATE INDEX chunks_file ON chunks(collection_id, file_id);
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE VIRTUAL TABLE chunks_cjk USING fts5(
        cjk, content='chunks', content_rowid='id', tokenize='unicode61'
    );
    CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
        INSERT INTO chunks_cjk(rowid, cjk) VALUES (new.id, new.cjk);
    END;
    CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO chunks_cjk(chunks_cjk, rowid, cjk) VALUES ('delete', old.id, old.cjk);
    END;
    """,
    # 2: files, vector store files (each one an ingestion job), file batches, jobs, and
    # chunk ownership: a chunk deduplicated across files is owned by each of them.
    """
    ALTER TABLE collections ADD COLUMN expires_after TEXT;
    ALTER TABLE collections ADD COLUMN last_active_at INTEGER;
    ALTER TABLE collections ADD COLUMN chunking_strategy TEXT;
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        filename TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        purpose TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        path TEXT NOT NULL,
        source_url TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE vector_store_files (
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        file_id TEXT NOT NULL,
        status TEXT NOT NULL,
        last_error TEXT,
        attributes TEXT NOT NULL DEFAULT '{}',
        chunking_strategy TEXT NOT NULL,
        usage_bytes INTEGER NOT NULL DEFAULT 0,
        batch_id TEXT,
        options TEXT NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (collection_id, file_id)
    );
    CREATE INDEX vsf_status ON vector_store_files(status);
    CREATE INDEX vsf_batch ON vector_store_files(batch_id);
    CREATE TABLE file_batches (
        id TEXT PRIMARY KEY,
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        collection_id TEXT NOT NULL,
        status TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        progress INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE reembed_staging (
        job_id TEXT NOT NULL,
        chunk_id INTEGER NOT NULL,
        embedding BLOB NOT NULL,
        PRIMARY KEY (job_id, chunk_id)
    );
    CREATE TABLE chunk_refs (
        chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
        collection_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        PRIMARY KEY (chunk_id, file_id)
    );
    CREATE INDEX chunk_refs_file ON chunk_refs(collection_id, file_id);
    INSERT INTO chunk_refs (chunk_id, collection_id, file_id)
        SELECT id, collection_id, file_id FROM chunks;
    """,
    # 3: chunk headings (the section path a chunk sits under), ingestion leases (workers
    # claim a job, so several can run and a dead one's job is taken over), file warnings,
    # and indexes for paging.
    """
    ALTER TABLE chunks ADD COLUMN heading TEXT;
    ALTER TABLE vector_store_files ADD COLUMN lease_owner TEXT;
    ALTER TABLE vector_store_files ADD COLUMN lease_until REAL;
    ALTER TABLE vector_store_files ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX vsf_store_order ON vector_store_files(collection_id, created_at);
    CREATE INDEX files_order ON files(created_at);
    CREATE INDEX collections_name ON collections(name);
    """,
    # 4: BGE-M3's lexical (sparse) weights per chunk: token id -> weight, searched by the
    # dot product with the query's weights.
    """
    CREATE TABLE chunk_sparse (
        collection_id TEXT NOT NULL,
        token INTEGER NOT NULL,
        chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
        weight REAL NOT NULL,
        PRIMARY KEY (collection_id, token, chunk_id)
    ) WITHOUT ROWID;
    CREATE INDEX chunk_sparse_chunk ON chunk_sparse(chunk_id);
    """,
    # 5: a stemmed English word index (``porter`` over ``unicode61``: "installing" meets
    # "install"; CJK runs and other scripts pass through the Porter step unchanged). Its
    # triggers keep new chunks in it; the chunks already stored are copied in, in batches
    # up to ``high``, by a background rebuild (kb/store/stemmed.py) while searches keep
    # reading ``chunks_fts``. A deletion reaches the new index only for rows it holds.
    """
    CREATE VIRTUAL TABLE chunks_stem USING fts5(
        text, content='chunks', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    );
    CREATE TABLE keyword_rebuild (
        name TEXT PRIMARY KEY,
        upto INTEGER NOT NULL,
        high INTEGER NOT NULL
    );
    INSERT INTO keyword_rebuild (name, upto, high)
        SELECT 'chunks_stem', 0, coalesce(max(id), 0) FROM chunks;
    CREATE TRIGGER chunks_stem_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_stem(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER chunks_stem_ad AFTER DELETE ON chunks
    WHEN old.id > (SELECT high FROM keyword_rebuild WHERE name = 'chunks_stem')
        OR old.id <= (SELECT upto FROM keyword_rebuild WHERE name = 'chunks_stem')
    BEGIN
        INSERT INTO chunks_stem(chunks_stem, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    """,
    # 6: projects own stores and files (core.tenancy); rows from before belong to the
    # admin project. Store files, batches, jobs and chunks are reached through their store.
    """
    ALTER TABLE collections ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE files ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX collections_project ON collections(project, name);
    CREATE INDEX files_project ON files(project, created_at);
    """,
]
