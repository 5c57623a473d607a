"""The Files API: POST/GET /v1/files, GET/DELETE /v1/files/{id}, GET .../content."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery
from litestar.response import File

from engines.errors import InvalidRequestError
from gateway.routes.paging import page
from gateway.schemas_kb import DeletedObject, FileObject
from gateway.state import ctx_of
from gateway.uploads import receive_upload

PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}


def file_object(row: dict[str, Any]) -> FileObject:
    return FileObject(
        id=row["id"],
        bytes=int(row["bytes"]),
        created_at=int(row["created_at"]),
        filename=row["filename"],
        purpose=row["purpose"],
    )


# The body limit of this route is the upload limit, enforced while streaming to disk.
@post("/v1/files", status_code=200, request_max_body_size=None)
async def upload_file(request: Request[Any, Any, Any], state: State) -> FileObject:
    kb = ctx_of(state).kb
    file_id, part = kb.new_upload_path()
    upload = await receive_upload(
        request.headers.get("content-type", ""),
        request.stream(),
        part,
        kb.settings.max_upload_bytes,
    )
    purpose = upload.fields.get("purpose", "").strip()
    if purpose not in PURPOSES:
        part.unlink(missing_ok=True)
        raise InvalidRequestError(
            f"'purpose' must be one of {sorted(PURPOSES)}; got {purpose!r}", param="purpose"
        )
    row = kb.register_file(
        file_id, part, upload.filename or "upload.bin", purpose, upload.size, upload.sha256
    )
    return file_object(row)


@get("/v1/files", sync_to_thread=False)
def list_files(
    state: State,
    purpose: FromQuery[str | None] = None,
    limit: FromQuery[int | None] = None,
    order: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> dict[str, Any]:
    rows = ctx_of(state).kb.store.list_files(purpose)
    return page(
        rows,
        key=lambda r: r["id"],
        limit=limit if limit is not None else 100,
        order=order,
        after=after,
        before=before,
        render=file_object,
    )


@get("/v1/files/{file_id:str}", sync_to_thread=False)
def retrieve_file(state: State, file_id: FromPath[str]) -> FileObject:
    return file_object(ctx_of(state).kb.file(file_id))


@get("/v1/files/{file_id:str}/content", sync_to_thread=False)
def file_content(state: State, file_id: FromPath[str]) -> File:
    row = ctx_of(state).kb.file(file_id)
    return File(
        path=row["path"],
        filename=row["filename"],
        media_type="application/octet-stream",
        content_disposition_type="attachment",
    )


@delete("/v1/files/{file_id:str}", status_code=200)
async def delete_file(state: State, file_id: FromPath[str]) -> DeletedObject:
    await ctx_of(state).kb.delete_file_object(file_id)
    return DeletedObject(id=file_id, object="file")


routes = [upload_file, list_files, retrieve_file, file_content, delete_file]
