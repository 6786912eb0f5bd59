from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_tasks import Tasks, add_tasks
from fastapi_tasks.errors import BacklogFullError

app = FastAPI()
# At most 100 tasks pending or running: past it, schedule() raises.
add_tasks(app, max_pending=100)


@app.exception_handler(BacklogFullError)
async def backlog_full(request: Request, exc: BacklogFullError) -> JSONResponse:
    # Nothing was accepted: the client may try again in a few seconds.
    return JSONResponse(
        {"detail": "Too many reports in progress, try again later."},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def build_report(report_id: int) -> None: ...


@app.post("/reports/{report_id}")
async def request_report(report_id: int, tasks: Tasks) -> dict[str, int]:
    tasks.schedule(build_report, report_id)
    return {"accepted": report_id}
