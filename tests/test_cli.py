"""The command line: listing recipes, and user errors.

Every user error must print exactly one stderr line starting ``weightlab: error:``, exit
with code 2, show no traceback and leave no run directory behind. Most cases call
``weightlab.cli.main`` in-process (an uncaught exception would fail the test just as a
traceback would); a few run the real ``python -m weightlab`` process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMOKE_ARGS

from weightlab.cli import main
from weightlab.recipes.sparsity.lottery_ticket import LotteryTicket
from weightlab.runs import load_tensors

SMOKE = SMOKE_ARGS


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _assert_one_line_error(rc: int, stderr: str, *needles: str) -> str:
    assert rc == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("weightlab: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# -- weightlab recipes ----------------------------------------------------------------


def test_recipes_lists_lottery_ticket_by_family_with_row_paper_and_claim(run_cli):
    res = run_cli("recipes")
    assert res.rc == 0, res.stderr
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("lottery-ticket "))
    assert "sparsity:" in lines[:first]
    assert "[#16]" in lines[first]
    assert LotteryTicket.paper in lines[first]
    assert "Frankle & Carbin" in lines[first]
    assert lines[first + 1].strip() == f"claim: {LotteryTicket.claim}"


def test_recipes_family_filter(cli):
    from weightlab.recipes import all_recipes

    rc, out, err = cli("recipes", "--family", "sparsity")
    assert rc == 0 and err == ""
    assert out.splitlines()[0] == "sparsity:"
    names = {c.name for c in all_recipes().values() if c.family == "sparsity"}
    for n in names:
        assert f"  {n} " in out
    others = {c.name for c in all_recipes().values() if c.family != "sparsity"}
    assert not any(f"  {n} " in out for n in others)
    rc, out, err = cli("recipes", "--family", "quant")
    assert rc == 0 and out.splitlines()[0] == "quant:"


def test_recipes_unknown_family(cli):
    rc, out, err = cli("recipes", "--family", "pruning")
    _assert_one_line_error(rc, err, "unknown family 'pruning'", "sparsity", "adapters")
    assert out == ""


# -- option errors (in-process) -------------------------------------------------------

OPTION_ERRORS = [
    pytest.param(
        ["run", "no-such-recipe"],
        ["unknown recipe", "no-such-recipe", "lottery-ticket"],
        id="unknown-recipe",
    ),
    pytest.param(
        [*SMOKE, "--data", "nope"], ["--data nope", "unknown task", "mnist1d"], id="unknown-task"
    ),
    pytest.param(
        [*SMOKE, "--rewind-step", "5000"],
        ["--rewind-step 5000", "past the end", "0..116"],
        id="rewind-step-past-the-end",
    ),
    pytest.param(
        [*SMOKE, "--warmup-steps", "117"], ["warm-up of 117 steps", "--warmup-steps"], id="warmup"
    ),
    pytest.param([*SMOKE, "--schedule", "linear"], ["--schedule", "cosine"], id="schedule"),
    pytest.param(["recipes", "--family", "x"], ["unknown family"], id="unknown-family"),
    pytest.param([*SMOKE, "--no-such-flag", "3"], ["--no-such-flag"], id="unknown-option"),
    pytest.param([*SMOKE, "--epochs", "abc"], ["--epochs", "int", "'abc'"], id="non-numeric-int"),
    pytest.param([*SMOKE, "--rate", "fast"], ["--rate", "float", "'fast'"], id="non-numeric-float"),
    pytest.param([*SMOKE, "--rate", "1"], ["--rate", "< 1"], id="rate-1"),
    pytest.param([*SMOKE, "--rate", "0"], ["--rate", "> 0"], id="rate-0"),
    pytest.param(
        [*SMOKE, "--target-density", "1"], ["--target-density", "< 1"], id="target-density-1"
    ),
    pytest.param([*SMOKE, "--seeds", "0"], ["--seeds", ">= 1"], id="seeds-0"),
    pytest.param([*SMOKE, "--seeds", "-1"], ["--seeds", ">= 1"], id="seeds-negative"),
    pytest.param([*SMOKE, "--output-rate", "1.5"], ["--output-rate", "< 1"], id="output-rate-1.5"),
    pytest.param([*SMOKE, "--lr", "0"], ["--lr", "> 0"], id="lr-0"),
    pytest.param([*SMOKE, "--lr", "nan"], ["--lr", "finite"], id="lr-nan"),
    pytest.param([*SMOKE, "--lr", "inf"], ["--lr", "finite"], id="lr-inf"),
    pytest.param([*SMOKE, "--hidden", "0,5"], ["--hidden", "positive", "0,5"], id="hidden-0"),
    pytest.param([*SMOKE, "--hidden", "abc"], ["--hidden", "integers", "abc"], id="hidden-abc"),
    pytest.param([*SMOKE, "--engine", "warp"], ["--engine", "population"], id="unknown-engine"),
    pytest.param(["run"], ["missing recipe name"], id="run-without-recipe"),
    pytest.param(["frobnicate"], ["frobnicate"], id="unknown-command"),
    pytest.param(["report"], ["run_dir"], id="report-without-dir"),
]


@pytest.mark.parametrize("args,needles", OPTION_ERRORS)
def test_user_error_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args, needles):
    rc, out, err = cli(*args)
    _assert_one_line_error(rc, err, *needles)
    assert list(tmp_path.iterdir()) == [], "a failed command must leave no run directory"


def test_error_found_once_the_run_started_leaves_no_directory(cli, tmp_path):
    # the batch size is checked against the data only when training starts
    rc, _, err = cli(*SMOKE, "--batch-size", "5000", "--out", tmp_path / "big")
    _assert_one_line_error(rc, err, "batch size 5000")
    assert not (tmp_path / "big").exists()
    # the corrected command then runs in the same directory
    rc, _, err = cli(*SMOKE, "--batch-size", "50", "--out", tmp_path / "big")
    assert rc == 0, err
    assert (tmp_path / "big" / "summary.json").exists()


def test_task_the_recipe_does_not_support(cli, tmp_path):
    """A registered task the recipe does not declare is refused, naming the ones it takes."""
    rc, _, err = cli(*SMOKE, "--data", "teacher_linear", "--out", tmp_path / "r")
    _assert_one_line_error(rc, err, "--data teacher_linear", "does not support", "mnist1d")
    assert list(tmp_path.iterdir()) == []


def _npz(path: Path, regression: bool) -> Path:
    g = np.random.default_rng(0)
    x = g.normal(size=(300, 8)).astype(np.float32)
    y = x[:, :3].sum(1, keepdims=True) if regression else (x[:, 0] > 0).astype(np.int64)
    np.savez(path, x=x, y=y)
    return path


def test_user_npz_classification_data_runs(cli, tmp_path):
    data = _npz(tmp_path / "mine.npz", regression=False)
    rc, out, err = cli(*SMOKE, "--data", data, "--batch-size", "30", "--out", tmp_path / "r")
    assert rc == 0, err
    t = load_tensors(tmp_path / "r" / "units" / "round-00.safetensors")
    assert tuple(t["ticket.0.final.layers.0.weight"].shape) == (64, 8)
    assert tuple(t["ticket.0.final.layers.2.weight"].shape) == (2, 32)


def test_user_npz_of_the_wrong_kind_is_refused(cli, tmp_path):
    data = _npz(tmp_path / "reg.npz", regression=True)
    rc, _, err = cli(*SMOKE, "--data", data, "--out", tmp_path / "r")
    _assert_one_line_error(rc, err, "regression task", "needs classification data")
    assert not (tmp_path / "r").exists()


def test_failed_run_keeps_a_pre_existing_empty_out(cli, tmp_path, monkeypatch):
    """An error found once the run started removes only what this process created."""
    from weightlab.errors import ConfigError

    def fail(*a, **k):
        raise ConfigError("something the user can fix")

    monkeypatch.setattr(LotteryTicket, "run", fail)
    out = tmp_path / "mine"
    out.mkdir()
    rc, _, err = cli(*SMOKE, "--out", out)
    _assert_one_line_error(rc, err, "something the user can fix")
    assert out.is_dir() and list(out.iterdir()) == []
    rc, _, err = cli(*SMOKE, "--out", tmp_path / "new")
    assert rc == 2 and not (tmp_path / "new").exists()


def test_run_prints_diverged_count_last(cli, tmp_path):
    rc, out, err = cli(*SMOKE, "--out", tmp_path / "r")
    assert rc == 0, err
    assert out.splitlines()[-1] == "Diverged members: 0 of 14"
    assert "Diverged members: 0 of 14" in (tmp_path / "r" / "report.md").read_text()
    assert "Diverged members: 0 of 14" in (tmp_path / "r" / "report.html").read_text()


def test_error_with_explicit_out_creates_no_directory(cli, tmp_path):
    rc, _, err = cli(*SMOKE, "--rate", "1", "--out", tmp_path / "newrun")
    _assert_one_line_error(rc, err, "--rate")
    assert not (tmp_path / "newrun").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(cli, tmp_path):
    rc, _, err = cli(*SMOKE, "--device", "cuda")
    _assert_one_line_error(rc, err, "--device cuda", "--device cpu")
    assert list(tmp_path.iterdir()) == []


def test_unknown_option_in_a_real_process(run_cli, tmp_path):
    res = run_cli(*SMOKE, "--rate", "1", "--out", "somewhere")
    _assert_one_line_error(res.rc, res.stderr, "--rate")
    assert res.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_run_help_lists_config_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:  # argparse's --help exits 0
        main(["run", "lottery-ticket", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--target-density", "--engine", "--hidden", "--seeds", "--smoke", "--out"):
        assert flag in out
    assert "[default: 0.05]" in out
    # the tasks --data takes (argparse may wrap the description)
    assert "mnist1d, digits, iris, wine, breast_cancer" in " ".join(out.split())
    assert list(tmp_path.iterdir()) == []


# -- weightlab report errors ----------------------------------------------------------


def test_report_on_missing_dir(cli, tmp_path):
    rc, _, err = cli("report", tmp_path / "nope")
    _assert_one_line_error(rc, err, "does not exist", str(tmp_path / "nope"))
    assert not (tmp_path / "nope").exists()


def test_report_on_dir_without_summary(cli, copy_run):
    run = copy_run()
    (run / "summary.json").unlink()
    (run / "report.md").unlink()
    rc, _, err = cli("report", run)
    _assert_one_line_error(rc, err, "summary.json", "missing")
    assert not (run / "report.md").exists()


@pytest.mark.parametrize(
    "content",
    [b"", b'{"recipe": "lottery-ticket", "rows": [', b"\x00\xff not json"],
    ids=["empty", "truncated", "binary"],
)
def test_report_on_corrupt_summary(cli, copy_run, content):
    run = copy_run()
    (run / "summary.json").write_bytes(content)
    before = (run / "report.html").read_bytes()
    rc, _, err = cli("report", run)
    _assert_one_line_error(rc, err, "summary.json", "corrupt")
    assert (run / "report.html").read_bytes() == before


@pytest.mark.parametrize(
    "measurements",
    [{"title": "t"}, [{"title": "t", "header": ["a"], "rows": [[1.5]]}]],
    ids=["not-a-list", "number-cell"],
)
def test_report_on_malformed_measurements(cli, copy_run, measurements):
    run = copy_run()
    timing = json.loads((run / "timing.json").read_text())
    assert timing["measurements"] == []  # lottery-ticket measures nothing machine-dependent
    timing["measurements"] = measurements
    (run / "timing.json").write_text(json.dumps(timing))
    rc, _, err = cli("report", run)
    _assert_one_line_error(rc, err, "timing.json", "malformed measurements")


def test_report_on_summary_of_wrong_shape(cli, copy_run):
    run = copy_run()
    summary = json.loads((run / "summary.json").read_text())
    del summary["rows"]
    (run / "summary.json").write_text(json.dumps(summary))
    rc, _, err = cli("report", run)
    _assert_one_line_error(rc, err, "summary.json", "re-run")


@pytest.mark.parametrize(
    "edit,problem",
    [
        (lambda s: s["claims"][0].pop("verdict"), "claims[0] has no 'verdict'"),
        (lambda s: s["claims"][1].update(verdict="maybe"), "verdict 'maybe'"),
        (lambda s: s["claims"][2].update(evidence=[1]), "'evidence'] should be an object"),
        (lambda s: s.update(claims={"a": 1}), "'claims'] should be a list"),
        (lambda s: s["claims"].append("held"), "claims[3] is a string, not an object"),
    ],
    ids=["no-verdict", "bad-verdict", "evidence-list", "claims-dict", "claim-string"],
)
def test_report_on_malformed_claims(cli, copy_run, edit, problem):
    run = copy_run()
    summary = json.loads((run / "summary.json").read_text())
    edit(summary)
    (run / "summary.json").write_text(json.dumps(summary))
    rc, _, err = cli("report", run)
    _assert_one_line_error(rc, err, str(run / "summary.json"), problem, "re-run")


@pytest.mark.parametrize("content", ["[]", '{"recipe": "lottery-ticket"}', '"text"'])
def test_config_json_of_the_wrong_shape(cli, copy_run, content):
    run = copy_run()
    (run / "config.json").write_text(content)
    rc, _, err = cli("report", run)
    _assert_one_line_error(rc, err, str(run / "config.json"), "malformed")
    rc, _, err = cli(*SMOKE, "--out", run)
    _assert_one_line_error(rc, err, str(run / "config.json"), "malformed", "--out")


# -- run-directory errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "name,content",
    [
        ("round-00.json", b'{"key": "round-00", "metr'),
        ("round-00.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{bad"),
    ],
    ids=["unit-json", "unit-safetensors"],
)
def test_corrupt_unit_file_on_resume(cli, copy_run, name, content):
    run = copy_run()
    (run / "summary.json").unlink()
    (run / "units" / name).write_bytes(content)
    rc, _, err = cli(*SMOKE, "--out", run)
    line = _assert_one_line_error(rc, err, str(run / "units" / name), "delete", "re-run")
    assert "RunFileError" not in line or "corrupt" in line
    assert not (run / "summary.json").exists()


def test_following_the_corrupt_unit_advice_recovers_the_run(run_cli, copy_run, smoke_run):
    """The message for a corrupt tensor file names the files to delete; doing exactly
    that and re-running finishes the run with the same numbers as before."""
    run = copy_run()
    (run / "summary.json").unlink()
    (run / "units" / "round-00.safetensors").write_bytes(b"garbage")
    res = run_cli(*SMOKE, "--out", run)
    line = _assert_one_line_error(res.rc, res.stderr, "round-00.safetensors")
    # delete every file the message tells us to delete
    for p in sorted((run / "units").iterdir()):
        if str(p) in line:
            p.unlink()
    assert not (run / "units" / "round-00.json").exists(), line
    res = run_cli(*SMOKE, "--out", run)
    assert res.rc == 0, res.stderr
    assert (run / "summary.json").read_bytes() == (smoke_run / "summary.json").read_bytes()


def test_out_pointing_at_non_run_directory(cli, tmp_path):
    other = tmp_path / "mystuff"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    rc, _, err = cli(*SMOKE, "--out", other)
    _assert_one_line_error(rc, err, str(other), "not a weightlab run directory", "--out")
    assert _tree(other) == {"notes.txt": b"mine"}


def test_out_pointing_at_run_of_another_config(cli, copy_run):
    run = copy_run()
    before = _tree(run)
    rc, _, err = cli(*SMOKE, "--seeds", "3", "--out", run)
    _assert_one_line_error(rc, err, str(run), "another config", "--out")
    assert _tree(run) == before


def test_out_pointing_at_a_file(cli, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, _, err = cli(*SMOKE, "--out", f)
    _assert_one_line_error(rc, err, str(f))
    assert f.read_text() == "x"


def test_empty_existing_out_dir_is_accepted(tmp_path, monkeypatch):
    """An empty directory is a fine --out (e.g. made by mktemp); checked via RunDir only."""
    from weightlab.recipes.runner import make_config
    from weightlab.runs import RunDir

    d = tmp_path / "empty"
    d.mkdir()
    RunDir(d, "lottery-ticket", make_config("lottery-ticket", smoke=True)).open()
    assert (d / "config.json").exists()
    shutil.rmtree(d)


def test_diverged_line_names_at_most_six_on_the_terminal_and_all_in_the_report():
    from weightlab.report.render import diverged_line

    s = {"members": 20, "diverged_members": [f"m{i}" for i in range(10)]}
    assert (
        diverged_line(s, limit=6)
        == "Diverged members: 10 of 20 (m0, m1, m2, m3, m4, m5 and 4 more)"
    )
    assert (
        diverged_line(s) == "Diverged members: 10 of 20 (" + ", ".join(s["diverged_members"]) + ")"
    )
    assert (
        diverged_line({"members": 3, "diverged_members": []}, limit=6) == "Diverged members: 0 of 3"
    )
