"""Thin HTTP routes: the handlers live on app.state, the logic in serving_*.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gateway.protocol import CompletionRequest, CompletionResponse, ModelCard, ModelList

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """200 while the gateway is up; details say whether inference answers and what its
    capture pipeline holds (records waiting in the spool when storage is slow or down)."""
    return {"status": "ok", "inference": await request.app.state.backend.status()}


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    info = await request.app.state.backend.model_info()
    return ModelList(data=[ModelCard(id=info.model, max_model_len=info.max_model_len)])


@router.post("/v1/completions", response_model=CompletionResponse, response_model_exclude_none=True)
async def create_completion(body: CompletionRequest, request: Request) -> CompletionResponse:
    return await request.app.state.completions.create_completion(body)
