"""What a scoring run says about the field, and when to tell someone.

The reference system's nightly batches ran at 15-37% UNKNOWN without anyone noticing. Each run's
summary is compared with the trailing runs: an UNKNOWN share or mean confidence that moves
beyond the configured bounds raises a drift alert (new meter models, a camera app change, a
broken model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meterid.config import MonitorConfig
from meterid.core import OK, POOR_QUALITY, UNKNOWN

SUMMARY_METRICS = ("rows", "ok", "errors", "unknown", "poor_quality", "auto_accepted",
                   "error_share", "unknown_share", "poor_quality_share", "auto_accept_share",
                   "mean_top1_conf")
# What reviewers said of the model version so far (logged when known; accuracy needs a review).
FIELD_METRICS = ("field_reviewed", "field_accuracy", "field_audited", "field_audit_bound")


def _reason(error: str) -> str:
    """Error reasons grouped by kind: 'HTTP 404 Not Found', 'read timeout after 15 s', ..."""
    return str(error).split(" (", 1)[0][:80]


def summarize(scored: pd.DataFrame) -> dict:
    """Counts and shares of a run; shares of UNKNOWN / POOR_QUALITY are of the scored rows."""
    ok = scored[scored["status"] == OK]
    n_ok = len(ok)
    errors, unknown = int((scored["status"] != OK).sum()), int((ok["label"] == UNKNOWN).sum())
    poor = int((ok["label"] == POOR_QUALITY).sum())
    accepted = (int(ok["auto_accepted"].fillna(False).astype(bool).sum())
                if "auto_accepted" in ok else 0)
    summary: dict[str, object] = {
        "rows": len(scored),
        "ok": n_ok,
        "errors": errors,
        "unknown": unknown,
        "poor_quality": poor,
        "auto_accepted": accepted,
        "mean_top1_conf": float(ok["top1_conf"].astype(float).mean()) if n_ok else float("nan"),
        "label_counts": {str(k): int(v) for k, v in ok["label"].value_counts().items()},
        "error_reasons": {str(k): int(v) for k, v in scored.loc[scored["status"] != OK, "error"]
                          .map(_reason).value_counts().items()},
    }
    summary["error_share"] = errors / len(scored) if len(scored) else 0.0
    summary["unknown_share"] = unknown / n_ok if n_ok else float("nan")
    summary["poor_quality_share"] = poor / n_ok if n_ok else float("nan")
    summary["auto_accept_share"] = accepted / n_ok if n_ok else float("nan")
    return summary


def drift_alerts(current: dict, trailing: list[dict], cfg: MonitorConfig) -> list[str]:
    """Messages for each monitored figure that left its band around the trailing runs' mean."""
    if len(trailing) < cfg.min_trailing_runs:
        return []
    alerts = []
    bounds = (("unknown_share", cfg.max_unknown_share_change, "UNKNOWN share"),
              ("mean_top1_conf", cfg.max_confidence_change, "mean top-1 confidence"))
    for key, tolerance, name in bounds:
        history = [run[key] for run in trailing if np.isfinite(run.get(key, np.nan))]
        value = current.get(key, np.nan)
        if not history or not np.isfinite(value):
            continue
        baseline = float(np.mean(history))
        if abs(value - baseline) > tolerance:
            alerts.append(f"{name} {value:.1%} vs {baseline:.1%} over the last {len(history)} "
                          f"runs (change {value - baseline:+.1%}, bound ±{tolerance:.0%})")
    return alerts
