"""Participant credentials over real HTTP: issued once, stored hashed, required on every
participant call and on a rejoin; a running session's participants cannot be redeclared."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from fedsilo.client.keys import KeyPair
from fedsilo.server.auth import hash_token
from fedsilo.wire import PARTICIPANT_HEADER


def test_the_first_join_returns_a_credential_stored_only_as_a_hash(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=2)
    silo = silos(sid, "silo-a")
    response = silo.join()
    assert response.status_code == 201
    joined = response.json()
    assert joined["credential"].startswith("fs_") and joined["rejoined"] is False
    assert joined["public_key"] == silo.key.public_text
    record = thread_server.app_state.store.get_participant(joined["id"])
    assert record.credential_hash == hash_token(joined["credential"])
    assert joined["credential"] not in (record.credential_hash, record.public_key)
    listed = api.get(f"/sessions/{sid}/participants").json()
    assert [(p["client_name"], p["public_key"]) for p in listed] == [
        ("silo-a", silo.key.public_text)
    ]
    assert all("credential" not in p for p in listed)


def test_a_silo_cannot_read_or_answer_another_silos_tasks(
    api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=2, payload_size=2)
    a, b = silos(sid, "silo-a"), silos(sid, "silo-b")
    a.join(), b.join()
    task_id, arrays, _ = helpers.task_of(b.next())
    b_tasks = f"/sessions/{sid}/participants/{b.id}/tasks"
    as_a = {PARTICIPANT_HEADER: a.credential}
    forbidden = (
        f"The participant credential is missing or does not belong to participant {b.id}; "
        f"send the credential its join returned in the {PARTICIPANT_HEADER} header."
    )
    for headers in (as_a, {}):
        read = a.http.get(f"{b_tasks}/next", params={"wait": 0}, headers=headers)
        assert (read.status_code, read.json()["detail"]) == (403, forbidden)
        posted = a.http.post(f"{b_tasks}/{task_id}/reply", content=b"x", headers=headers)
        assert (posted.status_code, posted.json()["detail"]) == (403, forbidden)
    # b's task is still awaited and b can answer it
    assert b.reply(task_id, arrays, {"num_examples": 3}).status_code == 200
    unknown = a.http.get(f"/sessions/{sid}/participants/feedfacefeedface/tasks/next", headers=as_a)
    assert unknown.status_code == 404


def test_a_rejoin_needs_the_participants_credential_and_keeps_its_id(
    api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=3)  # stays pending: two of three join
    first = silos(sid, "silo-a")
    joined = first.join().json()
    again = silos(sid, "silo-a")  # a restarted client process: same name, same key
    again.key = first.key

    missing = again.join()
    assert missing.status_code == 403
    assert missing.json()["detail"] == (
        f"Client name 'silo-a' already joined session {sid}; a rejoin must present that "
        f"participant's credential in the {PARTICIPANT_HEADER} header."
    )
    wrong = again.join(credential="fs_not-the-credential")
    assert wrong.status_code == 403
    assert wrong.json()["detail"] == (
        f"The credential presented does not belong to client 'silo-a' of session {sid}."
    )
    other = silos(sid, "silo-b")
    other.join()
    stolen = again.join(credential=other.credential)  # another participant's credential
    assert stolen.status_code == 403

    right = again.join(credential=joined["credential"])
    assert right.status_code == 201
    assert right.json()["id"] == joined["id"]
    assert right.json()["rejoined"] is True
    assert right.json()["credential"] is None  # shown once, on the first join
    # before the session runs, a rejoin may still redeclare its data
    redeclared = again.join(
        credential=joined["credential"],
        dataset={"train_rows": 9, "test_rows": 0, "columns": [{"name": "a", "dtype": "f8"}]},
    )
    assert redeclared.json()["dataset"]["train_rows"] == 9


def test_a_running_session_keeps_each_participants_declared_dataset_and_key(
    api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=1, payload_size=2)
    silo = silos(sid, "silo-a")
    silo.join()
    helpers.task_of(silo.next())  # the session runs once its only client joined
    assert api.get(f"/sessions/{sid}").json()["status"] == "running"

    grown = {"train_rows": 300, "test_rows": 0, "columns": [{"name": "a", "dtype": "float64"}]}
    changed = silo.join(credential=silo.credential, dataset=grown)
    assert changed.status_code == 409
    assert changed.json()["detail"] == (
        f"Cannot rejoin session {sid} as 'silo-a' with changes while it is running: "
        "dataset.train_rows (3 -> 300) changed."
    )
    new_key = silo.join(credential=silo.credential, public_key=KeyPair.generate().public_text)
    assert new_key.status_code == 409
    assert new_key.json()["detail"].endswith("public_key changed.")

    same = silo.join(credential=silo.credential)
    assert same.status_code == 201 and same.json()["rejoined"] is True
    # a newcomer cannot join a running session at all
    late = silos(sid, "silo-late").join()
    assert late.status_code == 409


def test_the_workflow_sees_each_participants_public_key(
    api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    def workflow(ctx: Any) -> None:
        probe.seen["participants"] = ctx.wait_for_clients(2)

    probe.workflow = workflow
    sid = helpers.create_session(api, package="probe", clients=2)
    a, b = silos(sid, "silo-a"), silos(sid, "silo-b")
    a.join(), b.join()
    assert probe.done.wait(10)
    seen = {p.client_name: p.public_key for p in probe.seen["participants"]}
    assert seen == {"silo-a": a.key.public_bytes, "silo-b": b.key.public_bytes}
    assert base64.urlsafe_b64encode(seen["silo-a"]).rstrip(b"=").decode() == a.key.public_text


def test_a_join_without_a_public_key_is_refused(
    api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=1)
    silo = silos(sid, "keyless")
    body = silo.join_body()
    del body["public_key"]
    response = api.post(f"/sessions/{sid}/participants", json=body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("body.public_key: Field required")
