"""LangChain's ``ChatOpenAI`` and ``ChatOllama`` (from PyPI) streaming through the service, as
their users point them at a local LLM: the OpenAI-compatible base URL, or the Ollama host."""

from __future__ import annotations

import pytest
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from harness.servers import Server
from tests.support.bodies import unique

pytestmark = pytest.mark.system


def test_chat_openai_streams(service: Server) -> None:
    llm = ChatOpenAI(base_url=service.url + "/v1", api_key=SecretStr("anything"),
                     model="llama3.2", max_retries=0, stream_usage=True)  # fmt: skip
    try:
        question = unique("langchain openai")
        chunks = list(llm.stream(question))
        text = "".join(str(c.content) for c in chunks)
        assert sum(1 for c in chunks if c.content) == 12
        usage = [c.usage_metadata for c in chunks if c.usage_metadata]
        assert usage
        assert usage[-1]["output_tokens"] == 12
        assert llm.invoke(question).content == text  # the same generation, from the cache
    finally:
        llm.root_client.close()


def test_chat_ollama_streams(service: Server) -> None:
    llm = ChatOllama(base_url=service.url, model="llama3.2")
    try:
        question = unique("langchain ollama")
        chunks = list(llm.stream(question))
        text = "".join(str(c.content) for c in chunks)
        assert sum(1 for c in chunks if c.content) == 12
        assert llm.invoke(question).content == text  # the same generation, from the cache
    finally:
        llm._client._client.close()  # LangChain keeps its ollama.Client private
