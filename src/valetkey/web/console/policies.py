"""The console's policies pages (being built)."""

from fastapi import APIRouter

router = APIRouter(prefix="/console/policies", include_in_schema=False)
