"""bioinstruct's run on axolotl (`axolotl train`), started by `accelerate launch`.

Written into a run folder by `bioinstruct train --engine axolotl` (as engine/train.py) and
started once per process by `accelerate launch`, as `axolotl train` starts its own
(`accelerate launch -m axolotl.cli.train`). It trains on engine/axolotl.yaml: the run's
records as Alpaca lines (engine/data.jsonl), its LoRA settings and schedule, output_dir the
run folder, and the plugin engine/bioinstruct_axolotl.py, whose callback keeps the run folder
bioinstruct's own (status.json, metrics.jsonl, final/; see bioinstruct_callback.py).
axolotl's checkpoint-N/ land in the run folder, and a relaunch (`bioinstruct runs resume`)
resumes from the newest (`auto_resume_from_checkpoints`).

Usage: accelerate launch [...] train.py RUN_DIR
"""
import os
import sys
import traceback

# axolotl reports usage to a remote service unless told not to; a run here stays local.
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")

import bioinstruct_callback as bc


def main():
    bc.init(sys.argv[1])
    config = os.path.join(bc.engine, "axolotl.yaml")
    # axolotl parses the command line for its own options: it gets none.
    sys.argv = sys.argv[:1]
    try:
        from axolotl.cli.train import do_cli

        do_cli(config=config)
        if bc.ended["outcome"] is None:
            raise RuntimeError("axolotl returned without training")
        state, step, total = bc.ended["outcome"]
        bc.status(state, step, total)
        if state == "stopped":
            bc.log(f"stopped at step {step}; `bioinstruct runs resume` goes on")
        else:
            bc.log(f"finished: adapter in {os.path.join(bc.run, 'final')}")
    except Exception as e:  # the run records why it failed, whole
        bc.fail(e)
        traceback.print_exc()
        sys.exit(1)


# axolotl's dataset workers start by importing this file again (multiprocessing's spawn):
# only the launched process trains.
if __name__ == "__main__":
    main()
