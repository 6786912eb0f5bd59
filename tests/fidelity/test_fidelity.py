"""The differential suite: each scenario runs in production and under `RecordingScheduler(mode="run")`.

Every scenario runs under three drivers (see `_harness`): production with the lifespan, which is
the reference, and the recorder with the lifespan and with a bare client, each compared with it.
For every task the runs compare its phase, status, exception, result, effective config and what it
observed, and for every request its response; any difference fails, except the accepted ones of
`_differences.ACCEPTED_DIFFERENCES` that a scenario names. Every scenario runs on asyncio and on
trio.
"""

from __future__ import annotations

import copy
import pprint
import re
import sys
import textwrap
from pathlib import Path

import pytest
from _pytest.mark.structures import ParameterSet
from _versions import FASTAPI_VERSION, STARLETTE_VERSION

from . import (
    _scenarios_concurrency,
    _scenarios_dependencies,
    _scenarios_requests,
    _scenarios_tasks,
    _scenarios_transport,
    test_background_tasks,
)
from ._differences import ACCEPTED_DIFFERENCES
from ._harness import RECORDER_DRIVERS, Backend, Driver, Outcome, Scenario, compare, run_scenario

SCENARIOS: list[Scenario] = [
    *_scenarios_requests.SCENARIOS,
    *_scenarios_dependencies.SCENARIOS,
    *_scenarios_transport.SCENARIOS,
    *_scenarios_tasks.SCENARIOS,
    *_scenarios_concurrency.SCENARIOS,
]
BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")

KNOWN_GAPS: dict[str, str] = {}
"""Scenarios where a recorder driver disagrees with production today -> what differs.

Keys: `id`, or narrowed to one backend and/or one driver: `id[trio]`, `id[recorder-bare]`,
`id[trio-recorder-bare]`.

Each is an expected failure, strictly: when the recorder's engine is fixed the test passes, pytest
reports that as a failure, and the entry is deleted. Not to be confused with the accepted
differences, which are permanent and documented.
"""

PRODUCTION_GAPS: dict[str, str] = {}
"""Scenarios where production does not do what DESIGN.md requires today (`id` or `id[backend]`) -> what it does."""

RECORDER_ONLY = {"dependency-overrides-replaced"}
"""Gaps checked by a plain test rather than a row of the table, because only the recorder has them."""

DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "testing" / "fidelity.md"


_production_outcomes: dict[tuple[str, Backend], Outcome] = {}


async def production_outcome(scenario: Scenario, backend: Backend) -> Outcome:
    """The production outcome of `scenario`, run once per backend: both tests of a scenario read it.

    A production run that hangs costs `HANG_GUARD` seconds; running it once keeps the suite fast.
    """
    key = (scenario.id, backend)
    if key not in _production_outcomes:
        _production_outcomes[key] = await run_scenario(scenario, "production", backend)
    return copy.deepcopy(_production_outcomes[key])


def _marks(scenario: Scenario, gaps: dict[str, str], kind: str, *keys: str) -> list[pytest.MarkDecorator]:
    reason = next((gaps[key] for key in (scenario.id, *keys) if key in gaps), None)
    marks = [] if reason is None else [pytest.mark.xfail(strict=True, reason=f"{kind}: {reason}")]
    if sys.version_info < scenario.python:
        marks.append(pytest.mark.skip(reason=f"needs Python {'.'.join(map(str, scenario.python))} or later"))
    if scenario.fastapi is not None and scenario.fastapi[0] > FASTAPI_VERSION:
        version, feature = scenario.fastapi
        marks.append(pytest.mark.skip(reason=f"{feature} needs FastAPI {'.'.join(map(str, version))} or later"))
    if scenario.starlette is not None and scenario.starlette[0] > STARLETTE_VERSION:
        version, feature = scenario.starlette
        marks.append(pytest.mark.skip(reason=f"{feature} needs Starlette {'.'.join(map(str, version))} or later"))
    return marks


def _production_params(scenarios: list[Scenario], gaps: dict[str, str], kind: str) -> list[ParameterSet]:
    return [
        pytest.param(s, b, marks=_marks(s, gaps, kind, f"{s.id}[{b}]"), id=f"{s.id}[{b}]")
        for s in scenarios
        for b in s.backends
    ]


def _driver_params(scenarios: list[Scenario], gaps: dict[str, str], kind: str) -> list[ParameterSet]:
    return [
        pytest.param(
            s,
            b,
            d,
            marks=_marks(s, gaps, kind, f"{s.id}[{b}]", f"{s.id}[{d}]", f"{s.id}[{b}-{d}]"),
            id=f"{s.id}[{b}-{d}]",
        )
        for s in scenarios
        for b in s.backends
        for d in s.drivers()
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(("scenario", "anyio_backend", "driver"), _driver_params(SCENARIOS, KNOWN_GAPS, "known gap"))
async def test_drivers_agree(scenario: Scenario, anyio_backend: Backend, driver: Driver) -> None:
    production = await production_outcome(scenario, anyio_backend)
    recorder = await run_scenario(scenario, driver, anyio_backend)
    difference = compare(scenario, anyio_backend, production, recorder, driver)
    if difference is not None:
        pytest.fail(difference, pytrace=False)
    if scenario.expect_recorder is not None:
        scenario.expect_recorder(recorder)
    if driver == "recorder-bare" and scenario.expect_bare is not None:
        scenario.expect_bare(recorder)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("scenario", "anyio_backend"),
    _production_params([s for s in SCENARIOS if s.expect is not None], PRODUCTION_GAPS, "production gap"),
)
async def test_production_does_what_the_design_requires(scenario: Scenario, anyio_backend: Backend) -> None:
    assert scenario.expect is not None
    outcome = await production_outcome(scenario, anyio_backend)
    try:
        scenario.expect(outcome)
    except AssertionError as exc:
        pytest.fail(
            f"Scenario {scenario.id!r} ({anyio_backend}): production does not do what DESIGN.md requires. "
            f"{scenario.covers}\n{exc}\nProduction outcome:\n{pprint.pformat(outcome, width=110)}",
            pytrace=False,
        )


def test_the_table_is_large_and_well_formed() -> None:
    ids = [scenario.id for scenario in SCENARIOS]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids), "scenario ids must be unique"
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids), ids
    assert all(scenario.backends and set(scenario.backends) <= set(BACKENDS) for scenario in SCENARIOS)
    used = {kind for scenario in SCENARIOS for kind in (*scenario.accepted, *scenario.accepted_bare)}
    used |= {kind for scenario in test_background_tasks.SCENARIOS for kind in scenario.accepted}
    assert used == set(ACCEPTED_DIFFERENCES), "every accepted difference is shown by a scenario"
    drivers = "|".join(RECORDER_DRIVERS)
    for gaps in (KNOWN_GAPS, PRODUCTION_GAPS):
        for key in gaps:
            scenario_id = re.sub(rf"\[((asyncio|trio)(-({drivers}))?|{drivers})\]$", "", key)
            assert scenario_id in {*ids, *RECORDER_ONLY}, f"{key!r} names no scenario"
    opted_out = [scenario.id for scenario in SCENARIOS if scenario.bare_opt_out is not None]
    assert len(opted_out) <= 8, f"the bare driver is first-class: few scenarios may opt out of it, not {opted_out}"


def _docs_rows() -> dict[str, tuple[str, str]]:
    text = DOCS_PAGE.read_text(encoding="utf-8")
    section = text.split("## Accepted differences", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for match in re.finditer(r"^\| `(?P<kind>[a-z-]+)` \| (?P<what>.+?) \| (?P<reason>.+?) \|$", section, re.M):
        rows[match["kind"]] = (match["what"], match["reason"])
    return rows


def test_the_docs_show_the_accepted_differences_table() -> None:
    expected = {kind: (diff.what, diff.reason) for kind, diff in ACCEPTED_DIFFERENCES.items()}
    assert _docs_rows() == expected


# --- recorder-only -------------------------------------------------------------------------------

OVERRIDES_RESET_PROJECT = {
    "main.py": """
        from fastapi import Depends, FastAPI

        from fastapi_tasks import Tasks, add_tasks


        def get_settings() -> str:
            return "production settings"


        async def send_welcome(email: str) -> None:
            pass


        def create_app() -> FastAPI:
            app = FastAPI()
            add_tasks(app)

            @app.post("/signup")
            async def signup(email: str, tasks: Tasks, settings: str = Depends(get_settings)) -> None:
                tasks.after_response.schedule(send_welcome, email)

            return app
    """,
    "test_signup.py": """
        import pytest
        from fastapi.testclient import TestClient

        from main import create_app, get_settings, send_welcome


        @pytest.fixture
        def app():
            return create_app()


        @pytest.fixture
        def client(app):
            # As FastAPI's docs show it: this replaces the dict the recorder put its override in.
            app.dependency_overrides = {get_settings: lambda: "test settings"}
            with TestClient(app) as client:
                yield client


        def test_signup_sends_a_welcome(tasks_recorder, client):
            client.post("/signup", params={"email": "a@b.c"})
            tasks_recorder.assert_scheduled(send_welcome, "a@b.c")
    """,
    "pytest.ini": """
        [pytest]
        filterwarnings =
            error
            ignore:Using `httpx` with `starlette.testclient` is deprecated
    """,
}


@pytest.mark.xfail(
    "dependency-overrides-replaced" in KNOWN_GAPS,
    strict=True,
    reason=KNOWN_GAPS.get("dependency-overrides-replaced", ""),
)
def test_a_fixture_replacing_the_overrides_fails_the_test_clearly(pytester: pytest.Pytester) -> None:
    """Issue 11 #6: a fixture that assigns app.dependency_overrides after the recorder installed itself.

    Recorder-only, so not a row of the table: the test must fail with a message that says the override
    was replaced (naming `dependency_overrides`), not with only "(no tasks were scheduled)".
    """
    for name, text in OVERRIDES_RESET_PROJECT.items():
        pytester.path.joinpath(name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) == 0, result.stdout.str()
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) >= 1, result.stdout.str()
    # The report's lines, without the session header and the fixture's own line quoted in a traceback.
    start = next(i for i, line in enumerate(result.outlines) if re.match(r"^=+ (FAILURES|ERRORS) =+$", line))
    report = result.outlines[start:]
    explanation = [line for line in report if "{get_settings:" not in line]
    assert any("dependency_overrides" in line for line in explanation), result.stdout.str()
