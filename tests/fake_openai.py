"""A local OpenAI-compatible chat server for the caption tests (127.0.0.1 only).

Each distinct request (image bytes x caption type) is answered by a script: by default
429 (Retry-After: 0), then 500, then a malformed answer, then a valid caption built from the
labels in the prompt. It logs every request so tests can check that nothing already answered
is asked again. Run as a script it serves until killed and appends its log to a file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCRIPT = ("429", "500", "malformed", "ok")


def _caption_for(caption_type: str, text: str) -> str:
    emotion = re.search(r"Emotion: ([A-Za-z]+)", text).group(1)
    active = re.search(r"Active AUs: ([A-Z0-9, a-z]+)\.", text).group(1)
    aus = [] if active == "none" else [a.strip() for a in active.split(",")]
    if caption_type == "au":
        lines = [f"{i}. **{au} (Muscle)**: The {au} muscle moves visibly in this face." for i, au in enumerate(aus, 1)]
        return "\n".join(lines) or "The face is at rest with no action unit active."
    if caption_type == "key_au":
        named = " and ".join(aus) if aus else "no unit"
        return f"The person appears to feel {emotion.lower()}. The decisive units are {named} in this image."
    return f"The person in the image appears to feel {emotion.lower()}, judging by the brows and mouth."


class FakeOpenAI:
    def __init__(self, script=SCRIPT, delay: float = 0.0, log_path: str | None = None):
        self.script, self.delay, self.log_path = script, delay, log_path
        self.attempts = defaultdict(int)
        self.log = []  # (key, outcome)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def successes(self) -> dict:
        counts = defaultdict(int)
        for key, outcome in self.log:
            if outcome == "ok":
                counts[key] += 1
        return counts

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                system = body["messages"][0]["content"]
                user = body["messages"][1]["content"]
                text = next(p["text"] for p in user if p["type"] == "text")
                url = next(p["image_url"]["url"] for p in user if p["type"] == "image_url")
                image_sha = hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()
                caption_type = ("key_au" if "decisive" in system else "au" if "action unit recognition" in system
                                else "emotion")
                key = f"{image_sha}:{caption_type}"
                with fake.lock:
                    fake.attempts[key] += 1
                    step = fake.script[min(fake.attempts[key], len(fake.script)) - 1]
                if fake.delay:
                    time.sleep(fake.delay)
                if step == "trickle":  # a stuck server: an answer that starts and never finishes
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    try:
                        self.wfile.write(b"{")
                        for _ in range(3000):
                            time.sleep(0.1)
                            self.wfile.write(b" ")
                            self.wfile.flush()
                    except OSError:
                        pass
                    outcome = ("trickle",)
                elif step.startswith("429"):  # "429" or "429:<Retry-After value>"
                    outcome = ("429",)
                    after = step.split(":", 1)[1] if ":" in step else "0"
                    self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, [("Retry-After", after)])
                elif step == "500":
                    outcome = ("500",)
                    self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                else:
                    content = "I'm sorry, I can't help with that." if step == "malformed" else _caption_for(caption_type, text)
                    outcome = (step,)
                    self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": content}}]})
                with fake.lock:
                    fake.log.append((key, outcome[0]))
                    if fake.log_path:
                        with open(fake.log_path, "a") as f:
                            f.write(json.dumps([key, outcome[0]]) + "\n")

        return Handler


if __name__ == "__main__":  # python fake_openai.py PORTFILE LOGFILE DELAY
    port_file, log_file, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    fake = FakeOpenAI(delay=delay, log_path=log_file)
    with fake:
        with open(port_file + ".tmp", "w") as f:
            f.write(fake.base_url)
        import os

        os.replace(port_file + ".tmp", port_file)
        while True:
            time.sleep(1)
