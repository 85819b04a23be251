"""bioinstruct's axolotl plugin (engine/bioinstruct_axolotl.py in a run folder).

Named in the run's axolotl.yaml (`plugins: [bioinstruct_axolotl.BioinstructPlugin]`): it adds
the callback of bioinstruct_callback.py to axolotl's Trainer, which writes status.json and
metrics.jsonl, stops every process at the same step when `bioinstruct runs stop` asks, and
saves final/ at the end, and it counts the tokens each step trains on.
"""
from axolotl.integrations.base import BasePlugin

import bioinstruct_callback as bc


class BioinstructPlugin(BasePlugin):
    def add_callbacks_post_trainer(self, cfg, trainer):
        step = trainer.training_step

        def counting_step(model, inputs, *args, **kwargs):
            bc.count_tokens(inputs)
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = counting_step
        return [bc.Bioinstruct(finish_on_train_end=True)]
