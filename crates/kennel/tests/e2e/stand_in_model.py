#!/usr/bin/env python3
"""A stand-in model server for kennel's end-to-end tests (stdlib only).

It speaks enough of the OpenAI API for an agent to work against it:

    GET  /v1/models              the models that have a script
    POST /v1/chat/completions    streamed (SSE) or not

and nothing else (other paths: 404). It never invents an answer: replies
come from scripts the tests write, one JSON file per model name,

    SCRIPTS/<model>.json   {"replies": ["first answer", "second answer", ...],
                            "commit_message": "one line"}

where <model> is the request's `model` (a provider prefix such as
`openai/` already stripped by the client). A request whose system prompt
asks for a commit message gets `commit_message`; any other request gets the
model's next reply, in order. A model with no script, or with no reply
left, gets an HTTP 400 error the agent will show.

Every request is recorded as one JSON line in LOG: time, method, path,
headers (without Authorization and other credentials), the JSON body (or
the raw text), and what was answered.

    stand_in_model.py --bind 198.18.0.2 --port 8090 --log LOG --scripts DIR
"""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}

LOCK = threading.Lock()
# model -> index of its next reply
NEXT_REPLY = {}


def content_text(content):
    """The text of a message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict)
        )
    return ""


def asks_for_commit_message(messages):
    for message in messages:
        if message.get("role") == "system" and "commit message" in content_text(
            message.get("content")
        ).lower():
            return True
    return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kennel-stand-in-model/1"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def record(self, body, answer):
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": {
                k.lower(): v
                for k, v in self.headers.items()
                if k.lower() not in SECRET_HEADERS
            },
            "body": body,
            "answer": answer,
        }
        with LOCK:
            with open(self.server.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")

    def send_json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, body=None):
        self.record(body, {"status": status, "error": message})
        self.send_json(
            status,
            {"error": {"message": message, "type": "invalid_request_error", "code": None}},
        )

    def script(self, model):
        path = os.path.join(self.server.scripts, os.path.basename(model) + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def do_GET(self):
        if self.path.rstrip("/") != "/v1/models":
            return self.error(404, "no such path: " + self.path)
        models = sorted(
            name[: -len(".json")]
            for name in os.listdir(self.server.scripts)
            if name.endswith(".json")
        )
        listing = {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "kennel-tests"}
                for m in models
            ],
        }
        self.record(None, {"status": 200, "models": models})
        self.send_json(200, listing)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self.error(404, "no such path: " + self.path, body)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self.error(400, "expected a JSON object with `messages`", body)
        model = str(body.get("model", ""))
        script = self.script(model)
        if script is None:
            return self.error(400, "no script for model %r" % model, body)
        if asks_for_commit_message(body["messages"]) and "commit_message" in script:
            text, kind = script["commit_message"], "commit_message"
        else:
            with LOCK:
                index = NEXT_REPLY.get(model, 0)
                NEXT_REPLY[model] = index + 1
            replies = script.get("replies", [])
            if index >= len(replies):
                return self.error(400, "model %r has no reply left" % model, body)
            text, kind = replies[index], "reply %d" % index
        self.record(body, {"status": 200, "kind": kind, "text": text, "stream": bool(body.get("stream"))})
        completion_id = "chatcmpl-stand-in-%d" % int(time.time() * 1000)
        prompt_tokens = sum(len(content_text(m.get("content")).split()) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        }
        if not body.get("stream"):
            return self.send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
        # Server-sent events, a few lines per chunk, then [DONE].
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def event(delta, finish=None, with_usage=False):
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                chunk["usage"] = usage
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

        event({"role": "assistant", "content": ""})
        lines = text.splitlines(keepends=True)
        for i in range(0, len(lines), 3):
            event({"content": "".join(lines[i : i + 3])})
        event({}, finish="stop", with_usage=True)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--log", required=True, help="JSON lines, one per request")
    parser.add_argument("--scripts", required=True, help="directory of <model>.json scripts")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.log_path = args.log
    server.scripts = args.scripts
    print("stand-in model on %s:%d" % (args.bind, args.port), file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
