"""Recomputes every metric of a `bioinstruct eval run` from its predictions files with the
reference tools, and compares them with its report.json.

- pubmedqa and choice tasks: scikit-learn's accuracy_score and f1_score(average="macro"), as
  PubMedQA's evaluation.py computes them;
- ncbi_disease: entities from seqeval's get_entities (conlleval's rules, seqeval's default
  mode) over gold_tags and pred_tags, micro precision/recall/F1, the mentions that matched no
  tokens (`unmatched`) counted as false positives; seqeval's own f1_score is checked too where
  no mention went unmatched;
- mts_dialog and rouge_l tasks: rouge-score's RougeScorer(["rouge1", "rouge2", "rougeL"],
  use_stemmer=False), mean F-measure;
- groups: the mean of their tasks' primary metrics.

Usage: check_eval.py DIR [TOLERANCE]   (default 1e-6). Exits 1 on any difference.
"""
import json
import os
import sys

from rouge_score import rouge_scorer
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics.sequence_labeling import get_entities
from sklearn.metrics import accuracy_score, f1_score

out_dir = sys.argv[1]
tol = float(sys.argv[2]) if len(sys.argv) > 2 else 1e-6
report = json.load(open(os.path.join(out_dir, "report.json")))
labels = [m["label"] for m in report["models"]]
scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def prf(tp, n_pred, n_gold):
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def recompute(rows, want):
    got = {}
    if "acc" in want:
        ref = [r["reference"] for r in rows]
        pred = [r["prediction"] for r in rows]
        got["acc"] = accuracy_score(ref, pred)
        got["macro_f1"] = f1_score(ref, pred, average="macro", zero_division=0)
        if "acc_norm" in want:
            got["acc_norm"] = accuracy_score(ref, [r["prediction_norm"] for r in rows])
    elif "gold_tags" in rows[0]:
        tp = n_pred = n_gold = 0
        for r in rows:
            gold = set(get_entities(r["gold_tags"]))
            pred = set(get_entities(r["pred_tags"]))
            tp += len(gold & pred)
            n_pred += len(pred) + len(r["unmatched"])
            n_gold += len(gold)
        got["precision"], got["recall"], got["f1"] = prf(tp, n_pred, n_gold)
        if not any(r["unmatched"] for r in rows):
            f = seqeval_f1([r["gold_tags"] for r in rows], [r["pred_tags"] for r in rows], zero_division=0)
            if abs(f - got["f1"]) > tol:
                print(f"  seqeval f1_score {f} differs from the entity count's {got['f1']}")
                got["f1"] = f
    elif "rougeL" in want:
        sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
        for r in rows:
            s = scorer.score(r["reference"], r["prediction"])
            for k in sums:
                sums[k] += s[k].fmeasure
        got.update({k: v / len(rows) for k, v in sums.items()})
        scores = [r["judge"]["score"] or 1.0 for r in rows if "judge" in r]
        if scores:
            got["judge"] = sum(scores) / len(scores)
    elif "exact_match" in want:
        norm = lambda s: " ".join(s.split()).lower()
        got["exact_match"] = sum(norm(r["prediction"]) == norm(r["reference"]) for r in rows) / len(rows)
    else:  # json_list_f1
        tp = n_pred = n_gold = 0
        norm = lambda s: " ".join(s.split()).lower()
        for r in rows:
            gold = {norm(x) for x in r["reference"]}
            pred = {norm(x) for x in r["prediction"]}
            tp, n_pred, n_gold = tp + len(gold & pred), n_pred + len(pred), n_gold + len(gold)
        got["precision"], got["recall"], got["f1"] = prf(tp, n_pred, n_gold)
    return got


failures = checked = 0
primary = {}
for name, task in sorted(report["tasks"].items()):
    for label in labels:
        path = os.path.join(out_dir, "predictions", name, label.replace("/", "__") + ".jsonl")
        rows = [json.loads(line) for line in open(path)]
        want = task["models"][label]
        if len(rows) != task["n"]:
            print(f"FAIL {name}/{label}: {len(rows)} predictions, report says n = {task['n']}")
            failures += 1
        got = recompute(rows, want)
        primary[(name, label)] = got.get(task["primary"])
        for metric, value in sorted(want.items()):
            checked += 1
            ok = metric in got and abs(got[metric] - value) <= tol
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name:14} {label:28} {metric:10} report {value:.9f} reference {got.get(metric, float('nan')):.9f}")
for group, g in sorted(report["groups"].items()):
    for label in labels:
        mean = sum(primary[(t, label)] for t in g["tasks"]) / len(g["tasks"])
        value = g["models"][label]["score"]
        checked += 1
        ok = abs(mean - value) <= tol
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} group {group:8} {label:28} score      report {value:.9f} reference {mean:.9f}")
print(f"{checked - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
