"""Thin HTTP routes: the handlers live on app.state, the logic in serving_*.py."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.protocol import CompletionRequest, CompletionResponse, ModelCard, ModelList

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    """The gateway itself is up; /v1/models tells whether the inference service answers."""
    return {"status": "ok"}


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    info = await request.app.state.backend.model_info()
    return ModelList(data=[ModelCard(id=info.model, max_model_len=info.max_model_len)])


@router.post("/v1/completions", response_model=CompletionResponse, response_model_exclude_none=True)
async def create_completion(body: CompletionRequest, request: Request) -> CompletionResponse:
    return await request.app.state.completions.create_completion(body)
