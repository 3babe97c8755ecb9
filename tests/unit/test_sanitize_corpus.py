"""The sanitizer against realistic hidden-text prompt injections, as data files.

Each sample in `tests/sanitize_corpus/` has a `NAME.expect.json`: strings that must be
gone, visible strings that must survive, and exactly which kinds the header reports.
"""

import json
from pathlib import Path

import pytest

from valetkey.gateway.sanitize import sanitize

CORPUS = Path(__file__).resolve().parents[1] / "sanitize_corpus"
SAMPLES = sorted(p for p in CORPUS.iterdir() if not p.name.endswith(".expect.json"))
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}


def test_the_corpus_is_complete() -> None:
    assert len(SAMPLES) >= 12
    for sample in SAMPLES:
        assert sample.with_suffix(".expect.json").exists(), sample.name


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample(sample: Path) -> None:
    expect = json.loads(sample.with_suffix(".expect.json").read_text(encoding="utf-8"))
    result = sanitize(sample.read_text(encoding="utf-8"), CONTENT_TYPES[sample.suffix])

    leaked = [s for s in expect["must_not_contain"] if s.lower() in result.body.lower()]
    lost = [s for s in expect["must_contain"] if s not in result.body]
    assert not leaked, f"hidden content survived: {leaked}\n{result.body}"
    assert not lost, f"visible content lost: {lost}\n{result.body}"
    assert sorted(result.removed) == sorted(expect["removed_kinds"]), result.header()
    assert all(n > 0 for n in result.removed.values())
