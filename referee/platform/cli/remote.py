"""``referee remote``: the participant's command line, speaking a referee server's HTTP API.

``referee remote login URL`` trades a user name and password for a personal token (or takes one
with ``--token``) and keeps it in ``$XDG_CONFIG_HOME/referee/credentials.json`` (default
``~/.config``; mode 0600). ``submit``, ``status`` and ``leaderboard`` then act as that user, like
the kaggle and evalai command lines. Standard library only: no web extra needed on a laptop.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, urlencode, urlsplit

import click

from referee.platform.core.errors import RefereeError

TIMEOUT_S = 60.0
CHUNK = 1 << 20


class RemoteError(RefereeError):
    """The server refused a request: its status, code and message."""

    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None):
        self.status, self.code, self.retry_after = status, code, retry_after
        hint = f" (retry after {retry_after} s)" if retry_after else ""
        super().__init__(f"{status} {code}: {message}{hint}")


# -- credentials ------------------------------------------------------------------------------------
def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "referee" / "credentials.json"


def read_credentials() -> dict[str, Any]:
    path = credentials_path()
    if not path.exists():
        return {"servers": {}, "default": None}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def write_credentials(data: dict[str, Any]) -> Path:
    """Write the credentials file readable by its owner only (0600, in a 0700 directory)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RefereeError(f"{url!r} is not a server address (e.g. http://127.0.0.1:8000)")
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# -- the client -------------------------------------------------------------------------------------
class Client:
    """A small HTTP client for the referee API (one connection per request)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT_S):
        self.url = normalise_url(url)
        self.token = token
        self.timeout = timeout
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._prefix = parts.path

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._netloc, timeout=self.timeout)

    def request(self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
                query: dict[str, Any] | None = None) -> Any:
        hdrs = {"Accept": "application/json", **(headers or {})}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        target = self._prefix + path + (("?" + urlencode({k: v for k, v in query.items() if v is not None}))
                                        if query else "")
        conn = self._connection()
        try:
            try:
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
            except OSError as exc:
                raise RefereeError(f"cannot reach {self.url}: {exc}") from None
        finally:
            conn.close()
        ctype = resp.getheader("Content-Type", "")
        payload: Any = json.loads(data) if data and "json" in ctype else data.decode("utf-8", "replace")
        if resp.status >= 400:
            msg = payload.get("message", "") if isinstance(payload, dict) else str(payload)[:300]
            code = payload.get("error", "error") if isinstance(payload, dict) else "error"
            raise RemoteError(resp.status, code, msg, resp.getheader("Retry-After"))
        return payload

    def upload(self, path: str, file: Path, fields: dict[str, str]) -> Any:
        """POST a multipart form with ``fields`` first and the file streamed from disk last."""
        boundary = "referee-" + uuid.uuid4().hex
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode() + v.encode() + b"\r\n"
            for k, v in fields.items() if v)
        name = file.name.replace('"', "_")
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = len(head) + file.stat().st_size + len(tail)

        def body() -> Iterator[bytes]:
            yield head
            with open(file, "rb") as f:
                while block := f.read(CHUNK):
                    yield block
            yield tail

        return self.request("POST", path, body=body(), headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(size)})


def client_for(server: str | None) -> Client:
    creds = read_credentials()
    url = normalise_url(server) if server else creds.get("default")
    if not url:
        raise RefereeError("not signed in: run `referee remote login URL` first")
    entry = creds.get("servers", {}).get(url)
    if entry is None:
        raise RefereeError(f"not signed in to {url}: run `referee remote login {url}` first")
    return Client(url, entry["token"])


# -- commands ---------------------------------------------------------------------------------------
server_option = click.option("--server", default=None, help="Server URL (default: the last one you logged in to).")


@click.group()
def remote() -> None:
    """Take part in a competition on a referee server: login, submit, status, pick, leaderboard."""


@remote.command("login")
@click.argument("url")
@click.option("--username", default=None, help="Your user name (asked when missing).")
@click.option("--token", default=None, envvar="REFEREE_TOKEN",
              help="Use this personal or team token instead of a password (or set REFEREE_TOKEN).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def remote_login(url: str, username: str | None, token: str | None, password_stdin: bool) -> None:
    """Sign in to a server and keep a personal token for the other commands."""
    client = Client(url)
    if token is None:
        username = username or click.prompt("user name")
        password = sys.stdin.readline().rstrip("\n") if password_stdin else click.prompt("password", hide_input=True)
        host = os.uname().nodename if hasattr(os, "uname") else "this machine"
        made = client.request("POST", "/api/tokens", body={"username": username, "password": password,
                                                           "label": f"referee remote on {host}"[:100]})
        token = str(made["token"])
    me = Client(client.url, token).request("GET", "/api/me")
    creds = read_credentials()
    creds.setdefault("servers", {})[client.url] = {"token": token, "username": me.get("username"),
                                                   "role": me.get("role")}
    creds["default"] = client.url
    path = write_credentials(creds)
    who = me.get("username") or me.get("team") or me.get("role")
    click.echo(f"signed in to {client.url} as {who}; token kept in {path}")


@remote.command("logout")
@server_option
def remote_logout(server: str | None) -> None:
    """Revoke the kept personal token on the server and forget it here."""
    client = client_for(server)
    me = client.request("GET", "/api/me")
    if me.get("role") == "user":
        client.request("DELETE", f"/api/tokens/{quote(me['token_id'])}")
    creds = read_credentials()
    creds.get("servers", {}).pop(client.url, None)
    if creds.get("default") == client.url:
        creds["default"] = next(iter(creds.get("servers", {})), None)
    write_credentials(creds)
    click.echo(f"signed out of {client.url}")


def _show_submission(d: dict[str, Any]) -> None:
    click.echo(f"#{d['id']} team {d['team']} phase {d['phase']}: {d['status']}")
    if d.get("description"):
        click.echo(f"  description: {d['description']}")
    if d.get("failure_reason"):
        click.echo(f"  {d['failure_reason']}: {d.get('failure_message') or ''}")
    if d.get("hidden_reason"):
        click.echo(f"  hidden by the organisers: {d['hidden_reason']}")
    for s in d.get("scores", []):
        ci = f" [{s['ci_low']:.5f}, {s['ci_high']:.5f}]" if s.get("ci_low") is not None else ""
        click.echo(f"  {s['split']:8} {s['metric']:14} {s['value']:.6f}{ci}")


@remote.command("submit")
@click.argument("competition_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--phase", default=None, help="Phase (default: the open one).")
@click.option("--description", default=None, help="What this submission is (method, what changed).")
@click.option("--wait/--no-wait", default=False, help="Wait until it is scored, then show the scores.")
@click.option("--json", "as_json", is_flag=True)
@server_option
def remote_submit(competition_id: str, file: str, phase: str | None, description: str | None, wait: bool,
                  as_json: bool, server: str | None) -> None:
    """Upload a prediction file (or an image tarball) for your team."""
    client = client_for(server)
    fields = {"phase": phase or "", "description": description or ""}
    made = client.upload(f"/api/competitions/{quote(competition_id)}/submissions", Path(file), fields)
    if wait:
        deadline = time.monotonic() + 3600
        while made["status"] in ("pending", "running") and time.monotonic() < deadline:
            time.sleep(1.0)
            made = client.request("GET", f"/api/submissions/{made['id']}")
    if as_json:
        click.echo(json.dumps(made, indent=2))
    elif wait:
        _show_submission(made)
    else:
        click.echo(f"submission #{made['id']} accepted for team {made['team']} ({made['phase']}); "
                   f"`referee remote status {competition_id} --submission {made['id']}` follows it")


@remote.command("status")
@click.argument("competition_id")
@click.option("--submission", "submission_id", type=int, default=None, help="Show one submission in detail.")
@click.option("--json", "as_json", is_flag=True)
@server_option
def remote_status(competition_id: str, submission_id: int | None, as_json: bool, server: str | None) -> None:
    """Your team's submissions (or one of them, with its scores)."""
    client = client_for(server)
    if submission_id is not None:
        d = client.request("GET", f"/api/submissions/{submission_id}")
        click.echo(json.dumps(d, indent=2)) if as_json else _show_submission(d)
        return
    rows = client.request("GET", f"/api/competitions/{quote(competition_id)}/submissions")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        extra = r.get("failure_reason") or r.get("hidden_reason") or ""
        scores = " ".join(f"{split} {v:.5f}" for split, v in (r.get("scores") or {}).items() if v is not None)
        picked = " [picked]" if r.get("picked") else ""
        click.echo(f"#{r['id']:<6} {r['phase']:10} {r['status']:10} {r['created_at'][:19]}  {scores}{picked}  "
                   f"{r.get('description') or r.get('filename') or ''}  {extra}".rstrip())
    try:
        q = client.request("GET", f"/api/competitions/{quote(competition_id)}/quota")
    except RemoteError:  # an organiser (in no team) has no quota
        return
    left = "no limit" if q["remaining"] is None else f"{q['remaining']} submission(s) left"
    click.echo(f"phase {q['phase']}: {left}")


@remote.command("pick")
@click.argument("submission_id", type=int)
@click.option("--off", is_flag=True, help="Withdraw the pick.")
@server_option
def remote_pick(submission_id: int, off: bool, server: str | None) -> None:
    """Pick one of your team's submissions for its final (private) entry, where the phase lets teams pick."""
    client = client_for(server)
    made = client.request("DELETE" if off else "POST", f"/api/submissions/{submission_id}/pick")
    picks = ", ".join(f"#{i}" for i in made["picks"]) or "none"
    click.echo(f"#{submission_id} {'unpicked' if off else 'picked'}; your picks in phase {made['phase']}: {picks}")


@remote.command("leaderboard")
@click.argument("competition_id")
@click.option("--split", type=click.Choice(["public", "private"]), default="public", show_default=True)
@click.option("--phase", default=None)
@click.option("--mode", type=click.Choice(["best", "latest", "all"]), default="best", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@server_option
def remote_leaderboard(competition_id: str, split: str, phase: str | None, mode: str, as_json: bool,
                       server: str | None) -> None:
    """A leaderboard of the competition, as the server shows it to you."""
    client = client_for(server)
    lb = client.request("GET", f"/api/competitions/{quote(competition_id)}/leaderboard",
                        query={"split": split, "phase": phase, "mode": mode})
    if as_json:
        click.echo(json.dumps(lb, indent=2))
        return
    click.echo(f"{lb['title']} — {lb['phase']} / {lb['split']} ({lb['mode']}; primary {lb['primary']}, "
               f"{lb['direction']})")
    for e in lb["entries"]:
        v = e["metrics"].get(lb["primary"])
        click.echo(f"{e['rank']:>4}  {e['team']:24} {'' if v is None else f'{v:.5f}'}")
    for n in lb.get("notes", []):
        click.echo(f"  {n}")
    mine = lb.get("your_entry")
    if mine:
        click.echo(f"your team {mine['team']} ranks {mine['rank']} of {len(lb['entries'])}")
