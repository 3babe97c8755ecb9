"""The console's audit pages (being built)."""

from fastapi import APIRouter

router = APIRouter(prefix="/console/audit", include_in_schema=False)
