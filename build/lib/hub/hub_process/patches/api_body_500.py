"""JupyterHub's REST API answers some malformed JSON bodies with a 500 (or, for one, starts a
server) instead of a 400. Found by make reliability's malformed bodies; these become a 400 with
a message that says what the body should be. Re-checked against JupyterHub 6.1.1's
apihandlers/users.py:

- POST /users: usernames that are not strings are lowercased without a type check (a 500);
  a string instead of a list is taken letter by letter;
- POST /users/{name}/server(s): 6.0 checks that the body is a JSON object itself
  (get_server_json_body), except an empty list, which it takes as no body and starts the server;
- PATCH /users/{name}/server(s) (new in 6.0): a body that is not an object, or has a field
  other than name, display_name and user_options, is a 500 (an AttributeError building the
  error message).
"""
from __future__ import annotations

import json
import re

from hub.hub_process.patches import request_checks, require

WRITTEN_FOR = ">=6.1,<6.2"
UPSTREAM = ("POST /users does not check the usernames' type, POST /users/{name}/server takes [] as no "
            "body, PATCH /users/{name}/server fails on unknown fields (not reported upstream yet)")

_USERS = re.compile(r"^/(?:[^/]+/)*hub/api/users/?$")
_SERVER = re.compile(r"^/(?:[^/]+/)*hub/api/users/[^/]+/servers?(?:/[^/]*)?/?$")
PATCH_FIELDS = frozenset({"name", "display_name", "user_options"})


def malformed_api_body(method: str, path: str, body: bytes) -> str | None:
    """What is wrong with the body, for the bodies JupyterHub would mishandle; None when the
    body is fine or not one of these."""
    if method not in ("POST", "PATCH") or not body.strip():
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None  # JupyterHub itself answers 400 for what is not JSON
    if method == "POST" and _SERVER.match(path):
        if not isinstance(data, dict):
            return 'server options must be a JSON object, e.g. {"profile": "gpu"}'
    elif method == "PATCH" and _SERVER.match(path):
        if not isinstance(data, dict) or not set(data) <= PATCH_FIELDS:
            return f"the body must be a JSON object with only the fields {', '.join(sorted(PATCH_FIELDS))}"
    elif method == "POST" and _USERS.match(path):
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
