"""No token or API key ever reaches the server's logs or its answers."""

from __future__ import annotations

from tests.helpers import Stack, read_json


def test_debug_logs_and_error_answers_hold_no_secret(tmp_path):
    stack = Stack(tmp_path, accounts=2, log_level="DEBUG", server={"refresh_wait_seconds": 0.5})
    try:
        user = [{"role": "user", "content": "hello"}]
        answers = [stack.post({"model": "kimi", "messages": user}).text,
                   stack.post({"model": "kimi", "messages": user, "stream": True}).text,
                   stack.post({"model": "kimi", "messages": user}, headers={"Authorization": "Bearer sk-guess"}).text]
        for account in stack.accounts:   # Kimi now refuses every token we hold
            stack.emulator.admin("revoke", {"user_id": account["user_id"]})
        answers.append(stack.post({"model": "kimi", "messages": user}).text)
        answers.append(stack.post({"model": "kimi", "messages": user, "stream": True}).text)
        status = read_json(stack.config_path)
    finally:
        stack.close()
    log = stack.server_log.read_text()
    assert "DEBUG" in log and "rejected the access token fp:" in log
    secrets = [Stack.API_KEY, "sk-guess"] + [a[k] for a in stack.accounts for k in ("access_token", "refresh_token")]
    secrets += [a["refresh_token"] for a in status["accounts"]]
    for secret in secrets:
        assert secret not in log
        for answer in answers:
            assert secret not in answer
