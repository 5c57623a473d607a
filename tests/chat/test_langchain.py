"""LangChain's ChatOpenAI against a real server: ``bind_tools`` and
``with_structured_output`` get valid calls and objects from the tiny random model."""

from __future__ import annotations

from typing import Annotated, Literal

import jsonschema
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.conftest import RunningServer


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """The weather in a city."""
    return f"21 degrees {unit} in {city}"


class City(BaseModel):
    name: str = Field(max_length=12)
    country: Literal["FR", "DE", "CN"]
    rank: int = Field(ge=1, le=100)
    tags: list[Annotated[str, Field(max_length=6)]] = Field(max_length=2)


def _llm(server: RunningServer, **kw: object) -> ChatOpenAI:
    return ChatOpenAI(
        model="rwkv7-tiny",
        base_url=f"{server.base_url}/v1",
        api_key="x",  # type: ignore[arg-type]
        max_retries=0,
        **kw,  # type: ignore[arg-type]
    )


def test_bind_tools_gets_a_parsed_valid_call_and_takes_the_result(
    chat_server: RunningServer,
) -> None:
    llm = _llm(chat_server, max_tokens=60, seed=3)
    bound = llm.bind_tools([get_weather], tool_choice="any")  # LangChain's "required"
    msg = bound.invoke("Weather in Paris?")
    assert isinstance(msg, AIMessage)
    (call,) = msg.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(call["args"], get_weather.args_schema.model_json_schema())  # type: ignore[union-attr]
    result = get_weather.invoke(call)
    assert isinstance(result, ToolMessage)
    follow = llm.bind_tools([get_weather]).invoke(["Weather in Paris?", msg, result], max_tokens=8)
    assert isinstance(follow, AIMessage)


def test_with_structured_output_returns_the_model(chat_server: RunningServer) -> None:
    structured = _llm(chat_server, max_tokens=200, seed=1).with_structured_output(City)
    for question in ("A city?", "Another city?"):
        out = structured.invoke(question)
        assert isinstance(out, City)
