"""Output items and streaming events of one response, built from the parsed generation.

The writer keeps the response object and, as parser events arrive, opens, fills and
closes output items (``reasoning``, ``message``, ``function_call``), returning the
semantic events in lifecycle order, each with its ``sequence_number``. A non-streamed
response uses the same writer and drops the events.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

from chat.citations import file_annotations
from chat.events import CallArgs, CallStart, Content, Part, Reasoning
from gateway.services.responses.inputs import item_id
from rag.service import Citation

__all__ = ["ResponseWriter", "search_item"]

Json = dict[str, Any]


def search_item(
    queries: list[str], citations: Sequence[Citation], include_results: bool, status: str
) -> Json:
    """The ``file_search_call`` item (its results only when ``include`` asks)."""
    results = None
    if include_results:
        results = [
            {
                "file_id": d["file_id"],
                "filename": d["filename"],
                "score": d["score"],
                "text": d["text"],
                "attributes": {
                    k: d[k]
                    for k in ("vector_store_id", "chunk_id", "page", "sheet", "row")
                    if k in d
                },
            }
            for d in (c.to_dict() for c in citations)
        ]
    return {
        "id": item_id("fs"),
        "type": "file_search_call",
        "status": status,
        "queries": queries,
        "results": results,
    }


class ResponseWriter:
    def __init__(self, response: Json, citations: Sequence[Citation] | None) -> None:
        self.response = response
        self.citations = citations or []
        self.seq = 0
        self.open: Json | None = None  # the item being written
        self.text = ""  # the open item's text (message or reasoning)

    @property
    def output(self) -> list[Json]:
        out: list[Json] = self.response["output"]
        return out

    def _ev(self, kind: str, **fields: Any) -> Json:
        ev = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return ev

    def _snapshot(self) -> Json:
        return copy.deepcopy(self.response)

    def start(self) -> list[Json]:
        return [
            self._ev("response.created", response=self._snapshot()),
            self._ev("response.in_progress", response=self._snapshot()),
        ]

    def searched(self, queries: list[str], include_results: bool) -> list[Json]:
        """The search the gateway ran before the model (as a completed tool call)."""
        item = search_item(queries, self.citations, include_results, "in_progress")
        index = len(self.output)
        self.output.append(item)
        events = [self._ev("response.output_item.added", output_index=index, item=dict(item))]
        for step in ("in_progress", "searching", "completed"):
            events.append(
                self._ev(
                    f"response.file_search_call.{step}", output_index=index, item_id=item["id"]
                )
            )
        item["status"] = "completed"
        events.append(self._ev("response.output_item.done", output_index=index, item=item))
        return events

    # -- items ----------------------------------------------------------------------------

    def _open(self, item: Json) -> list[Json]:
        self.open, self.text = item, ""
        self.output.append(item)
        return [
            self._ev(
                "response.output_item.added",
                output_index=len(self.output) - 1,
                item=copy.deepcopy(item),
            )
        ]

    def _where(self) -> Json:
        item = self.open
        if item is None:
            raise RuntimeError("no output item is open")
        return {"item_id": item["id"], "output_index": len(self.output) - 1}

    def close(self) -> list[Json]:
        item = self.open
        if item is None:
            return []
        where = self._where()
        events: list[Json] = []
        if item["type"] == "message":
            part = item["content"][0]
            for n, note in enumerate(file_annotations(self.text, self.citations)):
                part["annotations"].append(note)
                events.append(
                    self._ev(
                        "response.output_text.annotation.added",
                        **where,
                        content_index=0,
                        annotation_index=n,
                        annotation=note,
                    )
                )
            part["text"] = self.text
            events.append(
                self._ev(
                    "response.output_text.done",
                    **where,
                    content_index=0,
                    text=self.text,
                    logprobs=[],
                )
            )
            events.append(
                self._ev("response.content_part.done", **where, content_index=0, part=part)
            )
        elif item["type"] == "reasoning":
            item["content"] = [{"type": "reasoning_text", "text": self.text}]
            events.append(
                self._ev("response.reasoning_text.done", **where, content_index=0, text=self.text)
            )
        else:
            events.append(
                self._ev(
                    "response.function_call_arguments.done",
                    **where,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        item["status"] = "completed"
        if item["type"] == "reasoning":
            item.pop("status")
        events.append(
            self._ev("response.output_item.done", output_index=where["output_index"], item=item)
        )
        self.open = None
        return events

    def _ensure(self, kind: str) -> list[Json]:
        if self.open is not None and self.open["type"] == kind:
            return []
        events = self.close()
        if kind == "reasoning":
            events += self._open(
                {"id": item_id("rs"), "type": "reasoning", "summary": [], "content": []}
            )
        else:
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            msg: Json = {
                "id": item_id("msg"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            events += self._open(msg)
            msg["content"].append(part)
            events.append(
                self._ev(
                    "response.content_part.added", **self._where(), content_index=0, part=dict(part)
                )
            )
        return events

    def feed(self, parts: list[Part]) -> list[Json]:
        events: list[Json] = []
        for part in parts:
            if isinstance(part, Reasoning):
                events += self._ensure("reasoning")
                self.text += part.text
                events.append(
                    self._ev(
                        "response.reasoning_text.delta",
                        **self._where(),
                        content_index=0,
                        delta=part.text,
                    )
                )
            elif isinstance(part, Content):
                events += self._ensure("message")
                self.text += part.text
                events.append(
                    self._ev(
                        "response.output_text.delta",
                        **self._where(),
                        content_index=0,
                        delta=part.text,
                        logprobs=[],
                    )
                )
            elif isinstance(part, CallStart):
                events += self.close()
                call = {
                    "id": item_id("fc"),
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": part.id,
                    "name": part.name,
                    "arguments": "",
                }
                events += self._open(call)
            elif isinstance(part, CallArgs) and self.open is not None:
                self.open["arguments"] += part.text
                events.append(
                    self._ev(
                        "response.function_call_arguments.delta", **self._where(), delta=part.text
                    )
                )
        return events

    def finish(self, status: str, usage: Json, reason: str | None) -> list[Json]:
        """Close what is open; the last event carries the whole response."""
        events = self.close()
        self.response["status"] = status
        if status == "completed":
            self.response["completed_at"] = int(time.time())
        self.response["usage"] = usage
        if reason is not None:
            self.response["incomplete_details"] = {"reason": reason}
        kind = "response.completed" if status == "completed" else f"response.{status}"
        events.append(self._ev(kind, response=self._snapshot()))
        return events
