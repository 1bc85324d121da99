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
    code = ("import gc, podium, podium.engine, podium.cli.app, podium.__main__;"
            " print(gc.get_threshold(), gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(700, 10, 10) 0"  # CPython's defaults, untouched


def test_the_command_line_tunes_the_collector_before_its_imports() -> None:
    """The entry point (``python -m podium``, the ``podium`` script) loads the CLI's
    modules with the collector off, then freezes them (tune_gc): none of them is scanned
    by the young collections the imports would otherwise trigger (~50 of them); the
    collector is on again after."""
    code = ("import gc, sys; import podium.__main__ as entry; sys.argv = ['podium', '--help']\n"
            "try: entry.main()\nexcept SystemExit: pass\n"
            "print(gc.isenabled(), gc.get_threshold(), gc.get_freeze_count() > 10_000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    last = out.stdout.strip().splitlines()[-1]
    assert last == f"True ({GEN0_THRESHOLD}, 20, 100) True", out.stdout
