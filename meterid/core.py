"""The product's words, shared by every layer and importing nothing: the label a photo gets
when the model is unsure, the statuses a scored row can have, how many predictions it keeps."""

from __future__ import annotations

UNKNOWN = "UNKNOWN"             # the label of a photo the open-set rule flags
POOR_QUALITY = "POOR_QUALITY"   # the label of a photo the quality gate stops
OK, ERROR = "ok", "error"       # a row's status: scored, or failed with its error
TOP_K = 3                       # predictions and confidences every scored row keeps
