"""Times Python rouge-score's ROUGE-L the way Alpaca's dedupe calls it, for bench-dedupe.sh.

Alpaca pre-tokenizes every instruction with the scorer's tokenizer, then for each candidate
calls `rouge_scorer._score_lcs(candidate_tokens, kept_tokens)` for every kept instruction.
This times that call on SAMPLE random pairs from the corpus and prints microseconds per
comparison as JSON. Usage: rouge_reference.py CORPUS.jsonl SAMPLE
"""
import json
import random
import sys
import time

from rouge_score import rouge_scorer

corpus = [json.loads(l)["instruction"] for l in open(sys.argv[1])]
sample = int(sys.argv[2])
scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
tokens = [scorer._tokenizer.tokenize(t) for t in corpus]
rng = random.Random(1)
pairs = [(rng.randrange(len(tokens)), rng.randrange(len(tokens))) for _ in range(sample)]
start = time.perf_counter()
for a, b in pairs:
    rouge_scorer._score_lcs(tokens[a], tokens[b]).fmeasure
seconds = time.perf_counter() - start
print(json.dumps({"comparisons": sample, "seconds": seconds, "us_per_comparison": seconds / sample * 1e6}))
