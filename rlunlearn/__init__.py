"""rlunlearn: make a language model forget chosen data while keeping the rest of what it knows.

Data and models (`rlunlearn.data`, `rlunlearn.models`), evaluation (`rlunlearn.evaluation`), the end-to-end pipeline
(`rlunlearn.pipeline`), its options (`rlunlearn.arguments`) and the command line (`rlunlearn.cli`). The methods are TRL
trainers in `rlunlearn.trainers`, the rewards plain callables in `rlunlearn.rewards`.
"""

import logging

# On import, bitsandbytes tries to fetch an optimised CPU kernel from the hub and logs a warning when it cannot; offline
# that always happens, and its built-in kernel is used instead, so the warning only alarms. So does the note of the
# `kernels` library, which fetches it, that offline it skips the kernel's publisher check.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
logging.getLogger("kernels._internals.hf_hub").addFilter(
    lambda record: (
        "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'" not in record.getMessage()
    )
)
# DeepSpeed, where installed, warns at every start on a machine without a GPU that it falls back to the CPU, which is
# what such a machine does. (A filter, not a level: DeepSpeed sets its logger's level when it loads.)
logging.getLogger("DeepSpeed").addFilter(lambda record: "Setting accelerator to CPU" not in record.getMessage())

__version__ = "0.1.0"
