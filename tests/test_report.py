"""fathom report: one self-contained HTML page of a run and its evaluations (no network, every picture
inline), for people who will not read JSON; and, where a browser is installed, the page as it renders."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import pytest
from helpers import hang_guard, small_run_config, write_config

from fathom.cli import main


@pytest.fixture(scope="module")
def run_and_eval(tmp_path_factory, local_model_dir, synthetic_corpus):
    """A finished tiny run of two phases and an eval folder with QA answers, one right and one wrong."""
    tmp = tmp_path_factory.mktemp("report")
    cfg = small_run_config(local_model_dir, [synthetic_corpus], tmp / "my-run", total_tokens=2048)
    cfg["train"]["schedule"] = [
        {"name": "Phase_1a_Short", "max_seq_length": 64, "token_fraction": 0.5},
        {"name": "Phase_1b_Long", "max_seq_length": 128, "token_fraction": 0.5},
    ]
    assert main(["train", "--config", str(write_config(tmp / "run.yaml", cfg))]) == 0
    items = [
        {"question": "Who is the <master>?", "reference": "M. Petrov", "answer": "Master: M. Petrov", "contains": True,
         "length": 448, "depth": "40-60%", "group": "like"},
        {"question": "What cargo?", "reference": "grain", "answer": "coal", "contains": False, "length": 960,
         "depth": 0.1, "group": "like"},
    ]  # fmt: skip
    qa = {"items": items, "contains_by_length": {"448": 1.0, "960": 0.0}, "n_by_length": {"448": 1, "960": 1}}
    before = {"items": [item | {"answer": "no idea", "contains": False} for item in items],
              "contains_by_length": {"448": 0.0, "960": 0.0}}  # fmt: skip
    results = {
        "base": str(local_model_dir),
        "models": [{"name": "base", "qa": before}, {"name": "final_128_model", "qa": qa}],
    }
    (tmp / "eval").mkdir()
    (tmp / "eval" / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return tmp / "my-run", tmp / "eval"


def test_a_run_writes_its_page_as_it_ends(run_and_eval):
    run, _ = run_and_eval
    page = (run / "report.html").read_text(encoding="utf-8")  # written by fathom train, refreshed at each phase
    assert "run <span class='ok'>complete</span>" in page and page.count("<td>done</td>") == 2


def test_the_phases_show_their_time_speed_and_memory_planned_and_measured(run_and_eval):
    run, _ = run_and_eval
    page = (run / "report.html").read_text(encoding="utf-8")
    rows = re.findall(r"<tr><td>(Phase_1[ab]_\w+)</td>(.*?)</tr>", page)
    assert [name for name, _ in rows] == ["Phase_1a_Short", "Phase_1b_Long"]
    for _, cells in rows:
        wall, rate, memory = re.findall(r"<td>(.*?)</td>", cells)[3:6]
        assert re.fullmatch(r"\d+s|\d+m\d\ds", wall) and float(rate.replace(",", "")) > 0, cells
        assert re.fullmatch(r"\d+\.\d / \d+\.\d GiB", memory), cells  # the planner's and the process's


def test_the_page_is_whole_self_contained_and_says_what_happened(run_and_eval, capsys):
    run, evaluation = run_and_eval
    assert main(["report", str(run), "--eval", str(evaluation)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    for section in ("What was trained", "The phases", "Loss and learning rate", "Warnings", "Using the result"):
        assert f"<h2>{section}" in page, section
    assert "Evaluation: eval" in page and "Questions and answers: base, final_128_model" in page
    assert "Phase_1a_Short" in page and "Phase_1b_Long" in page and "fell" in page
    # no network: every picture inline and decodable, no external reference of any kind
    assert not re.search(r"""(src|href)\s*=\s*['"](https?:)?//""", page) and "url(" not in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert images and page.count("<img") == len(images)
    from PIL import Image

    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    # the answers, escaped, each row carrying what the filters read
    assert "Who is the &lt;master&gt;?" in page and "<master>" not in page
    assert page.count("data-right='no,yes'") == 1 and page.count("data-right='no,no'") == 1  # side by side
    assert "data-length='448'" in page and "data-length='960'" in page
    assert "<td>final_128_model</td><td>100%, n=1</td><td>0%, n=1</td>" in page  # accuracy by context length
    assert "<td>448</td><td>40-60%</td><td>Who is the &lt;master&gt;?</td>" in page and "<td>10%</td>" in page
    assert len(page.encode()) < 3 * 2**20


def test_the_page_opens_with_what_the_questions_showed(run_and_eval, tmp_path):
    """The answer a reader looks for, under the title: each model's share with its interval, and the last
    model minus the first on the same questions, said in words (clear gain, or no clear difference)."""
    from fathom.eval.qa import compare_models

    run, evaluation = run_and_eval
    results = json.loads((evaluation / "results.json").read_text(encoding="utf-8"))
    for model, share, interval in zip(results["models"], (0.0, 0.5), ([0.0, 0.66], [0.09, 0.91]), strict=True):
        model["qa"] |= {"contains": share, "contains_interval": interval}
    results["qa_paired"] = compare_models(results["models"])
    assert [(d["model"], d["against"], d["difference"], d["n"]) for d in results["qa_paired"]] == [
        ("final_128_model", "base", 0.5, 2)
    ]
    folder = tmp_path / "eval-2"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert main(["report", str(run), "--eval", str(folder), "--out", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    top = page.split("<h2>In short</h2>", 1)[1].split("<h2>", 1)[0]
    assert "2 questions (eval-2)" in top and "<b>base</b> (untrained) 0% [0%, 66%]" in top
    assert "<b>final_128_model</b> (after Phase 1) 50% [9%, 91%]" in top
    assert "final_128_model minus base: <b>+50 [+0, +100] points</b>" in top and "no clear difference" in top
    assert page.index("In short") < page.index("What was trained")
    from fathom.reports.html import _gloss

    assert [_gloss(n) for n in ("run-b/final_32k_instruct_model", "final_300_model", "my-adapter")] == [
        " (after Phase 2)",
        " (after Phase 1)",
        "",
    ]
    assert "<td>final_128_model</td><td>base</td><td>+50.0 [+0.0, +100.0]</td>" in page  # and in the evaluation
    results["qa_paired"] = [{"model": "final_128_model", "against": "base", "difference": "lots"}]  # hand-edited
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert main(["report", str(run), "--eval", str(folder), "--out", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "<b>base</b> (untrained) 0% [0%, 66%]" in page and " minus base" not in page and "lots" not in page


def test_the_curves_sit_on_the_runs_token_axis(run_and_eval):
    """Each phase's steps where the run's token count puts them: the last at the run's total, each phase
    starting where the one before ended (tokens_seen counts the whole run, never per phase)."""
    from fathom.fsutil import read_json
    from fathom.reports.html import _phases, curve_positions

    run, _ = run_and_eval
    phases = _phases(run, read_json(run / "status.json"))
    (start_a, xs_a), (start_b, xs_b) = curve_positions(phases)
    assert start_a == 0 and start_b == xs_a[-1] < xs_b[0]
    assert xs_b[-1] == sum(p["trained_tokens"] for p in phases) == 2048


def test_a_folder_that_is_no_run_is_one_line(run_and_eval, tmp_path, capsys):
    run, _ = run_and_eval
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no fathom run" in capsys.readouterr().err
    assert main(["report", str(run), "--eval", str(tmp_path)]) == 2
    assert "--eval: " in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a browser: apt-get install chromium")
def test_the_page_renders_in_a_headless_browser(run_and_eval, tmp_path):
    """Chromium loads the page from a file with no network, runs its script, and renders a screenshot."""
    run, evaluation = run_and_eval
    assert main(["report", str(run), "--eval", str(evaluation), "--out", str(tmp_path / "page.html")]) == 0
    url = (tmp_path / "page.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "page.png"
    done = subprocess.run(
        ["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
        capture_output=True, text=True, timeout=hang_guard(),
    )  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr and "SyntaxError" not in done.stderr

    def shown(hash_part: str = "") -> str:
        dom = subprocess.run(
            ["chromium", *flags, "--dump-dom", url + hash_part], capture_output=True, text=True, timeout=hang_guard()
        )
        assert "Questions and answers: base, final_128_model" in dom.stdout, dom.stderr[-2000:]
        return re.search(r"(\d+) shown", dom.stdout).group(1)

    assert shown() == "2"  # the script ran and counted every row
    # the filters, set from the address as a shared link would: by length, by one model's answers, disagreement
    assert (shown("#length=960"), shown("#answers=1:yes"), shown("#answers=0:no"), shown("#answers=differ")) == (
        "1",
        "1",
        "2",
        "1",
    )
