"""The real SDKs in the tests: ``SDK``, what the system tests' ``sdk`` fixture makes, and their
own HTTP watched: ``Recording``, an ``httpx2`` transport (``httpx2`` is the fork of httpx that
the ``openai`` 3.x and ``anthropic`` 2.x SDKs speak through) that keeps a copy of every
response body as it streams by, so a test reads the raw bytes while the SDK still does all the
parsing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx2
import openai


class Recording(httpx2.HTTPTransport):
    """The SDKs' own transport, keeping a copy of every response body as it streams by."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = bytearray()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        stream, seen = response.stream, self.seen
        assert isinstance(stream, httpx2.SyncByteStream)
        source: httpx2.SyncByteStream = stream  # narrowed for the class below

        class Tee(httpx2.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for chunk in source:
                    seen.extend(chunk)
                    yield chunk

            def close(self) -> None:
                source.close()

        response.stream = Tee()
        return response


SDK = Callable[..., openai.OpenAI]  # the system tests' ``sdk`` fixture: (server, transport?)
