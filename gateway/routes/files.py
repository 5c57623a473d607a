"""The Files API: POST/GET /v1/files, GET/DELETE /v1/files/{id}, GET .../content."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from gateway.converters import file_object, list_page, page_request
from gateway.schemas.common import DeletedObject, ListPage
from gateway.schemas.files import FileObject
from gateway.state import ctx_of, principal_of
from gateway.uploads import receive_file


# The body limit of this route is the upload limit, enforced while streaming to disk.
@post("/v1/files", status_code=200, request_max_body_size=None)
async def upload_file(request: Request[Any, Any, Any], state: State) -> FileObject:
    return file_object(await receive_file(ctx_of(state).kb, request))


@get("/v1/files")
async def list_files(
    request: Request[Any, Any, Any],
    state: State,
    purpose: FromQuery[str | None] = None,
    limit: FromQuery[int | None] = None,
    order: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    before: FromQuery[str | None] = None,
) -> ListPage:
    page = page_request(limit, order, after, before, default=100)
    found = await ctx_of(state).kb.list_files(purpose, page, who=principal_of(request))
    return list_page(found, file_object, lambda f: f.id)


@get("/v1/files/{file_id:str}")
async def retrieve_file(
    request: Request[Any, Any, Any], state: State, file_id: FromPath[str]
) -> FileObject:
    return file_object(await ctx_of(state).kb.file(file_id, who=principal_of(request)))


@get("/v1/files/{file_id:str}/content")
async def file_content(
    request: Request[Any, Any, Any], state: State, file_id: FromPath[str]
) -> Stream:
    record, content = await ctx_of(state).kb.file_content(file_id, who=principal_of(request))
    disposition = f'attachment; filename="{record.filename.replace(chr(34), "")}"'
    return Stream(
        content,
        media_type="application/octet-stream",
        headers={"Content-Disposition": disposition, "Content-Length": str(record.bytes)},
    )


@delete("/v1/files/{file_id:str}", status_code=200)
async def delete_file(
    request: Request[Any, Any, Any], state: State, file_id: FromPath[str]
) -> DeletedObject:
    await ctx_of(state).kb.delete_file(file_id, who=principal_of(request))
    return DeletedObject(id=file_id, object="file")


routes = [upload_file, list_files, retrieve_file, file_content, delete_file]
