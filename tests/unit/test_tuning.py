"""The CLI's garbage-collector settings."""

from __future__ import annotations

import gc
import subprocess
import sys

from podium.tuning import GEN0_THRESHOLD, tune_gc


def test_tune_gc_freezes_start_up_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GEN0_THRESHOLD, 20, 100)
        assert gc.get_freeze_count() > 1000  # the modules imported so far, at least
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_importing_podium_leaves_the_collector_alone() -> None:
    code = ("import gc, podium, podium.engine, podium.cli.app;"
            " print(gc.get_threshold(), gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(700, 10, 10) 0"  # CPython's defaults, untouched
