"""What names a dataset and its splits: torch-free, so the registry (and the CLI's help) can use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")


@dataclass
class DataSpec:
    """What names a dataset in a run: adapter name, root folder and adapter options (recorded in config.json)."""

    name: str = "synthetic"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "root": self.root, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        return cls(name=d["name"], root=d.get("root"), options=dict(d.get("options", {})))
