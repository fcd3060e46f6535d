"""Report a run: every answer file of RESULTS_DIR (one per method, `ar.jsonl` the baseline).

    python -m src.eval.report RUN_DIR [--reference DIR ...]

Writes report.md (per category: speedup over AR, tokens/s, mean accepted tokens, TTFT and its ratio
to SpS; DuoDecoding's gamma, k histogram, idle shares, pipeline bound and efficiency), speedup.png and acceptance.png.
"""
import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from src.eval.answers import AnswerFileError, load  # noqa: E402
from src.eval.cli import run_cli  # noqa: E402
from src.eval.host import describe  # noqa: E402
from src.eval.speed import compare, question_speed  # noqa: E402
from src.model.duodec.stats import TurnStats  # noqa: E402
from src.utils import ROOT  # noqa: E402


def shown(folder):
    """A run folder as the repository names it (from its root), so a committed report names no machine's paths."""
    try:
        return str(Path(folder).resolve().relative_to(ROOT))
    except ValueError:
        return str(folder)


def load_run(folder):
    runs = {p.stem: [r for r in load(p) if "skipped" not in r] for p in sorted(Path(folder).glob("*.jsonl"))}
    if "ar" not in runs:
        raise AnswerFileError(f"no ar.jsonl (the baseline) in {folder}")
    return runs


def duodec_stats(records):
    ks, gammas, v_tok = Counter(), [], []
    shares = {"target_idle_share": [], "catch_up_idle_share": [], "draft_idle_share": []}
    counts, timing, modes, switches = Counter(), {}, Counter(), 0
    for r in records:
        for st in map(TurnStats.read, r["choices"][0].get("stats", [])):
            modes.update(st.mode_rounds)
            switches += len(st.mode_switches)
            for mode, c in st.mode_costs_ms.items():  # the costs of the modes that ran, by name
                timing.setdefault(mode, []).append((c["draft_setup"], c["draft_step"]))
            ks.update({int(k): v for k, v in st.k_hist.items()})
            gammas.append(st.gamma)
            for key, xs in shares.items():
                xs.append(getattr(st, key))
            counts.update(free_rounds=st.free_rounds)
            if st.verify_ms:
                v_tok.append(st.verify_tokens)
    mean = lambda xs: statistics.fmean(xs) if xs else 0.0
    return {"gamma": Counter(gammas).most_common(1)[0][0] if gammas else None, "k_hist": dict(sorted(ks.items())),
            "target_idle": mean(shares["target_idle_share"]), "catch_up_idle": mean(shares["catch_up_idle_share"]),
            "draft_idle": mean(shares["draft_idle_share"]), "verify_tokens": mean(v_tok),
            "free_rounds": counts["free_rounds"] / max(1, len(gammas)),
            "modes": ", ".join(f"{m} {n}" for m, n in modes.most_common() if n) or "-", "switches": switches,
            "jobs": {m: (statistics.median(a for a, _ in xs), statistics.median(b for _, b in xs))
                     for m, xs in timing.items() if not m.startswith("none")}}


def job(s):
    """A draft job's timing in each mode that drafted, as its rounds measured it, or '-'."""
    return "; ".join(f"{m}: {setup:.2f} + {step:.2f}/step" for m, (setup, step) in s["jobs"].items()) or "-"


def regime_of(runs):
    """The run's cores regime, as its answers recorded it (runs made before regimes: '-')."""
    for recs in runs.values():
        for r in recs[:1]:
            return r["choices"][0].get("settings", {}).get("cores", {}).get("regime", "-")
    return "-"


def made_as(runs):
    """'cores REGIME', and the temperature where the run sampled."""
    t = next((recs[0]["choices"][0].get("settings", {}).get("temperature") for recs in runs.values() if recs), 0)
    return f"cores {regime_of(runs)}" + (f", temperature {t:g}" if t else "")


def threads_used(records):
    """The most threads each side ran on over a method's answers, as the answers recorded them."""
    most = {"target": 0, "draft": 0}
    for r in records:
        for st in r["choices"][0].get("stats", []):
            for side, n in (st.get("threads") or {}).items():
                most[side] = max(most[side], n or 0)
    return most


def pipeline(records, base_records):
    """Per question: bound = tokens per target forward x AR's time per token / the target's time per verify
    round (forward and verification, as measured in the run), and efficiency = speedup / bound.
    Returns the medians over questions of (verify ms, bound, efficiency)."""
    base = {r["question_id"]: r for r in base_records}
    v_ms, bounds, effs = [], [], []
    for r in records:
        c, b = r["choices"][0], base.get(r["question_id"])
        rounds = list(zip([st.get("verify_ms", 0.0) for st in c.get("stats", [])], c["decoding_steps"]))
        n = sum(k for ms, k in rounds if ms)
        if not b or not n or not question_speed(b):
            continue
        verify_ms = sum(ms * k for ms, k in rounds if ms) / n
        accepted = sum(c["new_tokens"]) / sum(c["decoding_steps"])
        bound = accepted * (1e3 / question_speed(b)) / verify_ms  # AR's ms per token
        v_ms.append(verify_ms)
        bounds.append(bound)
        effs.append(question_speed(r) / question_speed(b) / bound)
    med = lambda xs: statistics.median(xs) if xs else 0.0
    return med(v_ms), med(bounds), med(effs)


def by_category(records):
    """[(category, its records)] in order, then ("overall", every record)."""
    cats = {}
    for r in records:
        cats.setdefault(r["category"], []).append(r)
    return sorted(cats.items()) + [("overall", list(records))]


def duodec_costs(records, base_records):
    """Where DuoDecoding's time goes, per category and overall: tokens gained per forward (tau), tokens fed per
    forward, the verify round's ms, the target's and the draft's idle shares, and the pipeline bound and the
    efficiency against it (medians over questions, as `pipeline`)."""
    rows = []
    for cat, recs in by_category(records):
        steps = sum(sum(r["choices"][0]["decoding_steps"]) for r in recs)
        if not steps:
            continue
        s = duodec_stats(recs)
        v_ms, bound, eff = pipeline(recs, base_records)
        tau = sum(sum(r["choices"][0]["new_tokens"]) for r in recs) / steps
        rows.append((cat, len(recs), tau, s["verify_tokens"], v_ms, s["target_idle"], s["draft_idle"], bound, eff))
    return rows


def lookahead_costs(records, base_records):
    """Where Lookahead's time goes, per category and overall: tokens gained per forward (tau), tokens fed per
    forward (window and guesses) and of them guesses, ms per step (forward, verification, pool), AR's ms per token,
    and the bound tau x AR's ms per token / ms per step that the step's cost leaves (prefill excluded)."""
    base = {r["question_id"]: r for r in base_records}
    rows = []
    for cat, recs in by_category(records):
        items = [(r, base[r["question_id"]], [st for st in r["choices"][0].get("stats", []) if st.get("forwards")])
                 for r in recs if r["question_id"] in base]
        items = [x for x in items if x[2]]
        total = lambda key: sum(st[key] for _, _, stats in items for st in stats)
        forwards = total("forwards")
        if not forwards:
            continue
        tau = sum(sum(r["choices"][0]["new_tokens"]) for r, _, _ in items) / sum(
            sum(r["choices"][0]["decoding_steps"]) for r, _, _ in items)
        step_ms = total("step_s") * 1e3 / forwards
        ar_ms = statistics.median(1e3 / question_speed(b) for _, b, _ in items)
        rows.append((cat, len(items), tau, total("fed_tokens") / forwards, total("guess_tokens") / forwards, step_ms,
                     ar_ms, tau * ar_ms / step_ms))
    return rows


def overlap_ceiling(sps_records, duodec_records):
    """The most that overlapping drafting with verification can gain over SpS with the same GGUF draft:
    (gamma draft steps + a forward over gamma + 1 tokens) / the forward alone. Returns (ceiling, gamma,
    draft step ms, forward ms), or None without both runs."""
    if not sps_records or not duodec_records:
        return None
    sps, duo = sps_records[0]["choices"][0].get("settings", {}), duodec_records[0]["choices"][0].get("settings", {})
    if sps.get("draft_backend") != "llama.cpp" or "target_forward_ms" not in duo:
        return None
    gamma, t_draft = int(sps["gamma"]), float(duo["draft_step_ms"]["1"])
    ns = sorted(int(n) for n in duo["target_forward_ms"])
    t_fwd = float(np.interp(gamma + 1, ns, [duo["target_forward_ms"][str(n)] for n in ns]))
    return 1 + gamma * t_draft / t_fwd, gamma, t_draft, t_fwd


def machine_of(folder):
    """The machine a run folder was measured on (machine.json, or an older summary.json's), or {}."""
    for name, key in (("machine.json", None), ("summary.json", "machine")):
        path = Path(folder) / name
        if path.exists():
            data = json.loads(path.read_text())
            return data[key] if key else data
    return {}


def reference_overall(ref, allow_partial=False):
    """({method: overall figures}, how it was made) of a reference run: from its answers, or, where only its
    report was kept (committed runs keep answers only where the README's tables link them), its summary.json."""
    if (Path(ref) / "ar.jsonl").exists():
        runs = load_run(ref)
        return ({m: compare(recs, runs["ar"], allow_partial, (f"{ref}/{m}.jsonl", f"{ref}/ar.jsonl"))["overall"]
                 for m, recs in runs.items() if m != "ar"}, made_as(runs))
    path = Path(ref) / "summary.json"
    if not path.exists():
        raise AnswerFileError(f"reference {ref} has neither ar.jsonl nor summary.json")
    summary = json.loads(path.read_text())
    return {m: res["overall"] for m, res in summary["results"].items()}, summary.get("made_as", "cores -")


def beside_references(folder, results, references, allow_partial=False):
    """Markdown: this run's overall speedups next to each reference run's, with each machine."""
    refs = [(Path(ref), *reference_overall(ref, allow_partial)) for ref in references
            if Path(ref).resolve() != Path(folder).resolve()]
    if not refs:
        return []
    head = "| method | this run | " + " | ".join(str(r) for r, _, _ in refs) + " |"
    lines = ["## This run beside the reference runs", "",
             "Speedup over AR of the same run and regime (mean of per-question speeds), median per-question ratio "
             "in brackets.", "",
             f"- this run ({shown(folder)}), {made_as(load_run(folder))}: {describe(machine_of(folder))}"]
    lines += [f"- {r}, {how}: {describe(machine_of(r))}" for r, _, how in refs]
    lines += ["", head, "|---" * (2 + len(refs)) + "|"]
    cell = lambda f: f"{f['speedup']:.2f} ({f['median_ratio']:.2f})" if f else "-"
    for m in results:
        lines.append(f"| {m} | {cell(results[m]['overall'])} | " + " | ".join(cell(res.get(m)) for _, res, _ in refs)
                     + " |")
    return lines + [""]


REGIME_TEXT = {"split": "The paper's hardware stood in on one CPU: the target owns its cores, the draft owns the "
                        "others, and no method borrows the other side's.",
               "shared": "A CPU-only machine: every method may use every core, each side every core in its turn."}


def setup(runs):
    """How each run was made (from its first answer's settings); a twin is labelled as such."""
    regime = regime_of(runs)
    lines = ["## Setup", "", f"Cores: **{regime}**. " + REGIME_TEXT.get(regime, "") + " Every speedup below is over AR "
             "in this regime. Threads: the most each side ran on in any answer, as the answers recorded them.", "",
             "| method | target | draft | target threads | draft threads | device |", "|---|---|---|---|---|---|"]
    fwd_ms, twin = None, False
    for m, recs in runs.items():
        st = recs[0]["choices"][0].get("settings", {}) if recs else {}
        twin |= str(st.get("target", "")).startswith("twin:")
        fwd_ms = fwd_ms or st.get("target_forward_ms")
        used = threads_used(recs)
        lines.append(f"| {m} | {st.get('target', '-')} | {st.get('draft') or '-'} | {used['target'] or '-'} | "
                     f"{used['draft'] or '-'} | {st.get('device', '-')} |")
    lines.append("")
    if fwd_ms:
        lines += ["Target forward, ms for n new tokens (DuoDecoding's start-up probe, synchronised): " +
                  ", ".join(f"n = {n}: {ms:.2f}" for n, ms in fwd_ms.items()), ""]
    if twin:
        lines += ["Models are cost-matched twins (src/backends/twin.py): the demo pair enlarged to the named shapes, "
                  "computing the demo pair's functions. Speedups are this regime's at the demo pair's acceptance. "
                  "The twins keep the demo's 4096-token vocabulary, so the LM head is smaller than Llama-2's "
                  "32000-token one (about 2 % of a 7B forward).", ""]
    return lines


# The largest top-2 logit gap that counts as a floating-point near-tie, by the target's dtype: one rounding step
# of a logit between 32 and 64 in that type (bf16 logits lie on that grid, so 0.25 is the smallest gap above an
# exact tie there; a batched forward may round either logit the other way).
NEAR_TIE = {"float32": 1e-3, "float16": 0.05, "bfloat16": 0.25}


def first_difference(turns, ar_turns):
    """(turn, position) where an answer's tokens first differ from AR's, or None."""
    for t, (ours, theirs) in enumerate(zip(turns, ar_turns)):
        if ours != theirs:
            n = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            return t, n
    return None


def divergence(record, ar_record):
    """Where a greedy answer first differs from AR's and the target's top-2 logit gap there (AR records it per
    token): (turn, position, gap or None); None when the answers are identical."""
    at = first_difference(record["choices"][0].get("token_ids") or [], ar_record["choices"][0].get("token_ids") or [])
    if at is None:
        return None
    stats = ar_record["choices"][0].get("stats") or []
    gaps = stats[at[0]].get("top2_gap", []) if at[0] < len(stats) else []
    return at[0], at[1], gaps[at[1]] if at[1] < len(gaps) else None


def same_as_ar(runs, methods):
    """Greedy runs: how many answers are token-identical to AR's, and where each other one first differs, with
    the target's top-2 logit gap there. Lossless methods differ only at near-ties (gap below NEAR_TIE), which
    the target's batched forward rounds the other way."""
    ar = {r["question_id"]: r for r in runs["ar"]}
    greedy = all(r["choices"][0].get("settings", {}).get("temperature", 0) == 0 for recs in runs.values() for r in recs[:1])
    if not greedy or not methods:
        return []
    dtype = next(iter(runs["ar"]), {}).get("choices", [{}])[0].get("settings", {}).get("dtype", "float32")
    bound = NEAR_TIE.get(dtype, NEAR_TIE["float32"])
    lines = ["## Greedy output against AR", "", f"A difference counts as a near-tie where AR's top-2 logit gap at the "
             f"first differing token is at most {bound} ({dtype} target).", "",
             "| method | token-identical to AR's | differ at a near-tie | differ otherwise |", "|---|---|---|---|"]
    details = []
    for m in methods:
        paired = [r for r in runs[m] if r["question_id"] in ar and r.get("choices")]
        found = [(r["question_id"], divergence(r, ar[r["question_id"]])) for r in paired]
        differ = [(q, d) for q, d in found if d is not None]
        ties = [(q, d) for q, d in differ if d[2] is not None and d[2] <= bound]
        lines.append(f"| {m} | {len(paired) - len(differ)} / {len(paired)} | {len(ties)} | {len(differ) - len(ties)} |")
        details += [f"- {m}, question {q}, turn {t + 1}, token {n}: top-2 gap "
                    f"{'unknown' if gap is None else f'{gap:.4f}'}" + (" (near-tie)" if (q, (t, n, gap)) in ties else "")
                    for q, (t, n, gap) in differ]
    if details:
        lines += ["", "First differences:", ""] + details
    return lines + [""]


def write_report(folder, references=(), allow_partial=False):
    folder = Path(folder)
    runs = load_run(folder)
    methods = [m for m in runs if m != "ar"]
    results = {m: compare(runs[m], runs["ar"], allow_partial, (str(folder / f"{m}.jsonl"), str(folder / "ar.jsonl")))
               for m in methods}
    cats = list(next(iter(results.values())).keys()) if results else []
    lines = [f"# Report: {shown(folder)}", "", f"Machine: {describe(machine_of(folder))}", ""]
    lines += setup(runs)
    lines += beside_references(folder, results, references, allow_partial)
    sps = results.get("sps", {})
    for cat in cats:
        lines += [f"## {cat}", "", "| method | speedup | median per-question ratio | over SpS | tokens/s | mean accepted "
                  "| TTFT ms | TTFT / SpS |", "|---|---|---|---|---|---|---|---|"]
        ar_tps = results[methods[0]][cat]["base_tokens_per_s"]
        lines.append(f"| ar | 1.00 | 1.00 | - | {ar_tps:.1f} | 1.00 | - | - |")
        for m in methods:
            f, s_cat = results[m][cat], sps.get(cat, {})
            over = f"{f['speedup'] / s_cat['speedup']:.2f}" if s_cat.get("speedup") else "-"
            ttft = f"{f['ttft_s'] / s_cat['ttft_s']:.2f}" if s_cat.get("ttft_s") else "-"
            lines.append(f"| {m} | {f['speedup']:.2f} | {f['median_ratio']:.2f} | {over} | {f['tokens_per_s']:.1f} | "
                         f"{f['mean_accepted']:.2f} | {f['ttft_s'] * 1e3:.1f} | {ttft} |")
        lines.append("")
    lines += same_as_ar(runs, methods)
    duo = [m for m in methods if m.startswith("duodec")]
    if duo:
        lines += ["## DuoDecoding", "",
                  "Pipeline bound of a question: tokens per target forward × AR's time per token ÷ the target's "
                  "time per verify round (forward and verification, measured in the run). Efficiency: the "
                  "question's speedup ÷ its bound. Both are medians over questions. Target idle: the share of "
                  "the time the target waits for the draft (of which catch-up: waiting for drafts after a rejection "
                  "or an empty round). Per answer: rounds that verified looked-up tokens. Draft job: its fixed ms + ms per step in each mode that drafted, as timed in "
                  "that mode's rounds (medians over answers). Rounds by mode: how many rounds ran overlapped, sequential "
                  "or with no draft, and how often the choice switched (the answers' stats say why).", "",
                  "| run | gamma | k histogram (rounds) | target idle (catch-up) | draft idle | "
                  "lookup rounds | tokens fed per forward | verify ms | draft job | bound | efficiency | "
                  "rounds by mode (switches) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in duo:
            s = duodec_stats(runs[m])
            v_ms, bound, eff = pipeline(runs[m], runs["ar"])
            lines.append(f"| {m} | {s['gamma']} | {s['k_hist']} | {s['target_idle']:.0%} ({s['catch_up_idle']:.0%}) | "
                         f"{s['draft_idle']:.0%} | {s['free_rounds']:.1f} | "
                         f"{s['verify_tokens']:.1f} | {v_ms:.2f} | {job(s)} | {bound:.2f} | {eff:.2f} | "
                         f"{s['modes']} ({s['switches']}) |")
        lines.append("")
        main = "duodec" if "duodec" in duo else duo[0]
        lines += [f"Where {main}'s time goes, per category (the same definitions; tau: tokens gained per forward):", "",
                  "| category | questions | tau | tokens fed per forward | verify ms | target idle | draft idle | "
                  "bound | efficiency |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {cat} | {n} | {tau:.2f} | {fed:.1f} | {v_ms:.2f} | {t_idle:.0%} | {d_idle:.0%} | {bound:.2f} | "
                  f"{eff:.2f} |" for cat, n, tau, fed, v_ms, t_idle, d_idle, bound, eff
                  in duodec_costs(runs[main], runs["ar"])]
        lines.append("")
        ceiling = overlap_ceiling(runs.get("sps-gguf"), runs.get("duodec", runs[duo[0]]))
        if ceiling:
            lines += ["What overlap alone can gain over SpS with the GGUF draft at SpS's gamma (all of its drafting "
                      "hidden): "
                      f"1 + gamma · t_draft / T_target(gamma + 1) = 1 + {ceiling[1]} · {ceiling[2]:.3f} / "
                      f"{ceiling[3]:.2f} ms = {ceiling[0]:.2f} (SpS's gamma; DuoDecoding's start-up timings).", ""]
    if "lookahead" in runs:
        lines += ["## Lookahead", "",
                  "Where its time goes: tokens gained per forward (tau), tokens each forward fed (the window's and "
                  "the guesses'), ms per step (the forward, its verification and the pool), AR's ms per token (the "
                  "median over the category's questions, prefill included), and the bound tau × AR's ms per token ÷ "
                  "ms per step.", "",
                  "| category | questions | tau | tokens fed per forward | of them guesses | ms per step | "
                  "AR ms per token | bound |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {cat} | {n} | {tau:.2f} | {fed:.1f} | {guess:.1f} | {step:.1f} | {ar:.1f} | {bound:.2f} |"
                  for cat, n, tau, fed, guess, step, ar, bound in lookahead_costs(runs["lookahead"], runs["ar"])]
        lines.append("")
    lines += ["![speedup](speedup.png)", "", "![acceptance](acceptance.png)", ""]
    (folder / "report.md").write_text("\n".join(lines))
    title = plot_title(folder, runs)
    plot_speedup(results, methods, cats, folder / "speedup.png", title)
    plot_acceptance(runs, methods, folder / "acceptance.png", title=title)
    return folder / "report.md"


def plot_title(folder, runs):
    """What a plot measured: the host, the cores regime (and temperature), the split where the run used one."""
    machine = machine_of(folder)
    split = json.loads((Path(folder) / "summary.json").read_text()).get("split") \
        if (Path(folder) / "summary.json").exists() else None
    host = f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores" + \
        (f", GPU {machine['gpu']}" if machine.get("gpu", "none") != "none" else "")
    return f"{host}; {made_as(runs)}" + (f"; {split} split" if split else "")


def plot_speedup(results, methods, cats, path, title=""):
    """Bars per category with their values; DuoDecoding's bar outlined and its legend entry bold."""
    fig, ax = plt.subplots(figsize=(max(7, 0.3 * len(methods) * len(cats) + 4), 4.8))
    width = 0.8 / max(1, len(methods))
    colors = plt.get_cmap("tab20").colors
    for i, m in enumerate(methods):
        xs = [c + (i - (len(methods) - 1) / 2) * width for c in range(len(cats))]
        ours = m == "duodec"
        bars = ax.bar(xs, [results[m][c]["speedup"] for c in cats], width, label=m, color=colors[i % len(colors)],
                      edgecolor="black" if ours else None, linewidth=1.5 if ours else 0, hatch="//" if ours else None)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, rotation=90, padding=2,
                     fontweight="bold" if ours else "normal")
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--", label="AR = 1")
    ax.set_xticks(range(len(cats)), cats)
    ax.set_ylabel("speedup over AR")
    ax.margins(y=0.12)
    ax.set_title("Speedup over AR per category" + (f"\n{title}" if title else ""), fontsize=10)
    legend = ax.legend(fontsize=8, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for text in legend.get_texts():
        text.set_fontweight("bold" if text.get_text() == "duodec" else "normal")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_acceptance(runs, methods, path, cap=16, title=""):
    """Share of target forwards that gained 1, 2, ... tokens; cap or more are pooled in the last point."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = plt.get_cmap("tab20").colors
    for i, m in enumerate(methods):
        acc = [min(a, cap) for r in runs[m] for a in r["choices"][0].get("accept_lengths", [])]
        if not acc:
            continue
        counts = Counter(acc)
        xs = list(range(1, cap + 1))
        ax.plot(xs, [counts.get(x, 0) / len(acc) for x in xs], marker="o", markersize=3, label=m,
                color=colors[i % len(colors)])
    ax.set_xlabel(f"tokens gained per target forward ({cap} = {cap} or more)")
    ax.set_ylabel("share of forwards")
    ax.set_title("Accepted tokens per target forward" + (f"\n{title}" if title else ""), fontsize=10)
    ax.set_xticks(range(1, cap + 1))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


LABELS = {"hf-ar": "transformers `generate`", "hf-assisted": "transformers assisted generation",
          "hf-lookup": "transformers prompt lookup", "sps": "SpS, HF draft", "sps-gguf": "SpS, GGUF draft",
          "pld": "PLD", "rest": "REST", "duodec": "**DuoDecoding**", "duodec-paper": "DuoDecoding, the paper's preset",
          "lookahead": "Lookahead", "pearl": "PEARL", "duodec-greedy-drafts": "DuoDecoding, greedy drafts",
          "duodec-previous": "DuoDecoding, `--mode auto` (the default before the overlapped mode on split cores)",
          "duodec-no-catch-up": "DuoDecoding, the previous default (`--catch-up 0`: no catch-up after a rejection)",
          "duodec-wait-prompt": "DuoDecoding, waiting for the draft to read the prompt",
          "duodec-no-extend": "DuoDecoding, no looked-up tokens after the pending draft"}


def category_table(folder, over=("sps-gguf",)):
    """Markdown: each method's speedup over AR per category, overall with the median per-question ratio, the ratio
    over the methods in `over` (same run, same regime), and TTFT over SpS-GGUF's: the README's tables, made from a
    run folder by `python -m src.eval.report RUN --table`."""
    runs = load_run(folder)
    methods = [m for m in runs if m != "ar"]
    res = {m: compare(runs[m], runs["ar"]) for m in methods}
    cats = [c for c in next(iter(res.values())) if c != "overall"]
    over = [o for o in over if o in runs]
    ttft = lambda m: res[m]["overall"]["ttft_s"] / res["sps-gguf"]["overall"]["ttft_s"] if "sps-gguf" in res else None
    head = ["method", *cats, "overall (median)", *[f"over {o}" for o in over], "TTFT / SpS-GGUF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in sorted(methods, key=lambda m: res[m]["overall"]["speedup"]):
        o = res[m]["overall"]
        vs = [f"{compare(runs[m], runs[x])['overall']['speedup']:.2f}" if x != m else "-" for x in over]
        t = ttft(m)
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(f"{res[m][c]['speedup']:.2f}" for c in cats) +
                     f" | {o['speedup']:.2f} ({o['median_ratio']:.2f}) | " + " | ".join(vs) +
                     (" | " if vs else "") + (f"{t:.2f} |" if t else "- |"))
    ar_tps = res[methods[0]]["overall"]["base_tokens_per_s"]
    return "\n".join(lines) + f"\n\n{made_as(runs).capitalize()}; AR {ar_tps:.2f} tokens/s; {describe(machine_of(folder))}.\n"


def print_beside(report_path):
    text = Path(report_path).read_text()
    if "## This run beside" in text:
        print(text[text.index("## This run beside"):].split("\n## ", 1)[0].strip() + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir")
    ap.add_argument("--reference", nargs="*", default=[], help="earlier run folders to show beside this one")
    ap.add_argument("--allow-partial", action="store_true", help="compare however few questions are paired")
    ap.add_argument("--table", action="store_true", help="print the README's per-category table of the run, no report")
    ap.add_argument("--over", default="sps-gguf", help="with --table: the methods to give ratios over (comma-separated)")
    args = ap.parse_args(argv)
    if args.table:
        print(category_table(args.results_dir, tuple(args.over.split(","))))
        return
    path = write_report(args.results_dir, args.reference, args.allow_partial)
    print_beside(path)
    print(f"wrote {path}, {path.parent / 'speedup.png'} and {path.parent / 'acceptance.png'}")


if __name__ == "__main__":
    run_cli(main)
