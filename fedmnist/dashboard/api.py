"""The dashboard's pages and JSON API: the runs, their files, the latest global weights.

Every request reads the run files afresh (``fedmnist.dashboard.runs``); the OpenAPI page at ``/docs``
lists these routes with their models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from fedmnist.dashboard.runs import RunGone, find_runs, read_run
from fedmnist.dashboard.schemas import ErrorResponse, ModelWeights, RunDetail, RunInfo
from fedmnist.dashboard.state import dashboard_of
from fedmnist.dashboard.weights import NoWeights, latest_weights

STATIC = Path(__file__).parent / "static"
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such run, or no weights yet"}
}
router = APIRouter()


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/client", include_in_schema=False)
def client_page() -> FileResponse:
    """A federated client in the browser (TensorFlow.js), joining over /ws."""
    return FileResponse(STATIC / "client.html")


@router.get(
    "/api/runs", response_model=list[RunInfo], tags=["runs"], summary="Every run, the most recently updated first"
)
def list_runs(request: Request) -> list[RunInfo]:
    infos = []
    for run in find_runs(dashboard_of(request).base).values():
        try:
            infos.append(RunInfo.from_snapshot(read_run(run)))
        except RunGone:  # Deleted while we listed.
            continue
    return infos


@router.get(
    "/api/runs/{run_id:path}",
    response_model=RunDetail,
    responses=NOT_FOUND,
    tags=["runs"],
    summary="One run: its config and every finished round",
)
def get_run(request: Request, run_id: str) -> RunDetail:
    try:
        return RunDetail.from_snapshot(read_run(dashboard_of(request).find(run_id)))
    except RunGone:
        raise HTTPException(404, f"run {run_id!r} has no files any more") from None


@router.get(
    "/api/file",
    tags=["runs"],
    summary="One of a run's pictures or result files (RunDetail.files)",
    responses={
        **NOT_FOUND,
        200: {
            "content": {"image/png": {}, "application/json": {}, "application/octet-stream": {}},
            "description": "The file as the server wrote it",
        },
    },
)
def run_file(
    request: Request,
    run: str = Query(description="Run id"),
    name: str = Query(description="A name from RunDetail.files, e.g. plots/accuracy.png"),
):
    files = dashboard_of(request).find(run).files()  # Only the run's own files, inside the dashboard's folder.
    if name not in files:
        raise HTTPException(404, f"run {run!r} has no file {name!r}; RunDetail.files lists them")
    path = files[name]
    media = {".png": "image/png", ".json": "application/json", ".jsonl": "application/json"}.get(path.suffix)
    # Read once, then sent whole: a live run appends to its log and replaces its plots meanwhile, and a
    # file streamed from disk could then outgrow the length already sent (Chromium drops such a response).
    headers = {} if media == "image/png" else {"Content-Disposition": f'attachment; filename="{path.name}"'}
    return Response(path.read_bytes(), media_type=media or "application/octet-stream", headers=headers)


@router.get(
    "/api/model/latest",
    response_model=ModelWeights,
    tags=["model"],
    summary="The latest global weights of a run",
    responses={
        **NOT_FOUND,
        200: {
            "content": {"application/octet-stream": {}},
            "description": "ModelWeights as JSON, or the .keras file with format=keras",
        },
    },
)
async def model_latest(
    request: Request,
    run: str | None = Query(None, description="Run id; default: the current run"),
    format: Literal["json", "keras"] = Query(
        "json", description="json: arrays with shape and dtype; keras: a .keras file"
    ),
):
    dashboard = dashboard_of(request)
    found = dashboard.find(run)
    try:
        if format == "json":
            weights = await run_in_threadpool(latest_weights, found)
            return weights.document(found.id)
        path, round_number = await run_in_threadpool(dashboard.keras_files.path, found)
    except NoWeights as error:
        raise HTTPException(404, str(error)) from None
    return FileResponse(
        path, media_type="application/octet-stream", filename=f"{found.id.replace('/', '-')}-round{round_number}.keras"
    )
