"""What mypy says about code that schedules: the typing promises of the public API, checked by mypy itself."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent

SCHEDULING = """\
from fastapi_tasks import TasksScheduler


def send(address: str, *, subject: str) -> None: ...


async def fetch(url: str) -> bytes:
    return b""


def schedule_everything(tasks: TasksScheduler) -> None:
    tasks.schedule(send, "a@b.c", subject="Hi")
    tasks.task(name="mail").schedule(send, "a@b.c", subject="Hi")
    tasks.after_route.task(shield=True).schedule(fetch, "https://x")
    reveal_type(tasks.after_response.task(name="fetch").schedule(fetch, "https://x"))
    tasks.schedule(send, 42, subject="Hi")
    tasks.task(name="mail").schedule(send, 42, subject="Hi")
    tasks.after_route.task(name="mail").schedule(send, "a@b.c")
    tasks.after_response.task(shield=True).schedule(fetch, "https://x", retries=3)
"""


def mypy_says(tmp_path: Path, source: str) -> list[tuple[int, str]]:
    """`(line, what)` for each error mypy --strict reports on `source` (`what` is its code) and each revealed type."""
    module = tmp_path / "scheduling.py"
    module.write_text(textwrap.dedent(source), encoding="utf-8")
    # The project's own cache: after a `mypy --strict` run, this check takes a fraction of a second.
    stdout, stderr, _ = mypy_api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(ROOT / ".mypy_cache"), str(module)]
    )
    assert not stderr, stderr
    said = []
    for line, kind, message in re.findall(r"^[^\n]*scheduling\.py:(\d+): (error|note): (.*)$", stdout, re.M):
        if kind == "error":
            said.append((int(line), message.rpartition("  [")[2].rstrip("]")))
        elif message.startswith("Revealed type is "):
            said.append((int(line), message))
    return said


def test_a_configured_definition_checks_arguments_as_schedule_does(tmp_path: Path) -> None:
    # `task(...)` returns a TaskDefinition[..., Any]; its schedule() binds the signature of the function it
    # is given, as the scheduler's schedule() does. (Whole messages differ between mypy versions: the
    # lines and the error codes do not.)
    said = mypy_says(tmp_path, SCHEDULING)

    assert (15, 'Revealed type is "fastapi_tasks.task.Task[[url: str], bytes]"') in said
    assert sorted({line for line, _ in said}) == [15, 16, 17, 18, 19]
    errors = {line: {what for where, what in said if where == line} for line in (16, 17, 18, 19)}
    assert errors[16] == errors[17]  # the same mistake, the same verdict, with or without task(...)
    assert errors[16] <= {"arg-type", "call-overload"}
    assert errors[18] <= {"arg-type", "call-overload", "call-arg"}
    assert errors[19] <= {"arg-type", "call-overload", "call-arg"}
