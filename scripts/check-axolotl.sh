#!/usr/bin/env bash
# Validates an axolotl config with axolotl's own loader (axolotl.utils.config.validate_config,
# its pydantic schema), in a venv pinned by scripts/axolotl-requirements.txt and built once
# outside the checkout (scripts/py-venv.sh). Prints the validated values that bioinstruct
# sets, as one JSON object. `--install` only builds the venv.
#
# Usage: scripts/check-axolotl.sh CONFIG.yaml | --install
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/py-venv.sh"
py_venv axolotl "$here/axolotl-requirements.txt"
[ "${1:-}" = --install ] && exit 0
exec "$py" - "$1" 2>/dev/null <<'PY'
import json, sys
import yaml
from axolotl.utils.config import validate_config
from axolotl.utils.dict import DictDefault

cfg = validate_config(DictDefault(yaml.safe_load(open(sys.argv[1]))))
ds = cfg.datasets[0]
ds = ds if isinstance(ds, dict) else ds.model_dump()
keys = ["base_model", "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
        "sequence_len", "micro_batch_size", "gradient_accumulation_steps", "num_epochs",
        "learning_rate", "lr_scheduler", "warmup_steps", "train_on_inputs", "val_set_size",
        "output_dir", "seed"]
out = {k: cfg.get(k) for k in keys}
out["dataset"] = {"path": ds.get("path"), "type": ds.get("type")}
print(json.dumps(out, default=str))
PY
