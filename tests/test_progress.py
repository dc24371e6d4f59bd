"""Progress output when stderr is not a terminal: plain lines, rate-limited, no escape
codes or carriage returns (``make run > log`` must stay readable)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import cli_env

SCRIPT = textwrap.dedent(
    """
    import time
    import weightlab.progress as P

    P.LOG_INTERVAL_S = 0.2
    rounds = P.progress_bar(3, "rounds", "round", line_each_update=True)
    for r in range(3):
        rounds.set_description(f"round {r}")
        inner = P.progress_bar(1000, "train", "step", leave=False)
        inner.interval = 0.2
        t0 = time.monotonic()
        for _ in range(1000):
            inner.update(1)
            time.sleep(0.0005)
        inner.close()
        rounds.update(1)
    rounds.close()
    """
)


def _assert_plain(stderr: str) -> list[str]:
    assert "\x1b[" not in stderr and "\r" not in stderr, repr(stderr[:300])
    return stderr.splitlines()


def test_progress_lines_in_a_pipe_are_plain_and_rate_limited():
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert p.returncode == 0, p.stderr
    lines = _assert_plain(p.stderr)
    round_lines = [x for x in lines if x.startswith("round ")]
    assert [x.split(" [")[0] for x in round_lines] == [
        "round 0: 1/3 round",
        "round 1: 2/3 round",
        "round 2: 3/3 round",
    ]
    # the inner bars (~0.5 s each, throttled to one line per 0.2 s over all bars) add a
    # handful of lines, never one per step
    train_lines = [x for x in lines if x.startswith("train: ")]
    assert len(train_lines) <= 3 * 5, lines
    assert len(lines) == len(round_lines) + len(train_lines)


def test_default_interval_is_30_s_and_disabled_bars_are_none():
    import weightlab.progress as P

    assert P.LOG_INTERVAL_S == 30.0
    assert P.progress_bar(3, "x", "y", enabled=False) is None


def test_smoke_recipe_progress_when_stderr_is_not_a_terminal(tmp_path, capsys, one_thread):
    """A real run with progress on (in-process; pytest's captured stderr is not a TTY):
    one plain line per IMP round and nothing else."""
    from weightlab.recipes.runner import make_config, run_recipe

    run_recipe(
        "lottery-ticket", make_config("lottery-ticket", smoke=True), tmp_path / "r", progress=True
    )
    lines = _assert_plain(capsys.readouterr().err)
    assert [x.split(" (")[0] for x in lines] == ["round 0", "round 1", "round 2"], lines
