#!/usr/bin/env python3
"""A stand-in model server for kennel's end-to-end tests (stdlib only).

It speaks enough of three model APIs for a real agent to work against it:

    GET  /v1/models                   the models that have a script
    POST /v1/chat/completions         OpenAI chat completions, streamed or not
                                      (aider)
    POST /v1/messages                 Anthropic messages with tool use,
                                      streamed or not (Claude Code)
    POST /v1/messages/count_tokens    a rough count
    POST /v1/responses                OpenAI Responses, streamed, with
                                      function calls (Codex)
    POST /v1/oauth/token              an OAuth token endpoint (JSON or form):
                                      the authorization code `good-<family>`
                                      gets an access and a refresh token of
                                      Claude's shape; a refresh token is
                                      good once (it rotates); the tokens it
                                      issued are in its log lines, under
                                      `answer.issued` with their `family`

and nothing else (other paths: 404, logged). It never invents an answer:
replies come from scripts the tests write, one JSON file per model name,
SCRIPTS/<model>.json, where <model> is the request's `model` (a provider
prefix such as `openai/` already stripped by the client):

  chat completions: {"replies": ["first answer", ...],
                     "commit_messages": ["first", ...]}
      A request whose system prompt asks for a commit message gets the next
      of `commit_messages` (the last one again when they run out); any other
      request gets the model's next reply, in order.

  messages and responses: {"turns": [[BLOCK, ...], ...], "side_reply": "..."}
      A conversation's turn is chosen from the request itself, not from the
      order requests came in: turn N answers a request that already holds N
      answers of the model (assistant messages, or Responses output items),
      so a retried request gets the same answer. A BLOCK is {"text": "..."},
      {"tool": NAME, "input": {...}} (a tool use by that name; Anthropic), or
      {"shell": "command"} (a call of whichever shell tool the request
      offers; Responses, where each turn holds one block). "{cwd}" in a
      tool's input becomes the working directory the agent's system prompt
      names. A request that offers no tools is the agent's side question (a
      title, a summary): it gets `side_reply`.

A model with no script, or with no reply left, gets an HTTP 400 error the
agent will show.

Every request is recorded as one JSON line in LOG: time, method, path,
headers (without Authorization and other credentials, of which only a
SHA-256 of each value is kept, under `credential_sha256`: what the tests of
kennel's credential broker compare), the JSON body (or the raw text), and
what was answered.

    stand_in_model.py --bind 198.18.0.2 --port 8090 --log LOG --scripts DIR
                      [--tls-cert CHAIN.pem --tls-key KEY.pem]
"""

import argparse
import hashlib
import secrets
import urllib.parse
import json
import os
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}

LOCK = threading.Lock()
# model -> index of its next reply, and of its next commit message (chat
# completions only)
NEXT_REPLY = {}
NEXT_COMMIT_MESSAGE = {}
# A unique suffix for ids.
COUNTER = [0]
# OAuth: each refresh token still good -> its family (the code's suffix).
REFRESH_TOKENS = {}

# The shapes of the Responses API's model-output items in a request's input.
RESPONSES_OUTPUT_ITEMS = {"function_call", "custom_tool_call", "local_shell_call"}


def next_id(prefix):
    with LOCK:
        COUNTER[0] += 1
        return "%s_stand_in_%d_%d" % (prefix, int(time.time() * 1000), COUNTER[0])


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


def working_directory(*texts):
    """The working directory an agent's system prompt names, if any."""
    for text in texts:
        found = re.search(r"(?:working directory|<cwd>|cwd)\s*[:=>]\s*(/[^\s<\"'\\]*)", text, re.I)
        if found:
            return found.group(1)
    return None


def with_cwd(value, cwd):
    """`value` with "{cwd}" in every string replaced by `cwd`."""
    if isinstance(value, str):
        return value.replace("{cwd}", cwd or "{cwd}")
    if isinstance(value, list):
        return [with_cwd(v, cwd) for v in value]
    if isinstance(value, dict):
        return {k: with_cwd(v, cwd) for k, v in value.items()}
    return value


def words(value):
    return len(json.dumps(value).split())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kennel-stand-in-model/1"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    # ---- plumbing -------------------------------------------------------

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
            "credential_sha256": {
                k.lower(): hashlib.sha256(v.encode()).hexdigest()
                for k, v in self.headers.items()
                if k.lower() in SECRET_HEADERS
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
            {
                "type": "error",
                "error": {"message": message, "type": "invalid_request_error", "code": None},
            },
        )

    def start_events(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def event(self, data, name=None):
        """One server-sent event (`name` for APIs that name their events)."""
        if name:
            self.wfile.write(b"event: " + name.encode() + b"\n")
        self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        self.wfile.flush()

    def script(self, model):
        path = os.path.join(self.server.scripts, os.path.basename(model) + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def route(self):
        return self.path.split("?", 1)[0].rstrip("/")

    # ---- requests -------------------------------------------------------

    def do_GET(self):
        if self.route() != "/v1/models":
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
        handlers = {
            "/v1/chat/completions": self.chat_completions,
            "/v1/messages": self.messages,
            "/v1/messages/count_tokens": self.count_tokens,
            "/v1/responses": self.openai_responses,
            "/v1/oauth/token": self.oauth_token,
        }
        handler = handlers.get(self.route())
        if handler is None:
            return self.error(404, "no such path: " + self.path, body)
        if handler == self.oauth_token and not isinstance(body, dict):
            body = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
        if not isinstance(body, dict):
            return self.error(400, "expected a JSON object", body)
        return handler(body)

    def oauth_token(self, body):
        grant = body.get("grant_type")
        with LOCK:
            if grant == "authorization_code" and str(body.get("code", "")).startswith("good-"):
                family = body["code"][len("good-"):]
            elif grant == "refresh_token" and body.get("refresh_token") in REFRESH_TOKENS:
                family = REFRESH_TOKENS.pop(body["refresh_token"])
            else:
                family = None
            if family is not None:
                alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                noise = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))  # noqa: E731
                issued = {
                    "access": "sk-ant-oat01-" + noise(95) + "AA",
                    "refresh": "sk-ant-ort01-" + noise(95) + "AA",
                }
                REFRESH_TOKENS[issued["refresh"]] = family
        if family is None:
            self.record(body, {"status": 400, "error": "invalid_grant"})
            return self.send_json(400, {"error": "invalid_grant"})
        self.record(body, {"status": 200, "family": family, "grant": grant, "issued": issued})
        return self.send_json(
            200,
            {
                "token_type": "Bearer",
                "access_token": issued["access"],
                "refresh_token": issued["refresh"],
                "expires_in": 28800,
                "scope": "user:inference user:profile",
            },
        )

    def turn_of(self, body, answered, tools, texts):
        """The script's answer to a turn-based request: (model, blocks, kind)
        or None after an error was sent. "{cwd}" in the blocks becomes the
        working directory `texts` (the agent's prompt) name."""
        model = str(body.get("model", ""))
        script = self.script(model)
        if script is None:
            self.error(400, "no script for model %r" % model, body)
            return None
        if not tools:
            return model, [{"text": script.get("side_reply", "OK")}], "side"
        turns = script.get("turns", [])
        if answered >= len(turns):
            self.error(400, "model %r has no turn %d" % (model, answered), body)
            return None
        blocks = turns[answered]
        if "{cwd}" in json.dumps(blocks):
            cwd = working_directory(*texts)
            if cwd is None:
                self.error(400, "no working directory in the request for {cwd}", body)
                return None
            blocks = with_cwd(blocks, cwd)
        return model, blocks, "turn %d" % answered

    # ---- OpenAI chat completions ---------------------------------------

    def chat_completions(self, body):
        if not isinstance(body.get("messages"), list):
            return self.error(400, "expected a JSON object with `messages`", body)
        model = str(body.get("model", ""))
        script = self.script(model)
        if script is None:
            return self.error(400, "no script for model %r" % model, body)
        if asks_for_commit_message(body["messages"]) and "commit_messages" in script:
            with LOCK:
                index = NEXT_COMMIT_MESSAGE.get(model, 0)
                NEXT_COMMIT_MESSAGE[model] = index + 1
            messages = script["commit_messages"]
            text, kind = messages[min(index, len(messages) - 1)], "commit_message %d" % index
        else:
            with LOCK:
                index = NEXT_REPLY.get(model, 0)
                NEXT_REPLY[model] = index + 1
            replies = script.get("replies", [])
            if index >= len(replies):
                return self.error(400, "model %r has no reply left" % model, body)
            text, kind = replies[index], "reply %d" % index
        self.record(body, {"status": 200, "kind": kind, "text": text, "stream": bool(body.get("stream"))})
        completion_id = next_id("chatcmpl")
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
        self.start_events()

        def chunk(delta, finish=None, with_usage=False):
            value = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                value["usage"] = usage
            self.event(value)

        chunk({"role": "assistant", "content": ""})
        lines = text.splitlines(keepends=True)
        for i in range(0, len(lines), 3):
            chunk({"content": "".join(lines[i : i + 3])})
        chunk({}, finish="stop", with_usage=True)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    # ---- Anthropic messages --------------------------------------------

    def count_tokens(self, body):
        count = words(body.get("messages")) + words(body.get("system"))
        self.record(body, {"status": 200, "kind": "count_tokens"})
        self.send_json(200, {"input_tokens": count})

    def messages(self, body):
        if not isinstance(body.get("messages"), list):
            return self.error(400, "expected a JSON object with `messages`", body)
        answered = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        texts = [content_text(body.get("system"))]
        texts += [content_text(m.get("content")) for m in body["messages"]]
        chosen = self.turn_of(body, answered, body.get("tools"), texts)
        if chosen is None:
            return
        model, blocks, kind = chosen
        content = []
        for block in blocks:
            if "tool" in block:
                content.append(
                    {
                        "type": "tool_use",
                        "id": next_id("toolu"),
                        "name": block["tool"],
                        "input": block.get("input", {}),
                    }
                )
            else:
                content.append({"type": "text", "text": block.get("text", "")})
        stop = "tool_use" if any(c["type"] == "tool_use" for c in content) else "end_turn"
        stream = bool(body.get("stream"))
        self.record(body, {"status": 200, "kind": kind, "content": content, "stream": stream})
        usage = {"input_tokens": words(body["messages"]), "output_tokens": words(content)}
        message = {
            "id": next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not stream:
            return self.send_json(200, message)
        self.start_events()
        start = dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
        self.event({"type": "message_start", "message": start}, "message_start")
        for index, block in enumerate(content):
            if block["type"] == "text":
                opened = {"type": "text", "text": ""}
                text = block["text"]
                deltas = [{"type": "text_delta", "text": text[i : i + 40]} for i in range(0, len(text), 40)]
            else:
                opened = dict(block, input={})
                encoded = json.dumps(block["input"])
                deltas = [
                    {"type": "input_json_delta", "partial_json": encoded[i : i + 40]}
                    for i in range(0, len(encoded), 40)
                ]
            self.event({"type": "content_block_start", "index": index, "content_block": opened}, "content_block_start")
            for delta in deltas:
                self.event({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")
            self.event({"type": "content_block_stop", "index": index}, "content_block_stop")
        self.event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
            "message_delta",
        )
        self.event({"type": "message_stop"}, "message_stop")

    # ---- OpenAI Responses ----------------------------------------------

    def openai_responses(self, body):
        items = body.get("input")
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        if not isinstance(items, list):
            return self.error(400, "expected a JSON object with `input`", body)
        answered = sum(
            1
            for item in items
            if isinstance(item, dict)
            and (
                item.get("type") in RESPONSES_OUTPUT_ITEMS
                or (item.get("type") == "message" and item.get("role") == "assistant")
            )
        )
        tools = body.get("tools") or []
        texts = [content_text(body.get("instructions"))]
        texts += [content_text(item.get("content")) for item in items if isinstance(item, dict)]
        chosen = self.turn_of(body, answered, tools, texts)
        if chosen is None:
            return
        model, blocks, kind = chosen
        output = []
        for block in blocks:
            if "shell" in block:
                item = self.shell_call(block["shell"], tools)
                if item is None:
                    names = [t.get("name") or t.get("type") for t in tools]
                    return self.error(400, "the request offers no shell tool: %r" % names, body)
                output.append(item)
            else:
                output.append(
                    {
                        "type": "message",
                        "id": next_id("msg"),
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": block.get("text", ""), "annotations": []}],
                    }
                )
        self.record(body, {"status": 200, "kind": kind, "output": output, "stream": bool(body.get("stream", True))})
        response_id = next_id("resp")
        usage = {
            "input_tokens": words(items),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": words(output),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": words(items) + words(output),
        }
        response = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": model,
            "output": output,
            "usage": usage,
        }
        if body.get("stream") is False:
            return self.send_json(200, response)
        self.start_events()
        pending = dict(response, status="in_progress", output=[], usage=None)
        self.event({"type": "response.created", "response": pending}, "response.created")
        for index, item in enumerate(output):
            self.event(
                {"type": "response.output_item.added", "output_index": index, "item": item},
                "response.output_item.added",
            )
            if item["type"] == "message":
                text = item["content"][0]["text"]
                self.event(
                    {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "delta": text,
                    },
                    "response.output_text.delta",
                )
            self.event(
                {"type": "response.output_item.done", "output_index": index, "item": item},
                "response.output_item.done",
            )
        self.event({"type": "response.completed", "response": response}, "response.completed")

    def shell_call(self, command, tools):
        """A call of the shell tool the request offers, running `command`."""
        names = {t.get("name"): t for t in tools if isinstance(t, dict)}
        call_id = next_id("call")
        if "shell_command" in names:
            name, arguments = "shell_command", {"command": command}
        elif "shell" in names:
            name, arguments = "shell", {"command": ["bash", "-lc", command]}
        elif "exec_command" in names:
            name, arguments = "exec_command", {"cmd": command}
        elif any(t.get("type") == "local_shell" for t in tools if isinstance(t, dict)):
            return {
                "type": "local_shell_call",
                "id": next_id("lsh"),
                "call_id": call_id,
                "status": "completed",
                "action": {"type": "exec", "command": ["bash", "-lc", command]},
            }
        else:
            return None
        return {
            "type": "function_call",
            "id": next_id("fc"),
            "call_id": call_id,
            "name": name,
            "arguments": json.dumps(arguments),
            "status": "completed",
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--log", required=True, help="JSON lines, one per request")
    parser.add_argument("--scripts", required=True, help="directory of <model>.json scripts")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    server.log_path = args.log
    server.scripts = args.scripts
    print("stand-in model on %s:%d" % (args.bind, args.port), file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
