"""The config model: both shapes, defaults, environment overrides, shape-preserving edits, clear errors."""

import pytest

from common.config import parse_config, set_tokens, update_status
from common.errors import ConfigError

MODERN = {
    "api_keys": ["sk-1"],
    "upstream": {"base_url": "http://127.0.0.1:9/"},
    "accounts": [{"name": "main", "refresh_token": "Bearer r1", "access_token": ""},
                 {"refresh_token": "r2", "note": "mine"}],
}
LEGACY = {"token": "Bearer sk-old", "auth_token": "Bearer a0", "refresh_token": "Bearer r0"}


def test_modern_shape_with_defaults():
    config = parse_config(MODERN, environ={})
    assert config.api_keys == ("sk-1",)
    assert [(a.name, a.refresh_token) for a in config.accounts] == [("main", "r1"), ("account-2", "r2")]
    assert config.upstream["base_url"] == "http://127.0.0.1:9"
    assert (config.server["host"], config.server["port"]) == ("0.0.0.0", 6867)
    assert not config.legacy


def test_legacy_reverse_kimi_shape_is_one_account_and_one_key():
    config = parse_config(LEGACY, environ={})
    assert config.legacy and config.api_keys == ("sk-old",)
    (account,) = config.accounts
    assert (account.name, account.access_token, account.refresh_token) == ("default", "a0", "r0")


def test_environment_overrides_every_section():
    env = {"KIMI_BRIDGE_UPSTREAM_BASE_URL": "https://example.test", "KIMI_BRIDGE_SERVER_PORT": "7000",
           "KIMI_BRIDGE_REFRESHER_MARGIN_SECONDS": "30", "KIMI_BRIDGE_API_KEYS": "k1, k2"}
    config = parse_config(LEGACY, environ=env)
    assert config.upstream["base_url"] == "https://example.test"
    assert config.server["port"] == 7000
    assert config.refresher["margin_seconds"] == 30.0
    assert config.api_keys == ("k1", "k2")


@pytest.mark.parametrize("doc,field,expected", [
    ([], "(top level)", "a JSON object"),
    ({"accounts": []}, "accounts", "at least one account"),
    ({"accounts": "x"}, "accounts", "at least one account"),
    ({"api_keys": "sk", "accounts": [{"refresh_token": "r"}]}, "api_keys", "a list of strings"),
    ({"api_keys": [""], "accounts": [{"refresh_token": "r"}]}, "api_keys[0]", "a non-empty string"),
    ({"accounts": [5]}, "accounts[0]", "an object"),
    ({"accounts": [{"refresh_token": 5}]}, "accounts[0].refresh_token", "a string"),
    ({"accounts": [{"refresh_token": ""}]}, "accounts[0].refresh_token", "a Kimi refresh token"),
    ({"accounts": [{"name": "a", "refresh_token": "r"}, {"name": "a", "refresh_token": "s"}]},
     "accounts[1].name", "a name no other account uses"),
    ({"accounts": [{"refresh_token": "r", "enabled": "yes"}]}, "accounts[0].enabled", "true or false"),
    ({"server": {"port": "abc"}, "accounts": [{"refresh_token": "r"}]}, "server.port", "a number"),
    ({"server": {"port": 70000}, "accounts": [{"refresh_token": "r"}]}, "server.port", "a port"),
    ({"upstream": {"base_url": "ftp://x"}, "accounts": [{"refresh_token": "r"}]}, "upstream.base_url", "http(s) URL"),
    ({"upstream": [], "accounts": [{"refresh_token": "r"}]}, "upstream", "an object"),
    ({"token": 1, "refresh_token": "r"}, "token", "a string"),
])
def test_bad_config_names_the_field_and_what_was_expected(doc, field, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "cfg.json", environ={})
    assert info.value.field == field
    assert expected in info.value.expected
    assert str(info.value).startswith(f"cfg.json: {field}: expected")


def test_bad_environment_override_names_the_variable():
    with pytest.raises(ConfigError, match="KIMI_BRIDGE_SERVER_PORT: expected a whole number"):
        parse_config(LEGACY, environ={"KIMI_BRIDGE_SERVER_PORT": "http"})


def test_errors_never_echo_a_token_value():
    with pytest.raises(ConfigError) as info:
        parse_config({"accounts": [{"refresh_token": ["eyJsecret.eyJsecret.sig"]}]}, environ={})
    assert "secret" not in str(info.value)


def test_edits_keep_key_order_unknown_fields_and_other_accounts():
    doc = {"z": 1, "accounts": [{"name": "a", "refresh_token": "r", "x": [1]}, {"name": "b", "refresh_token": "s"}],
           "api_keys": ["k"]}
    set_tokens(doc, "a", "A2", "R2")
    update_status(doc, "a", state="ok")
    assert list(doc) == ["z", "accounts", "api_keys"]
    assert doc["accounts"][0] == {"name": "a", "refresh_token": "R2", "x": [1], "access_token": "A2",
                                  "status": {"state": "ok"}}
    assert doc["accounts"][1] == {"name": "b", "refresh_token": "s"}


def test_legacy_edits_stay_legacy_and_keep_bearer_prefixes():
    doc = dict(LEGACY)
    set_tokens(doc, "default", "A1", "R1")
    update_status(doc, "default", state="ok")
    assert doc == {"token": "Bearer sk-old", "auth_token": "Bearer A1", "refresh_token": "Bearer R1",
                   "account_status": {"state": "ok"}}
    assert parse_config(doc, environ={}).legacy
