"""What the two writers of a model folder share: `train` (imgsim.runs.training) and `index` (imgsim.runs.indexing).

Kept apart from both so that indexing, which only encodes, does not import the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from imgsim.inputs.collection import FileInfo, Skipped

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    pass


@dataclass
class RunReport:
    """What a training or indexing run did, for the CLI and the dashboard to show."""

    version: str | None
    images: int
    skipped: Skipped = field(default_factory=Skipped)
    added: int = 0
    removed: int = 0
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)

    def summary(self) -> str:
        if self.version is None:
            return f"no changes: {self.images} images already indexed; {self.skipped.summary()}"
        parts = [f"version {self.version}: {self.images} images in {self.seconds:.0f} s"]
        if self.added or self.removed:
            parts.append(f"{self.added} added, {self.removed} removed")
        parts.append(self.skipped.summary())
        return "; ".join(parts)


def skipped_records(files: list[FileInfo], skipped: Skipped) -> list[dict]:
    """Unreadable files with their size and mtime, so `index` retries them only once they change."""
    by_path = {f.path: f for f in files}
    return [{"path": p, "size": by_path[p].size, "mtime_ns": by_path[p].mtime_ns, "reason": reason}
            for p, reason in skipped.reasons.items() if p in by_path]
