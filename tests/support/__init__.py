"""What the test modules share, one module per subject: the suite's settings (``settings``),
request bodies (``bodies``), SSE parsing and reading responses (``sse``), fakes (``fakes``), the
in-process app (``in_process``), looking into Redis (``redis``), API keys (``keys``), waiting
(``waiting``), the real SDKs' HTTP (``sdks``) and the coding agents' CLIs (``agents``). Test
modules import these, never each other."""
