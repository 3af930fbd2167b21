"""The metrics folder `boxoffice up` shares with its children: emptied of an earlier run's
values, and the operator's own when they chose one."""

from __future__ import annotations

from pathlib import Path

import pytest

from booking import metrics
from booking.settings import Settings
from console.local import metrics_folder


def test_up_empties_the_data_folders_metrics_of_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    stale = tmp_path / "data" / "metrics"
    stale.mkdir(parents=True)
    (stale / "counter_123.db").write_bytes(b"old counts")
    (stale / "README").write_text("not ours")

    folder = metrics_folder(settings)

    assert folder == stale.resolve()
    assert sorted(p.name for p in folder.iterdir()) == ["README"]


def test_an_operators_folder_is_used_and_made_if_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "shared" / "prometheus"
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(chosen))
    assert metrics_folder(Settings(data_dir=tmp_path / "data")) == chosen.resolve()
    assert chosen.is_dir()
    assert not (tmp_path / "data" / "metrics").exists()
