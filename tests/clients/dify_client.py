# Drives Dify's official Python SDK (`dify-client` on PyPI, pinned in
# tests/clients/requirements.txt) against dify-bff's gateway, changing only the base URL and
# using a placeholder key. Run by tests/api/gateway.rs, with the SDK installed into
# target/pyclient by .ci/run:
#   PYTHONPATH=target/pyclient python3 tests/clients/dify_client.py http://127.0.0.1:PORT/v1
# Prints one JSON line of what it saw and exits 0, or raises (exit 1) at the first surprise.
#
# The SDK sends each call with `requests.request`, a new session every time, so it keeps no
# cookie: a Python program keeps dify-bff's identity cookie by giving the SDK one
# `requests.Session` (or runs dify-bff in header mode behind its auth proxy). The `user` the SDK
# sends is ignored. What SDK 0.1.10 has no method for (suggested questions, meta, info, stop,
# workflows, deleting a conversation) goes through the SDK's own `_send_request`, as apps on
# this version do, so it carries the SDK's headers.

import json
import os
import sys

# This script's name is the SDK's: import the SDK, not this file.
HERE = os.path.dirname(os.path.realpath(__file__))
sys.path = [p for p in sys.path if os.path.realpath(p or ".") != HERE]

import requests  # noqa: E402  (installed with the SDK)
import dify_client.client  # noqa: E402
from dify_client import ChatClient, CompletionClient  # noqa: E402

assert len(sys.argv) == 2, "usage: python3 dify_client.py <gateway base URL>"
base = sys.argv[1]

dify_client.client.requests = requests.Session()


def connect(cls):
    client = cls("bff")
    client.base_url = base
    return client


chat = connect(ChatClient)
completion = connect(CompletionClient)
user = "sdk-user-ignored-by-the-gateway"
seen = {}

# A 1x1 transparent PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63fcffff3f0300050001ff5a1cd1c80000000049454e44ae426082"
)


def ok(response, status=200):
    assert response.status_code == status, f"{response.request.method} {response.url}: {response.status_code} {response.text}"
    return response


def data_events(response):
    """The stream's events, read as the SDK's README reads them: line by line, decoded."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data:"):
            yield json.loads(line[len("data:"):].strip())


def streamed(response):
    """A whole stream: its events and the answer they spell."""
    events = list(data_events(response))
    assert events[-1]["event"] in ("message_end", "workflow_finished"), events[-1]
    answer = "".join(e.get("answer", "") for e in events if e["event"] in ("message", "agent_message"))
    return events, answer


parameters = ok(chat.get_application_parameters(user)).json()
assert "opening_statement" in parameters
assert parameters["file_upload"]["image"]["enabled"] is True
seen["parameters"] = True

for path in ("/meta", "/info"):
    ok(chat._send_request("GET", path, params={"user": user})).json()
seen["meta_info"] = True

blocking = ok(chat.create_chat_message({}, "Hello from the Python SDK", user)).json()
assert blocking["answer"], blocking
conversation_id = blocking["conversation_id"]
message_id = blocking["message_id"]
seen["blocking"] = len(blocking["answer"])

stream = ok(chat.create_chat_message({}, "And streamed?", user, response_mode="streaming",
                                     conversation_id=conversation_id))
# Dify names its charset: `requests` decodes the lines (and `.text`) with it; without one it
# would take ISO-8859-1 and garble the raw UTF-8 answers that Dify >= 1.8.1 streams.
assert stream.encoding and stream.encoding.lower() == "utf-8", stream.headers["content-type"]
events, answer = streamed(stream)
assert events[0]["conversation_id"] == conversation_id
assert answer
seen["streamed_events"] = len(events)

upload = ok(chat.file_upload(user, {"file": ("pixel.png", PNG, "image/png")}), 201).json()
assert upload["name"] == "pixel.png" and upload["mime_type"] == "image/png", upload
# A file given without its type (`files={"file": open(path, "rb")}`) is refused, as Dify does.
untyped = chat.file_upload(user, {"file": ("notes.txt", b"no type given")})
assert untyped.status_code == 415 and untyped.json()["code"] == "unsupported_file_type", untyped.text
image = [{"type": "image", "transfer_method": "local_file", "upload_file_id": upload["id"]}]
with_file = ok(chat.create_chat_message({}, "What is in the picture?", user,
                                        conversation_id=conversation_id, files=image)).json()
assert with_file["conversation_id"] == conversation_id
seen["upload"] = upload["id"]

conversations = ok(chat.get_conversations(user)).json()
assert [c["id"] for c in conversations["data"]] == [conversation_id], conversations

history = ok(chat.get_conversation_messages(user, conversation_id, limit=20)).json()
assert [m["id"] for m in history["data"]][0] == message_id
assert len(history["data"]) == 3, history
assert history["data"][1]["answer"] == answer, "the streamed answer is the one Dify kept"
assert history["data"][2]["message_files"], "the picture went with the third message"
seen["history"] = len(history["data"])

renamed = ok(chat.rename_conversation(conversation_id, "Renamed by the Python SDK", user)).json()
assert renamed["name"] == "Renamed by the Python SDK"

assert ok(chat.message_feedback(message_id, "like", user)).json() == {"result": "success"}

suggested = ok(chat._send_request("GET", f"/messages/{message_id}/suggested", params={"user": user})).json()
assert suggested["result"] == "success" and suggested["data"], suggested
seen["suggested"] = len(suggested["data"])

# Stop: a long answer is stopped once its task is named; Dify then ends the stream.
slow = ok(chat.create_chat_message({}, "SLOW: a long story", user, response_mode="streaming",
                                   conversation_id=conversation_id))
slow_events = data_events(slow)
task_id = next(slow_events)["task_id"]
stop = ok(chat._send_request("POST", f"/chat-messages/{task_id}/stop", {"user": user})).json()
assert stop == {"result": "success"}, stop
rest = list(slow_events)
assert rest[-1]["event"] == "message_end", rest[-1]
seen["stopped"] = task_id

done = ok(completion.create_completion_message({"query": "Say hi"}, "blocking", user)).json()
assert done["mode"] == "completion" and done["answer"], done
_, completed = streamed(ok(completion.create_completion_message({"query": "Say hi"}, "streaming", user)))
assert completed
seen["completion"] = len(done["answer"])

run = ok(chat._send_request("POST", "/workflows/run",
                            {"inputs": {"topic": "tides"}, "response_mode": "blocking", "user": user})).json()
assert run["data"]["status"] == "succeeded", run
events, _ = streamed(ok(chat._send_request("POST", "/workflows/run",
                                           {"inputs": {"topic": "tides"}, "response_mode": "streaming",
                                            "user": user}, stream=True)))
assert events[-1]["event"] == "workflow_finished" and events[-1]["data"]["status"] == "succeeded"
seen["workflow"] = run["data"]["status"]

deleted = chat._send_request("DELETE", f"/conversations/{conversation_id}", {"user": user})
assert deleted.status_code < 300, deleted.text
assert ok(chat.get_conversations(user)).json()["data"] == []

print(json.dumps({"ok": True, **seen}, separators=(",", ":")))
