"""The versioned error-mode taxonomy. Ids are stable: a mode keeps its id in every later version."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorMode:
    id: str
    name: str
    description: str


@dataclass(frozen=True)
class Taxonomy:
    version: str
    modes: tuple[ErrorMode, ...]

    def ids(self) -> dict[str, str]:
        return {m.name: m.id for m in self.modes}

    def names(self) -> list[str]:
        return [m.name for m in self.modes]


TAXONOMY_V1 = Taxonomy(
    version="v1",
    modes=(
        ErrorMode("EM-001", "hallucination", "States something false: wrong facts, numbers, entities or sources."),
        ErrorMode("EM-002", "format", "Breaks a format the prompt asked for (JSON, table, list of N items, code) or structures it badly."),
        ErrorMode("EM-003", "refusal", "Declines, fully or partly, a request it should have answered."),
        ErrorMode("EM-004", "length", "Too long or too short for what was asked, or a length outlier for its model and prompt."),
        ErrorMode("EM-999", "other", "Negative for another reason (off-topic, wrong language, unsafe, unclear): see the clusters."),
    ),
)
