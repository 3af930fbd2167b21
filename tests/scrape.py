"""Reading a Prometheus scrape in tests: sample values by name and labels."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    samples: tuple[Sample, ...]

    def matching(self, name: str, **labels: str) -> list[Sample]:
        """Samples called ``name`` whose labels include ``labels`` (others may differ)."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(key) == value for key, value in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum over the matching samples; 0 when there is none (a counter not moved yet)."""
        return sum(s.value for s in self.matching(name, **labels))

    def has(self, name: str, **labels: str) -> bool:
        return bool(self.matching(name, **labels))

    def label_values(self, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if label in s.labels}


def parse(text: str) -> Scrape:
    return Scrape(
        tuple(
            Sample(sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        )
    )


async def scrape(client: httpx.AsyncClient, path: str = "/metrics") -> Scrape:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version="), response.headers
    return parse(response.text)
