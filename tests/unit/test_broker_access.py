"""Settings and rules of broker access: Sentinel URLs, IAM auth, the least-privilege ACL."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib import acl
from chalicelib.access import broker_access
from chalicelib.collect.worker_probe import kombu_broker
from chalicelib.settings import ConfigError, load_settings, parse_redis_url

SENTINELS = "sentinel://:s3cr3t-pw@10.0.0.1:26380/2;sentinel://10.0.0.2;sentinel://h3:26381"


def load(**values: object) -> object:
    return load_settings(environ={}, overrides=values)


def test_celerys_sentinel_form_is_read() -> None:
    url = parse_redis_url(SENTINELS)
    assert url.scheme == "sentinel"
    assert url.sentinels == (("10.0.0.1", 26380), ("10.0.0.2", 26379), ("h3", 26381))
    assert url.db == 2
    assert url.has_password
    assert "s3cr3t" not in repr(url)
    assert parse_redis_url("sentinel://h1").db == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sentinel://h1;redis://h2", "every part must be a sentinel:// URL"),
        ("sentinel://h1?socket_timeout=1", "options are not supported"),
        ("sentinel://h1/x", "not a number"),
        ("sentinel://h1:99999", "port"),
        ("sentinel://:pw@/0", "no host name"),
    ],
)
def test_bad_sentinel_urls_are_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as found:
        load(redis_url=url, sentinel_master_name="m")
    assert "pw" not in str(found.value).replace("password", "")


def test_sentinel_needs_its_master_name_and_only_with_sentinel() -> None:
    with pytest.raises(ConfigError, match="sentinel_master_name"):
        load(redis_url=SENTINELS)
    with pytest.raises(ConfigError, match=r"sentinel_master_name.*not a sentinel"):
        load(redis_url="redis://h/0", sentinel_master_name="m")
    found = load_settings(
        environ={
            "REDIS_URL": SENTINELS,
            "DOORMAN_SENTINEL_MASTER": "orders",
            "DOORMAN_SENTINEL_PASSWORD": "sent-pw",
        }
    )
    assert found.sentinel_master_name == "orders"
    assert "sent-pw" not in repr(found)


def test_kombu_gets_the_sentinels_master_name_and_password() -> None:
    settings = load(redis_url=SENTINELS, sentinel_master_name="orders", sentinel_password="spw")
    broker = kombu_broker(SENTINELS, broker_access(settings))  # type: ignore[arg-type]
    assert broker.url == SENTINELS
    assert broker.transport_options == {
        "master_name": "orders",
        "sentinel_kwargs": {"password": "spw"},
    }
    assert "spw" not in repr(broker) and "s3cr3t" not in repr(broker)


def test_iam_auth_settings() -> None:
    found = load_settings(
        environ={
            "REDIS_URL": "rediss://master.orders.abc.use1.cache.amazonaws.com:6379/0",
            "DOORMAN_REDIS_AUTH": "IAM",
            "DOORMAN_ELASTICACHE_USER": "doorman",
            "DOORMAN_ELASTICACHE_CACHE": "orders",
            "DOORMAN_ELASTICACHE_REGION": "us-east-1",
        }
    )
    assert found.redis_auth == "iam"
    access = broker_access(found)
    provider = access.credential_provider
    assert provider is not None and provider.user_id == "doorman" and provider.cache == "orders"
    assert access.reconnect_after is not None and access.reconnect_after < 12 * 3600
    assert broker_access(load(redis_url="redis://h")).credential_provider is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"elasticache_cache": "c"}, "elasticache_user_id"),
        ({"elasticache_user_id": "u"}, "elasticache_cache"),
        (
            {"elasticache_user_id": "u", "elasticache_cache": "c", "redis_url": "rediss://u:pw9@h"},
            "must carry no password",
        ),
    ],
)
def test_iam_auth_refuses_what_cannot_work(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as found:
        load(**{"redis_url": "rediss://h", "redis_auth": "iam", **values})
    assert "pw9" not in str(found.value)


def test_redis_auth_takes_two_words() -> None:
    with pytest.raises(ConfigError, match=r"redis_auth.*expected password or iam"):
        load(redis_auth="token")


def test_iam_auth_without_a_region_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    settings = load(
        redis_url="rediss://h", redis_auth="iam", elasticache_user_id="u", elasticache_cache="c"
    )
    with pytest.raises(ConfigError, match="elasticache_region"):
        broker_access(settings)  # type: ignore[arg-type]


def test_rules_are_scoped_to_the_prefix_and_database() -> None:
    found = acl.rules("app:[1]*", 3)
    tokens = found.tokens()
    assert tokens[:3] == ["resetkeys", "resetchannels", "-@all"]
    assert r"%R~app:\[1\]\**" in tokens
    assert r"~app:\[1\]\*doorman-*.reply.*" in tokens
    assert r"&app:\[1\]\*/3.*.pidbox" in tokens
    commands = {t[1:] for t in tokens if t.startswith("+")}
    assert not commands & {"flushall", "flushdb", "config|set", "config|get", "set", "lpop"}
    assert not commands & {"eval", "keys", "@all", "rpop", "lpush", "shutdown"}
    assert "~*" not in tokens and "&*" not in tokens and "allkeys" not in tokens


@pytest.mark.parametrize("form", ["redis", "shell", "elasticache"])
def test_rendered_rules_never_print_control_characters(form: str) -> None:
    prefix = "\x1b[31mp\u202e\n"
    text = acl.render(acl.rules(prefix, 0), "doorman", form, prefix=prefix, db=0)
    assert "\x1b" not in text and "\u202e" not in text
    assert all(line.isprintable() for line in text.splitlines())
