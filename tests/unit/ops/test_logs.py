"""Log lines: one JSON object per line for machines, plain text for people."""

from __future__ import annotations

import logging
import logging.config

import orjson
import pytest

from app.ops.logs import JsonFormatter, TextFormatter, uvicorn_config


def record(message: str, **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("bib.access", logging.INFO, __file__, 1, message, None, None)
    made.fields = fields
    return made


def test_a_json_line_holds_the_message_and_every_field() -> None:
    line = orjson.loads(JsonFormatter().format(record("request", status=200, cache=None)))
    assert line["message"] == "request"
    assert (line["level"], line["logger"]) == ("info", "bib.access")
    assert (line["status"], line["cache"]) == (200, None)
    assert line["time"].endswith("+00:00")


def test_a_json_line_carries_the_traceback_of_an_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        failed = logging.LogRecord("app", logging.ERROR, __file__, 1, "x", None, sys.exc_info())
    line = orjson.loads(JsonFormatter().format(failed))
    assert "RuntimeError: boom" in line["exception"]


def test_a_text_line_names_the_fields_that_have_a_value() -> None:
    line = TextFormatter().format(record("request", status=200, cache=None, generation="g_x"))
    assert line.endswith("bib.access: request status=200 generation=g_x")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_configuration_is_one_dict_config_uvicorn_accepts(log_format: str) -> None:
    root, names = logging.getLogger(), ("uvicorn", "uvicorn.access", "httpx")
    saved = root.level, root.handlers[:], [logging.getLogger(n).level for n in names]
    try:
        logging.config.dictConfig(uvicorn_config("debug", log_format))
        assert logging.getLogger("uvicorn.access").level == logging.WARNING
        assert root.level == logging.DEBUG
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter if log_format == "json"
                          else TextFormatter)  # fmt: skip
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, level in zip(names, saved[2], strict=True):
            logging.getLogger(name).setLevel(level)
