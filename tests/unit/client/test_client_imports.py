"""A client for a package that does not train with torch never imports it (issue 9, item 10)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A whole echo / eda client run (session, data, join, one task, the end) in a fresh
# interpreter against a scripted endpoint; prints which heavy modules it imported.
_SCRIPT = r"""
import json, sys
from pathlib import Path
import httpx, numpy as np, pandas as pd
from fedsilo.client.runtime import ClientRuntime
from fedsilo.http import ApiClient
from fedsilo.wire import OCTET_STREAM, TASK_ID_HEADER, TaskPayload, encode_frame

package, folder = sys.argv[1], Path(sys.argv[2])
sid, now = "0123456789", "2025-01-01T00:00:00+00:00"
table = folder / "table.csv"
pd.DataFrame({"x1": np.arange(40.0), "y": np.arange(40.0) % 2}).to_csv(table, index=False)
eda = package == "eda"
session = {
    "id": sid, "name": "u", "description": "", "kind": "eda" if eda else "hfl",
    "package_name": package, "min_num_clients": 1, "num_rounds": 1,
    "model_config": {"epsilon": None} if eda else {},
    "data_config": {"d": []} if eda else {"columns": ["x1"]},
    "status": "running", "round": 0, "created_at": now, "updated_at": now,
}
tasks = [] if eda else [("t1", TaskPayload(kind="echo", round=1))]

def serve(request):
    path = request.url.path
    if path.endswith(f"/sessions/{sid}"):
        return httpx.Response(200, json=session)
    if path.endswith("/participants"):
        body = json.loads(request.content)
        joined = {"id": "p1", "session_id": sid, "joined_at": now, "credential": "c", **body}
        return httpx.Response(201, json=joined)
    if tasks:
        tid, payload = tasks.pop()
        frame = encode_frame({"x": np.ones(3, np.float32)}, payload)
        return httpx.Response(
            200, content=frame, headers={TASK_ID_HEADER: tid, "content-type": OCTET_STREAM}
        )
    return httpx.Response(410, json={"detail": "over", "status": "completed"})

api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(serve))
options = {"state_dir": folder / "state", "on_event": lambda line: None}
if eda:
    client = ClientRuntime.for_dataset(api, sid, str(table), "d", **options)
else:
    client = ClientRuntime(api, sid, "c1", str(table), None, 8, **options)
status = client.run()
print(status, ",".join(m for m in ("torch", "opacus") if m in sys.modules))
"""


@pytest.mark.parametrize("package", ["echo", "eda"])
def test_a_non_torch_client_never_imports_torch(package: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, package, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == ["completed"], out.stdout + out.stderr
