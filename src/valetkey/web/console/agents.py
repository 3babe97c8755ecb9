"""The console's agents pages (being built)."""

from fastapi import APIRouter

router = APIRouter(prefix="/console/agents", include_in_schema=False)
