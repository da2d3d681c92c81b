"""Unknown config keys: named with the closest known key; fatal in `upstream`, a warning elsewhere."""

import subprocess

from common.config import parse_config
from tests.helpers import spawn, write_json

ACCOUNT = {"name": "main", "refresh_token": "r1"}


def _unknown(doc: dict) -> dict:
    return {k.field: (k.suggestion, k.fatal) for k in parse_config(doc, environ={}).unknown_keys}


def test_a_misspelt_key_is_named_with_the_closest_known_one():
    doc = {"api_keys": ["sk-1"], "api_key": "sk-2", "base_url": "http://x", "upstream": {"baseurl": "http://y"},
           "server": {"prot": 7000}, "accounts": [{**ACCOUNT, "refresh": "r", "enabeld": False}]}
    assert _unknown(doc) == {
        "api_key": ("api_keys", False),
        "base_url": ("upstream.base_url", False),      # right key, wrong place
        "upstream.baseurl": ("upstream.base_url", True),
        "server.prot": ("server.port", False),
        "accounts[0].refresh": ("accounts[0].refresh_token", False),
        "accounts[0].enabeld": ("accounts[0].enabled", False),
    }
    (upstream,) = [k for k in parse_config(doc, environ={}).unknown_keys if k.fatal]
    assert "did you mean upstream.base_url?" in upstream.message("config.json")


def test_known_keys_comments_and_the_legacy_shape_raise_nothing():
    doc = {"_comment": "mine", "$schema": "x", "api_keys": ["sk-1"], "upstream": {"base_url": "http://y"},
           "server": {"port": 7000}, "refresher": {}, "store": {},
           "accounts": [{**ACCOUNT, "note": "work laptop", "enabled": True, "access_token": "", "status": {}}]}
    assert _unknown(doc) == {}
    legacy = {"token": "Bearer sk-old", "auth_token": "Bearer a0", "refresh_token": "Bearer r0",
              "account_status": {"state": "ok"}}
    assert _unknown(legacy) == {}
    assert _unknown({**legacy, "tokn": "x"}) == {"tokn": ("token", False)}


def test_a_typo_in_upstream_stops_both_processes_with_exit_2_naming_the_field(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"api_keys": ["sk-1"], "upstream": {"baseurl": "http://127.0.0.1:9"}, "accounts": [ACCOUNT]})
    for argv in (["refresher", "--config", str(path), "--once"], ["server", "--config", str(path)]):
        proc = spawn(*argv, stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err
        assert "upstream.baseurl" in err and "did you mean upstream.base_url?" in err and "Traceback" not in err


def test_an_unknown_key_elsewhere_is_a_warning_by_name(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"api_keys": ["sk-1"], "api_key": "sk-2", "upstream": {"base_url": "http://127.0.0.1:9"},
                      "accounts": [{**ACCOUNT, "access_token": "not-a-jwt"}]})
    proc = spawn("refresher", "--config", str(path), "--once", stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert "api_key: unknown key; did you mean api_keys?" in err


def test_version_on_both_processes():
    from common import __version__
    for module in ("server", "refresher"):
        proc = spawn(module, "--version", stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.strip() == f"kimi-bridge {__version__}"


def test_an_upper_case_scheme_in_base_url_is_read_as_lower_case():
    """Every client below compares the scheme lower-case, and the refresher sends base_url as the Origin."""
    doc = {"api_keys": ["sk-1"], "upstream": {"base_url": "HTTP://127.0.0.1:9/"}, "accounts": [ACCOUNT]}
    assert parse_config(doc, environ={}).upstream["base_url"] == "http://127.0.0.1:9"
    doc["upstream"]["base_url"] = "Https://kimi.example"
    assert parse_config(doc, environ={}).upstream["base_url"] == "https://kimi.example"


def test_an_unknown_kimi_bridge_variable_is_named_and_fatal_for_upstream():
    env = {"KIMI_BRIDGE_UPSTREAM_BASEURL": "http://x", "KIMI_BRIDGE_SERVER_PROT": "1", "KIMI_BRIDGE_CONFIG": "c",
           "KIMI_BRIDGE_PYTHON": "p", "KIMI_BRIDGE_API_KEYS": "k", "KIMI_BRIDGE_TESTING_FETCH_ALLOW": "h:1",
           "KIMI_BRIDGE_SERVER_PORT": "7000", "PATH": "/bin"}
    doc = {"api_keys": ["sk-1"], "accounts": [ACCOUNT]}
    found = {k.field: (k.suggestion, k.fatal) for k in parse_config(doc, environ=env).unknown_keys}
    assert found == {"KIMI_BRIDGE_UPSTREAM_BASEURL": ("KIMI_BRIDGE_UPSTREAM_BASE_URL", True),
                     "KIMI_BRIDGE_SERVER_PROT": ("KIMI_BRIDGE_SERVER_PORT", False)}
    fatal = next(k for k in parse_config(doc, environ=env).unknown_keys if k.fatal)
    assert fatal.message("config.json").startswith("environment: KIMI_BRIDGE_UPSTREAM_BASEURL: unknown variable; "
                                                   "did you mean KIMI_BRIDGE_UPSTREAM_BASE_URL?")
