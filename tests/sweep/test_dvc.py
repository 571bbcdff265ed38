"""DVC's command line as the sweep drives it, against a recording fake (tests/stages runs the real one)."""

from __future__ import annotations

import pytest

from sweep import dvc
from tests.sweep.fakes import FakeDvc
from tost.errors import TostError


def test_enqueue_skips_pending_and_clears_stale_names():
    a, b, c = "a-run", "b-run", "c-run"
    fake = FakeDvc([{a: "Running", b: "Failed"}])
    pending = dvc.enqueue(fake, {a: [], b: ["-S", "seed=1"], c: []}, existing={c})
    assert pending == [a, b, c]
    runs = [call for call in fake.calls if call[:2] == ["exp", "run"]]
    assert [call[call.index("-n") + 1] for call in runs] == [b, c]  # a is already running
    assert runs[0][-2:] == ["-S", "seed=1"]
    assert ["queue", "remove", b] in fake.calls
    assert ["exp", "remove", c] in fake.calls


def test_wait_polls_until_nothing_is_pending():
    fake = FakeDvc(
        [
            {"a": "Queued", "b": "Running"},
            {"a": "Running", "b": "Success"},
            {"a": "Failed", "b": "Success"},
        ]
    )
    slept = []
    assert dvc.wait(fake, ["a", "b"], poll_s=1, sleep=slept.append) == {"a": "Failed", "b": "Success"}
    assert len(slept) == 2


def test_wait_takes_a_task_missing_from_the_queue_twice_as_finished():
    fake = FakeDvc([{"a": "Running"}, {}, {"a": "Running"}, {}, {"b": "Queued"}])
    assert dvc.wait(fake, ["a"], poll_s=1, sleep=lambda _: None) == {"a": "Success"}
    # running, missing once (not yet finished), running again, then missing twice in a row: finished
    assert len([c for c in fake.calls if c[:2] == ["queue", "status"]]) == 5


def test_waiting_experiments_with_no_worker_up_get_workers_again(caplog):
    # a worker that exited early: queued work and no worker, twice in a row -> one restart
    fake = FakeDvc(
        [{"a": "Success", "b": "Queued"}, {"a": "Success", "b": "Queued"}, {"a": "Success", "b": "Queued"},
         {"a": "Success", "b": "Running"}, {"a": "Success", "b": "Success"}],
        workers=[0, 0, 0, 1, 1],
    )  # fmt: skip
    restarts = []
    final = dvc.wait(fake, ["a", "b"], poll_s=1, sleep=lambda _: None, restart=lambda: restarts.append(1))
    assert final == {"a": "Success", "b": "Success"} and restarts == [1]
    assert "no DVC queue worker is up and 1 experiment(s) wait; starting workers again" in caplog.text


def test_workers_still_starting_are_not_restarted_and_endless_exits_are_one_error():
    starting = FakeDvc([{"a": "Queued"}, {"a": "Running"}, {"a": "Success"}], workers=[0, 1])
    restarts = []
    dvc.wait(starting, ["a"], poll_s=1, sleep=lambda _: None, restart=lambda: restarts.append(1))
    assert restarts == []  # no worker on one poll only: they were still starting
    gone = FakeDvc([{"a": "Queued"}], workers=[0])
    with pytest.raises(TostError, match=r"^table: 1 experiment\(s\) queued but DVC's queue workers keep"):
        dvc.wait(gone, ["a"], poll_s=1, sleep=lambda _: None, restart=lambda: restarts.append(1))
    assert len(restarts) == dvc.MAX_RESTARTS


def test_old_commits_are_opt_in():
    calls = []
    dvc.experiments(lambda args: calls.append(list(args)) or "[]")
    dvc.experiments(lambda args: calls.append(list(args)) or "[]", all_commits=True)
    assert "-A" not in calls[0] and "-A" in calls[1]


def test_a_failed_queue_status_is_read_again_and_only_repeated_failures_end_the_sweep(monkeypatch):
    monkeypatch.setattr(dvc.time, "sleep", lambda _: None)
    table = "Task  Name  Created  Status\nabc1234  cell-a  06:28 PM  Running\n"
    outcomes = [TostError("dvc queue status ... failed: Having any troubles?"), table]

    def flaky(args):
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    assert dvc.queue_status(flaky) == {"cell-a": "Running"}
    calls = []

    def broken(args):
        calls.append(args)
        raise TostError("dvc queue status ... failed: Having any troubles?")

    with pytest.raises(TostError, match="Having any troubles"):
        dvc.queue_status(broken)
    assert len(calls) == dvc.STATUS_TRIES
