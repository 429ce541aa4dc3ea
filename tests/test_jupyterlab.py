"""`make lab`'s server: JupyterLab starts on the course, has the widgets extension, and runs a
lab notebook through its own kernel API (REST + websocket), as a learner's browser would."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest
from jupyter_server import jupyterlab
from tornado.ioloop import IOLoop
from tornado.websocket import websocket_connect

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    with jupyterlab(ROOT, LLMLAB_EXPECT="not_attempted") as running:
        yield running


def _get(base: str, path: str, token: str) -> bytes:
    request = urllib.request.Request(base + path, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def _post(base: str, path: str, token: str, body: dict) -> dict:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_lab_serves_the_labs_with_the_widgets_extension(server):
    base, token = server
    assert b"JupyterLab" in _get(base, "/lab", token)
    listing = json.loads(_get(base, "/api/contents/labs", token))
    assert "01_architecture.ipynb" in {item["name"] for item in listing["content"]}
    # The page's config lists the prebuilt front-end extensions it will load.
    page = _get(base, "/lab", token).decode()
    assert "@jupyter-widgets/jupyterlab-manager" in page, "ipywidgets would not render"


async def _run_cells(ws_url: str, token: str, sources: list[str]) -> list[dict]:
    """Execute each source on the kernel; return per-cell status and streamed text."""
    request = f"{ws_url}?token={token}"
    connection = await websocket_connect(request)
    results = []
    try:
        for source in sources:
            msg_id = uuid.uuid4().hex
            await connection.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                           "session": uuid.uuid4().hex, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": source, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False}}))
            # Done when the shell has replied AND the kernel went idle on iopub: outputs
            # can arrive after the reply, and only "idle" says none are left.
            text, status, idle = [], None, False
            while status is None or not idle:
                raw = await connection.read_message()
                if raw is None:
                    raise RuntimeError("the kernel connection closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream":
                    text.append(msg["content"]["text"])
                elif kind == "error":
                    text.append("\n".join(msg["content"]["traceback"]))
                elif kind == "execute_reply":
                    status = msg["content"]["status"]
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
            results.append({"status": status, "text": "".join(text)})
    finally:
        connection.close()
    return results


def test_a_lab_runs_end_to_end_through_the_server(server):
    base, token = server
    kernel = _post(base, "/api/kernels", token, {"name": "python3"})
    notebook = nbformat.read(ROOT / "labs" / "01_architecture.ipynb", as_version=4)
    sources = ["import os; os.chdir('labs')"] + [
        c.source for c in notebook.cells if c.cell_type == "code"]
    ws_url = base.replace("http", "ws") + f"/api/kernels/{kernel['id']}/channels"
    results = IOLoop.current().run_sync(lambda: _run_cells(ws_url, token, sources), timeout=300)
    failed = [(i, r["text"][-500:]) for i, r in enumerate(results) if r["status"] != "ok"]
    assert not failed
    printed = "".join(r["text"] for r in results)
    assert printed.count("[NOT ATTEMPTED YET]") == 6
    assert "parameters" in printed  # the lab's closing cells ran on the reference answers
