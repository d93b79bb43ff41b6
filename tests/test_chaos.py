"""The chaos benchmark's short mode: real daemons SIGKILLed at random moments, a hostile
corpus, a burst; it exits non-zero when an invariant or target fails."""

import json
import subprocess
import sys

from conftest import REPO


def test_kills_a_hostile_corpus_and_a_burst_lose_stall_and_duplicate_nothing(tmp_path):
    figures = tmp_path / "chaos.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "chaos.py"), "--short", "--json", str(figures)],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    report = json.loads(figures.read_text())
    assert report["failures"] == []
    for part in ("kills", "burst"):
        assert (report[part]["lost"], report[part]["stuck"], report[part]["duplicated"]) == (0, 0, 0)
        assert report[part]["batches"] == report[part]["files"]
    states = {row["file"]: (row["state"], row["attempts"]) for row in report["corpus"]}
    assert states["zip-bomb.npz"] == ("rejected", 1)
    assert states["sparse-16gib.npz"] == ("rejected", 0)
    assert states["fifo.npz"] == ("ignored", 0)
