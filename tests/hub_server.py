"""A local stand-in for the part of the Hub HTTP API that huggingface_hub's create_repo and
upload_folder use, on 127.0.0.1 (point HF_ENDPOINT at it). It records what was committed and can
fail on purpose."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self, fail_first: int = 0, always_fail: bool = False) -> None:
        self.fail_first, self.always_fail = fail_first, always_fail
        self.requests: list[tuple[str, str]] = []
        self.commits: list[dict] = []
        self.validated: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                return (
                    gzip.decompress(data)
                    if self.headers.get("Content-Encoding") == "gzip"
                    else data
                )

            def _send(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                self._send(404, {"error": "not here"})

            def do_POST(self):
                body = self._body()
                hub.requests.append(("POST", self.path))
                if hub.always_fail or hub.fail_first > 0:
                    hub.fail_first -= 1
                    return self._send(500, {"error": "server down"})
                if self.path.startswith("/api/repos/create"):
                    request = json.loads(body)
                    repo = "/".join(x for x in (request.get("organization"), request["name"]) if x)
                    return self._send(200, {"url": f"{hub.endpoint}/{repo}", "name": repo})
                if self.path.startswith("/api/validate-yaml"):
                    hub.validated.append(json.loads(body))
                    return self._send(200, {"errors": [], "warnings": []})
                if "/preupload/" in self.path:
                    files = json.loads(body)["files"]
                    return self._send(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in files
                            ]
                        },
                    )
                if "/commit/" in self.path:
                    commit = {"path": self.path, "files": {}}
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "header":
                            commit["header"] = item["value"]
                        elif item["key"] == "file":
                            commit["files"][item["value"]["path"]] = base64.b64decode(
                                item["value"]["content"]
                            )
                    hub.commits.append(commit)
                    repo = self.path.split("/api/models/")[1].split("/commit/")[0]
                    return self._send(
                        200,
                        {
                            "commitUrl": f"{hub.endpoint}/{repo}/commit/{'a' * 40}",
                            "commitOid": "a" * 40,
                            "success": True,
                        },
                    )
                return self._send(404, {"error": f"unknown route {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
