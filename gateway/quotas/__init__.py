"""Per-project quotas: settings, the counting service and its middleware."""

from gateway.quotas.config import ProjectQuota, QuotaLimits, QuotaSettings
from gateway.quotas.middleware import QuotaMiddleware
from gateway.quotas.service import (
    Admission,
    Counters,
    MemoryCounters,
    QuotaService,
    Refusal,
    SharedCounters,
    StorageMeter,
)

__all__ = [
    "Admission",
    "Counters",
    "MemoryCounters",
    "ProjectQuota",
    "QuotaLimits",
    "QuotaMiddleware",
    "QuotaService",
    "QuotaSettings",
    "Refusal",
    "SharedCounters",
    "StorageMeter",
]
