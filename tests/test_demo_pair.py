"""The demo pair: the trainer works end to end (in miniature), and the shipped pair is sound."""

from src.backends.draft import Draft, check_vocab
from src.backends.target import Target
from src.eval.compare import MAIN, main as compare_main
from src.eval.questions import load_questions, questions_for
from src.tools.build_rest_datastore import demo_datastore
from src.tools.train_demo_pair import is_held_out, main as train_main
from src.utils import resolve
from tests.lossless import assert_run_matches_ar


def test_miniature_training_produces_loadable_artefacts(tmp_path):
    out = tmp_path / "models"
    train_main(["--tiny", "--max-files", "60", "--vocab-size", "400", "--target-minutes", "0.08",
                "--draft-minutes", "0.08", "--out", str(out), "--prompts-out", str(tmp_path / "q.jsonl")])
    target, draft = Target(out / "demo-target"), Target(out / "demo-draft")
    gguf = Draft(out / "demo-draft.gguf", n_ctx=256)
    check_vocab(gguf, target.tokenizer)
    assert len(draft.tokenizer) == len(target.tokenizer) == 400
    qs = load_questions(tmp_path / "q.jsonl")
    assert qs and {q["category"] for q in qs} <= {"code", "code-cont"}
    assert (out / "train_info.json").exists()


def test_shipped_pair_loads_and_gguf_matches_hf_draft():
    target = Target(resolve("demo-target")[0])
    hf = Target(resolve("demo-draft")[0])
    gguf = Draft(resolve("demo-draft-gguf")[0], n_ctx=1024, n_seq=1)
    check_vocab(gguf, target.tokenizer)
    questions = questions_for("demo")
    cats = [q["category"] for q in questions]
    assert cats.count("code") >= 80 and cats.count("code-cont") >= 40
    same = total = 0
    for q in questions[::12]:
        ids = target.tokenizer(q["turns"][0])["input_ids"]
        hf.reset()
        gguf.clear()
        a = hf.forward(ids).argmax(-1).numpy()
        b = gguf.eval(ids, all_logits=True).argmax(-1)
        same += int((a == b).sum())
        total += len(ids)
    assert same / total >= 0.99


def test_every_method_is_greedy_lossless_on_the_demo_pair(tmp_path):
    """Every row of the demo's table, on the shipped pair and its first demo prompts, as `demo.sh` runs them:
    each answer identical to AR's, or different only at a logged near-tie."""
    demo_datastore()  # REST's, as demo.sh builds it on a fresh clone
    out = tmp_path / "run"
    compare_main(["--bench", "demo", "--device", "cpu", "--cores", "split", "--target-threads", "1",
                  "--draft-threads", "1", "--limit", "4", "--max-new-tokens", "32", "--warmup", "0",
                  "--methods", ",".join(MAIN), "--out", str(out)])
    assert_run_matches_ar(out, MAIN, 4, "float32")


def test_demo_prompts_come_from_held_out_files():
    import json
    from src.utils import ROOT
    rows = [json.loads(line) for line in open(ROOT / "data/demo/questions.jsonl")]
    assert all(is_held_out(r["source"]) for r in rows)
