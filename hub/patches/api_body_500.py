"""JupyterHub 5.5's REST API answers some malformed JSON bodies with a 500 instead of a 400
(it indexes them without checking their type): a list as server options, non-strings as
usernames. Found by make reliability's malformed bodies; these become a 400 with a message
that says what the body should be."""
from __future__ import annotations

import json
import re

from hub.patches import request_checks, require

WRITTEN_FOR = ">=5.5,<5.6"
UPSTREAM = "POST /users and /users/{name}/server(s) do not check the JSON body's type (not reported upstream yet)"

_USERS = re.compile(r"^/(?:[^/]+/)*hub/api/users/?$")
_SERVER = re.compile(r"^/(?:[^/]+/)*hub/api/users/[^/]+/servers?(?:/[^/]*)?/?$")


def malformed_api_body(method: str, path: str, body: bytes) -> str | None:
    """What is wrong with the body, for the bodies JupyterHub would answer with a 500; None
    when the body is fine or not one of these."""
    if method != "POST" or not body.strip():
        return None
    if _SERVER.match(path):
        try:
            options = json.loads(body)
        except ValueError:
            return None  # JupyterHub itself answers 400 for what is not JSON
        if not isinstance(options, dict):
            return 'server options must be a JSON object, e.g. {"profile": "gpu"}'
    elif _USERS.match(path):
        try:
            data = json.loads(body)
        except ValueError:
            return None
        names = data.get("usernames") if isinstance(data, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return 'the body must be {"usernames": ["alice", ...]} with usernames as strings'
    return None


def check(handler) -> tuple[int, str] | None:
    request = handler.request
    problem = malformed_api_body(request.method, request.path, request.body)
    return (400, problem) if problem else None


def install() -> None:
    require(__name__, WRITTEN_FOR, UPSTREAM)
    request_checks.add(check)
