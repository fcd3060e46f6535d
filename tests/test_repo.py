"""The checkout stays small enough to travel to the device, and the README's figures stay recomputable from it."""
import json
import re
import subprocess

import pytest

from src.eval.report import load_run, reference_overall
from src.eval.speed import compare
from src.utils import ROOT

TREE_LIMIT = 30 * 2**20  # docs/gpu.md: the tracked tree, the wheels and REST's datastore travel in 64 MiB


def tracked_files():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def readme_runs():
    """The run folders the README's tables link (their report.md)."""
    links = re.findall(r"\((results/[^)\s]+)/report\.md\)", (ROOT / "README.md").read_text())
    return sorted(set(links))


def test_tracked_tree_stays_under_30_mib():
    size = sum(p.stat().st_size for p in tracked_files() if p.is_file())
    assert size <= TREE_LIMIT, f"the tracked tree is {size / 2**20:.1f} MiB, over 30 MiB: drop the answer files " \
                               "of runs the README does not link (their report, table and summary stay)"


def test_answer_files_are_kept_only_where_the_readme_links_the_run():
    linked = {ROOT / r for r in readme_runs()}
    kept = {p.parent for p in tracked_files() if p.name == "ar.jsonl" and p.parts[len(ROOT.parts)] == "results"}
    assert kept <= linked, f"answers of runs the README does not link: {sorted(map(str, kept - linked))}"


@pytest.mark.parametrize("run", readme_runs())
def test_readme_runs_recompute_from_their_answers(run):
    folder = ROOT / run
    assert (folder / "ar.jsonl").exists(), f"{run}: the README links it, so its answers must stay"
    runs = load_run(folder)
    summary = json.loads((folder / "summary.json").read_text())["results"]
    assert set(summary) <= set(runs), f"{run}: summary.json names methods with no answer file"
    for method, res in summary.items():
        again = compare(runs[method], runs["ar"])["overall"]
        assert again["speedup"] == pytest.approx(res["overall"]["speedup"], rel=1e-9), (run, method)


def test_a_reference_without_answers_reads_its_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(
        {"made_as": "cores split", "results": {"duodec": {"overall": {"speedup": 2.0, "median_ratio": 1.5}}}}))
    assert reference_overall(tmp_path) == ({"duodec": {"speedup": 2.0, "median_ratio": 1.5}}, "cores split")


def test_every_plot_a_report_shows_is_kept():
    reports = [p for p in tracked_files() if p.name == "report.md" and p.parts[len(ROOT.parts)] == "results"]
    missing = [f"{p.relative_to(ROOT)}: {img}" for p in reports
               for img in re.findall(r"!\[[^]]*\]\(([^)]+)\)", p.read_text()) if not (p.parent / img).exists()]
    assert not missing, missing


def test_report_labels_name_only_compare_variants():
    from src.eval.compare import VARIANTS
    from src.eval.report import LABELS
    assert set(LABELS) <= set(VARIANTS), sorted(set(LABELS) - set(VARIANTS))
