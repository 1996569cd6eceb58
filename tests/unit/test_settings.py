"""Settings are read once from an environment mapping, and a bad value names its variable."""

from __future__ import annotations

import pytest

from app.settings import Settings, Upstream


def test_defaults_match_the_design() -> None:
    settings = Settings.from_environ({})
    assert settings == Settings()
    assert settings.ollama_host == "http://localhost:11434"
    assert (settings.rate_limit_max, settings.rate_limit_window_seconds) == (10, 60)
    assert (settings.cache_ttl_seconds, settings.heartbeat_interval_seconds) == (3600, 15.0)
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.allowed_origins == ("*",)


def test_values_are_cast_from_the_environment() -> None:
    settings = Settings.from_environ(
        {
            "OLLAMA_HOST": "http://gpu-box:11434/",
            "RATE_LIMIT_MAX": "25",
            "RATE_LIMIT_FAIL_OPEN": "false",
            "HEARTBEAT_INTERVAL": "0.5",
            "ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "LOG_LEVEL": "DEBUG",
            "CACHE_TTL": "0",
        }
    )
    assert settings.ollama_host == "http://gpu-box:11434"
    assert settings.rate_limit_max == 25
    assert settings.rate_limit_fail_open is False
    assert settings.heartbeat_interval_seconds == 0.5
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.log_level == "debug"
    assert settings.cache_ttl_seconds == 0


def test_several_hosts_replace_the_single_one() -> None:
    alone = Settings.from_environ({"OLLAMA_HOST": "http://gpu-box:11434"})
    assert alone.upstream_urls == ("http://gpu-box:11434",)
    several = Settings.from_environ(
        {"OLLAMA_HOST": "http://gpu-box:11434", "OLLAMA_HOSTS": "http://a:11434/, http://b:11434"}
    )
    assert several.upstream_urls == ("http://a:11434", "http://b:11434")


def test_upstreams_name_each_engine_its_slots_and_key() -> None:
    settings = Settings.from_environ({
        "UPSTREAMS": "http://gpu1:11434;slots=4, http://gpu2:8000/;engine=vllm;key=sk-1,"
                     "http://cpu1:8080;engine=llamacpp;slots=2",
        "OLLAMA_SLOTS": "3",
    })  # fmt: skip
    assert settings.engines == (
        Upstream("http://gpu1:11434", "ollama", 4),
        Upstream("http://gpu2:8000", "vllm", 3, key="sk-1"),
        Upstream("http://cpu1:8080", "llamacpp", 2),
    )
    assert "sk-1" not in repr(settings)
    hosts = Settings.from_environ({"OLLAMA_HOSTS": "http://a:1;slots=2,http://b:1"})
    assert hosts.engines == (Upstream("http://a:1", slots=2), Upstream("http://b:1"))


@pytest.mark.parametrize("other", ["OLLAMA_HOST", "OLLAMA_HOSTS"])
def test_upstreams_beside_an_ollama_host_is_an_error_naming_both(other: str) -> None:
    with pytest.raises(ValueError, match=f"^UPSTREAMS and {other} are both set"):
        Settings.from_environ({"UPSTREAMS": "http://a:1", other: "http://b:1"})


@pytest.mark.parametrize("value", ["http://a:1;engine=tgi", "http://a:1;slots=0",
                                   "http://a:1;colour=red", "http://a:1,http://a:1;engine=vllm",
                                   "http://a:1;engine=vllm;key=sk-secret;slots=x"])  # fmt: skip
def test_a_bad_upstream_is_refused_without_echoing_a_key(value: str) -> None:
    with pytest.raises(ValueError, match=r"^UPSTREAMS=… is invalid") as caught:
        Settings.from_environ({"UPSTREAMS": value})
    assert "secret" not in str(caught.value)


def test_a_cluster_url_is_accepted() -> None:
    url = "redis+cluster://10.0.0.5:6379"
    assert Settings.from_environ({"REDIS_URL": url}).redis_url == url


def test_redis_url_stays_out_of_repr() -> None:
    settings = Settings.from_environ({"REDIS_URL": "redis://:secret@db:6379/0"})
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("RATE_LIMIT_MAX", "abc", id="not-an-int"),
        pytest.param("RATE_LIMIT_MAX", "-1", id="negative-limit"),
        pytest.param("CACHE_TTL", "-1", id="negative-ttl"),
        pytest.param("HEARTBEAT_INTERVAL", "0", id="zero-heartbeat"),
        pytest.param("UPSTREAM_TIMEOUT", "nan", id="nan"),
        pytest.param("RATE_LIMIT_FAIL_OPEN", "maybe", id="not-a-bool"),
        pytest.param("OLLAMA_HOST", "localhost:11434", id="no-scheme"),
        pytest.param("REDIS_URL", "http://x", id="not-redis"),
        pytest.param("REDIS_MAX_CONNECTIONS", "2", id="no-connection-for-commands"),
        pytest.param("OLLAMA_HOSTS", "http://a:1,http://a:1", id="hosts-twice"),
        pytest.param("OLLAMA_HOSTS", "http://a:1,b:2", id="hosts-no-scheme"),
        pytest.param("OLLAMA_EJECT_SECONDS", "0", id="zero-cool-down"),
        pytest.param("PORT", "70000", id="port-range"),
        pytest.param("DEFAULT_MODEL", "bad model", id="model-name"),
        pytest.param("LOG_LEVEL", "loud", id="log-level"),
        pytest.param("ALLOWED_ORIGINS", "ftp://x", id="origin"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}=") as caught:
        Settings.from_environ({name: value})
    assert "\n" not in str(caught.value)


def test_every_setting_has_its_variable() -> None:
    """A field added to Settings without an environment variable would be unreachable."""
    from dataclasses import fields

    from app.settings import _VARIABLES

    assert [name for name, *_ in _VARIABLES] == [f.name for f in fields(Settings)]
