"""Writes a deterministic corpus of instruction-like sentences as JSONL (for bench-dedupe.sh).

Each line is a biomedical instruction built from a seeded random choice of verb, object,
source and constraint, so lengths (8 to 30 words) and overlaps resemble generated tasks:
many pairs share words, some are near-duplicates that the 0.7 ROUGE-L filter removes.
Usage: dedupe_corpus.py N OUT.jsonl
"""
import json
import random
import sys

n, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(20231019)
verbs = ["Summarize", "List", "Extract", "Explain", "Classify", "Identify", "Describe", "Compare",
         "Rewrite", "Translate", "Evaluate", "Determine", "Assess", "Outline", "Name", "Highlight"]
objects = ["the adverse drug events", "every medication and dose", "the main findings",
           "the differential diagnosis", "the eligibility criteria", "all gene-disease relations",
           "the key symptoms", "the risk factors", "the follow-up plan", "the lab abnormalities",
           "the imaging impressions", "the treatment options", "the study population",
           "the primary outcome", "each abbreviation", "the contraindications"]
sources = ["in the discharge summary", "from the clinical trial abstract", "in the radiology report",
           "from the patient's question", "in the progress note", "from the PubMed abstract",
           "in the case description", "from the medication list", "in the pathology report",
           "from the consultation letter", "in the emergency department note", "from the dialogue"]
constraints = ["in plain language for the patient", "as a bulleted list", "in one sentence",
               "with a short justification", "as JSON with one key per item", "in under fifty words",
               "for a primary care physician", "citing the sentence it comes from", "",
               "and rate your confidence", "ordered by clinical importance", "without medical jargon"]
# Clinical-looking terms: 24 roots x 16 endings = 384, so most sentences differ in content.
roots = ["cardi", "neur", "hepat", "nephr", "gastr", "derm", "oste", "arthr", "pneum", "hemat",
         "onc", "endocrin", "immun", "angi", "my", "cyst", "encephal", "lymph", "thyr", "pancreat",
         "splen", "col", "retin", "vascul"]
endings = ["itis", "opathy", "emia", "oma", "algia", "ectomy", "ostomy", "ology", "osis", "ogram",
           "otomy", "plasty", "uria", "ectasis", "ocyte", "ogenic"]
terms = [r + e for r in roots for e in endings]
extras = ["carefully", "briefly", "if any", "when present", "for an adult", "for a child",
          "in a 65-year-old woman", "after surgery", "during pregnancy", "with kidney disease"]
with open(out, "w") as f:
    for i in range(n):
        words = [rng.choice(verbs), rng.choice(objects), rng.choice(sources), rng.choice(constraints)]
        for _ in range(rng.randint(0, 2)):
            words.insert(rng.randint(1, len(words)), rng.choice(extras))
        focus = " and ".join(rng.sample(terms, rng.randint(2, 4)))
        words.insert(rng.randint(2, len(words)), f"about {focus}")
        text = " ".join(w for w in words if w).replace("  ", " ") + "."
        f.write(json.dumps({"id": f"c-{i:05d}", "category": "other", "task": "bench",
                            "instruction": text, "input": "", "output": "-"}) + "\n")
