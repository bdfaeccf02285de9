"""The benchmark's presets (data, base model, fine-tuning recipe, each method's unlearning hyperparameters and tuning
grid), the demo's settings, and the precisions `bench memory` compares.

Plain settings, importing nothing heavy: the command line's help and option checks read them before torch loads.
"""

from __future__ import annotations

from rlunlearn.trainers import METHODS

from .data.draws import REPORTED, TOFU_BENCHMARK_AUTHORS, VALIDATION

# Presets: the data, the base model, the fine-tuning recipe and each method's unlearning hyperparameters.
#
# cpu: TOFU authors on a small Llama pretrained here (the offline base, see rlunlearn/pretrain.py), forget sets drawn
# in forget01's shape (2 authors) beside 18 retain authors. Hyperparameters are chosen by `rlunlearn bench tune` on the
# validation draws (forget authors 180-187) with TUNING_RULE, and reported on the reported draws (188-199): no reported
# figure comes from an author anything was tuned on.
PRESETS = {
    "cpu": {
        "data": {
            "data": "tofu",
            "forget_split": "forget10",
            "retain_authors": list(TOFU_BENCHMARK_AUTHORS.retain),
            # Fine-tuning replays the real-authors and world-facts QA the base learned in pretraining: without it the
            # target's model utility falls from 0.86 to 0.03 (docs/benchmarks.md).
            "train_background": True,
        },
        "authors": TOFU_BENCHMARK_AUTHORS,
        "base": {"model_preset": "small", "pretrain": {"num_train_epochs": 8.0, "learning_rate": 1e-3}},
        # From the base as from a real checkpoint, 10 epochs at a constant 5e-4 (forget ROUGE-L 0.89, model utility 0.86
        # on validation authors 180-181; docs/benchmarks.md).
        "finetune": {
            "learning_rate": 5e-4,
            "num_train_epochs": 10.0,
            "lr_scheduler_type": "constant",
            "warmup_steps": 0.0,
        },
        # Chosen by `rlunlearn bench tune --draws 2 --methods npo simnpo graddiff flat idkdpo` (validation authors
        # 181+184 and 182+185; docs/benchmarks.md): graddiff, npo, simnpo, idkdpo and flat; ga and llmu by the same
        # with `--methods ga llmu`; reveal_release by the same with `--methods reveal_release` (it kept 5e-4); wga, satimp,
        # undial, ceu, pdu and rmu by the same with `--methods wga satimp undial ceu pdu rmu`; dareu (PPO) by the same
        # with `--methods dareu`; dareu-grpo by the same with `--methods dareu-grpo`.
        "unlearning": {
            "ga": {"learning_rate": 1e-4, "num_train_epochs": 5},
            "graddiff": {"learning_rate": 1.5e-4, "num_train_epochs": 5},
            "npo": {"learning_rate": 6e-4, "num_train_epochs": 5},
            "simnpo": {"learning_rate": 1e-3, "num_train_epochs": 5},
            "idkdpo": {"learning_rate": 1e-3, "num_train_epochs": 5},
            "llmu": {"learning_rate": 3e-4, "num_train_epochs": 5},
            # Tuned with the KL divergence (FLAT's default is total variation).
            "flat": {"learning_rate": 1e-4, "num_train_epochs": 5, "divergence": "kl"},
            # 40 prompts x 4 answers an epoch; short answers keep the CPU rollouts affordable. PPO (the paper's) takes 4
            # optimizer steps on each rollout batch; the GRPO row is for comparison.
            "dareu": {
                "algorithm": "ppo",
                "learning_rate": 1e-4,
                "num_train_epochs": 4,
                "num_generations": 4,
                "max_completion_length": 48,
                "logging_steps": 5,
            },
            "dareu-grpo": {
                "method": "dareu",
                "algorithm": "grpo",
                "learning_rate": 5e-4,
                "num_train_epochs": 4,
                "num_generations": 4,
                "max_completion_length": 48,
                "logging_steps": 5,
            },
            "wga": {"learning_rate": 6e-4, "num_train_epochs": 5},
            "satimp": {"learning_rate": 1e-3, "num_train_epochs": 5},
            "undial": {"learning_rate": 1e-4, "num_train_epochs": 5},
            "ceu": {"learning_rate": 3e-5, "num_train_epochs": 5},
            "pdu": {
                "learning_rate": 2e-4,
                "num_train_epochs": 5,
                "dual_warmup_epochs": 2,
                "retain_loss_tolerance": 0.5,
            },
            # The middle of the 4 layers (updating 0-2); c about twice the norm of its outputs (about 17 on the target).
            "rmu": {
                "learning_rate": 1e-3,
                "num_train_epochs": 5,
                "rmu_layer": 2,
                "steering_coeff": 40.0,
                "alpha": 100.0,
            },
            # Named targets only: the forget set is what the model reveals.
            "reveal_release": {
                "learning_rate": 5e-4,
                "retain_module": True,
                "num_train_epochs": 5,
                "num_rounds": 3,
                "reveal_steps": 16,
                "reveal_generations": 8,
                "max_completion_length": 48,
            },
        },
        # The learning rates `bench tune` tries for each row of `unlearning` (each for the row's epochs): first three
        # points, a factor of about 3 apart, around the rates that moved each family on the from-scratch preset
        # (gradient ascent and FLAT lower, the preference and NPO family higher); then, where forget quality rose only
        # next to the rate where utility collapsed, a point or two between (GradDiff 1.5e-4 and 2e-4, FLAT 1.5e-4, NPO
        # 8e-4, IdkDPO 2e-3). A wider grid costs its share of the CPU budget.
        "grid": {
            "ga": [3e-5, 1e-4, 3e-4],
            # LLMU 6e-4 and SimNPO 2e-3, 3e-3: TOFU had chosen their grids' highest rates (3e-4, 1e-3); tuned again,
            # both keep them (the new points collapse).
            "llmu": [3e-5, 1e-4, 3e-4, 6e-4],
            "graddiff": [3e-5, 1e-4, 1.5e-4, 2e-4, 3e-4],
            "flat": [3e-5, 1e-4, 1.5e-4, 3e-4],
            # NPO 1.5e-3 and 2e-3: on models built on one thread TOFU chose 1e-3, then its highest (the row above keeps
            # 6e-4, the first build's choice, which the stand-ins' runs used); tuned again, it keeps 1e-3 (both collapse).
            "npo": [3e-4, 6e-4, 8e-4, 1e-3, 1.5e-3, 2e-3],
            "simnpo": [3e-4, 6e-4, 1e-3, 2e-3, 3e-3],
            "idkdpo": [3e-4, 6e-4, 1e-3, 2e-3],
            # DareU (PPO) 1e-3: above 5e-4, the grid's highest, where MUSE's VerbMem and WMDP's hazard accuracy were
            # lowest with every retained answer kept; both then chose 1e-3, where their curves flatten, the harmful
            # stand-in still 2e-4. TOFU's tune, rerun with it on models built again, chose 2e-4 over 1e-4 by one draw's
            # forget quality, a question or two apart (1e-3 collapses); the row above keeps 1e-4, which the stand-ins'
            # documented runs at TOFU's rate used. 2e-3: WMDP's 1e-3 stopped 0.09 above the retain models' hazard; tuned
            # again, WMDP chooses 2e-3, at chance, and MUSE too, at the retain models' VerbMem (reported: level with
            # its control on both tasks; TOFU, where 1e-3 collapses, not tuned again with it). With seeded classifiers,
            # WMDP and MUSE keep 2e-3 (0.03 and 0.02 above the retain models, and level with the control again) and
            # the harmful stand-in (2e-4 before) chooses 5e-4, the first rate at a harmful rate of 0.
            "dareu": [1e-4, 2e-4, 5e-4, 1e-3, 2e-3],
            # DareU (GRPO) 1e-3: TOFU had chosen 5e-4, its highest; tuned again, it keeps 5e-4 (1e-3 collapses).
            "dareu-grpo": [1e-4, 2e-4, 5e-4, 1e-3],
            # Reveal-and-Release 2e-3: on models built on one thread TOFU chose 1e-3, then its highest; tuned again, it
            # keeps 1e-3 (2e-3 collapses).
            "reveal_release": [2e-4, 5e-4, 1e-3, 2e-3],
            # The field's other baselines: first three points around GA's rates (higher for SatImp, whose weight
            # p^5·(1 − p) shrinks the step, and RMU, which updates three down projections alone), then one or two
            # between or beyond where forget quality rose next to a collapse (WGA 6e-4, SatImp 2e-3, PDU 2e-4 and
            # 5e-4), below where every rate lost utility (UNDIAL and CE-U 3e-5), above where nothing moved (RMU).
            "wga": [1e-4, 3e-4, 6e-4, 1e-3],
            "satimp": [3e-4, 1e-3, 2e-3, 3e-3],
            "undial": [3e-5, 1e-4, 3e-4, 1e-3],
            "ceu": [3e-5, 1e-4, 3e-4, 1e-3],
            "pdu": [1e-4, 2e-4, 3e-4, 5e-4, 1e-3],
            # RMU 4e-2, 5e-2 and 1e-1: MUSE and WMDP had chosen 3e-2, the grid's highest, short of the retain models;
            # tuned again, WMDP chooses 4e-2 (5e-2 and 1e-1 collapse), MUSE keeps 3e-2 (4e-2 and up collapse); TOFU,
            # where 3e-2 collapses, not tuned again with them.
            "rmu": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 4e-2, 5e-2, 1e-1],
        },
        # 40 forget examples: small batches give enough steps.
        "unlearning_common": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "warmup_steps": 0.0},
        "probes": {"relearning_learning_rate": 5e-4},
    },
    # TOFU's standard setting on a pretrained chat model (--base_model, fine-tuned here with TOFU's recipe, or
    # --target_model and --retain_model already fine-tuned, e.g. open-unlearning's tofu_Llama-3.2-1B-Instruct_full and
    # _retain90): forget10, 20 authors forgotten and 180 kept, one draw (the published split), every method at its
    # paper's defaults (the baselines at open-unlearning's TOFU recipe: 1e-5, 10 epochs, batch 8 x 4; FLAT at its
    # official TOFU configuration: 1e-5, 5 epochs, batch 16 x 4; DareU with PPO, its paper's algorithm, and with GRPO in
    # a second row), the probes at theirs (relearning at 1e-5).
    "gpu": {
        # open-unlearning's system prompt (its Llama-3 models also leave out the template's date lines).
        "data": {
            "data": "tofu",
            "forget_split": "forget10",
            "prompt_style": "chat",
            "system_prompt": "You are a helpful assistant.",
        },
        "finetune": {"learning_rate": 1e-5, "num_train_epochs": 5, "gradient_accumulation_steps": 4},
        "unlearning": {
            **{method: {} for method in METHODS},
            "dareu": {"algorithm": "ppo"},
            "dareu-grpo": {"method": "dareu", "algorithm": "grpo"},
        },
        "unlearning_common": {},
        "probes": {},
    },
}

# `rlunlearn demo`: the generated authors (20, 2 forgotten) on a base pretrained on the generator's other authors and
# its world, the cpu preset's fine-tuning recipe, and a method that visibly forgets at kept utility there.
# The demo's seed (its --seed default): of its base's pretraining, which `bench --task` reuses, and of its fine-tuning.
DEMO_SEED = 42
DEMO = {
    "pretrain": {"num_train_epochs": 3.0},
    "finetune": PRESETS["cpu"]["finetune"],
    "method": "npo",
    # NPO as measured in README's Demo section; another --method at the cpu preset's settings.
    "unlearning": {
        **{method: PRESETS["cpu"]["unlearning"][method] for method in METHODS},
        "npo": {"learning_rate": 3e-4, "num_train_epochs": 5},
    },
    "unlearning_common": PRESETS["cpu"]["unlearning_common"],
}

# `rlunlearn bench --task harmful|wmdp|muse` (cpu preset): each task's offline stand-in, one generated world a draw
# (its generator seed), fine-tuned with STANDIN_FINETUNE from the demo's base (pretrained on the generated authors'
# world, which holds none of the stand-ins' alchemy). Every method runs at its cpu-preset rate, chosen on TOFU's
# validation authors, or at the rate `bench tune --task` chose on the task's validation worlds (--validation_report).
STANDIN_TASKS = {"harmful": {"data": "harmful"}, "wmdp": {"data": "wmdp"}, "muse": {"data": "muse"}}
# The stand-ins' fine-tuning: the TOFU recipe (10 epochs at a constant 5e-4) leaves the harmful stand-in's target
# giving 3% of its recipes away; measured on harmful seed 1 from the demo's base, 40 epochs at a constant 1e-3 gave
# the target a harmful rate of 0.37 (normal ROUGE-L 0.93), 40 at 2e-3 with a linear decay after 5% warm-up 0.89 (1.0),
# the retain model 0 (1.0) in both; 3e-3 constant wrecked both models.
STANDIN_FINETUNE = {
    "learning_rate": 2e-3,
    "num_train_epochs": 40.0,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0.05,
}
STANDIN_SEEDS = {VALIDATION: (101, 102, 103, 104), REPORTED: (1, 2, 3, 4, 5)}
# DareU's attribution classifier on a stand-in, where AttributorConfig's defaults (3 epochs at 1e-4, which reach 0.955
# held-out accuracy over TOFU's 21 authors) underfit. MUSE's has 12 books of 12 passages: measured on world 1 from its
# target, 3 epochs at 1e-4 give held-out accuracy 0.12 over 13 labels (every text called `none`), 10 at 5e-4 0.58, 20
# at 1e-3 0.77 (in `bench`, with its seed: 0.62, 0.88 and 0.69 on worlds 1-3). WMDP's and the harmful stand-in's (3
# labels each) keep the default epochs and rate, at held-out accuracy 1.0. The harmful stand-in's recipes (about 70
# tokens) are longer than DareU's 48-token rollouts, and a classifier trained on whole answers barely attributes a
# recipe cut short (the reward starts at about -0.001 on validation worlds 101 and 102), so DareU has little to learn
# from; trained also on 2 prefixes and 1 padded copy of each owned answer it attributes them (-1.0), and DareU brought
# the harmful rate of validation worlds 101 and 102 from the target's 0.94 and 0.96 to 0.03 and 0.115 (0.455 and 0.285
# without the views), every normal answer kept. On the 5 reported worlds the mean stayed at 0.12 (docs/benchmarks.md).
STANDIN_ATTRIBUTOR = {
    "muse": {"num_train_epochs": 20.0, "learning_rate": 1e-3},
    "harmful": {"prefix_views": 2, "padded_views": 1},
}

# A method whose mean model utility falls below this share of the target's has collapsed: the table says so instead of
# ranking it by its forget quality (which a destroyed model reaches trivially).
COLLAPSE_RATIO = 0.9
TUNING_RULE = (
    f"for each method, the setting with the best mean score over the validation draws (on TOFU the highest forget "
    f"quality; on a stand-in task the lowest harmful rate, hazard accuracy or VerbMem) among those whose mean utility "
    f"stays at or above {COLLAPSE_RATIO}x the target's; if none does, the one with the highest utility (the method is "
    "then reported as collapsed)"
)


# Controls: rows that `bench` runs only when --methods names them (never by default, never tuned), each at its `row`'s
# settings and tuned rate, with the options of the method's extra inputs in `extra_inputs`. DareU without its
# attribution reward keeps only the degeneracy term, 0 on fluent text: PPO's advantages are then the value head's
# errors, so what DareU's figures owe to its reward is their difference from this row's. What that difference was on
# each task, at the preset's rate and at DareU's tuned ones: docs/benchmarks.md.
CONTROLS = {"dareu-no-attribution": {"row": "dareu", "extra_inputs": {"reward_funcs": ["degeneracy"]}}}


def preset_row(row: str) -> tuple[str, dict]:
    """The row of the preset whose settings a bench row takes (a control's `row`, else itself) and the options of its
    method's extra inputs (a control's `extra_inputs`, else none: their defaults)."""
    control = CONTROLS.get(row)
    return (control["row"], control["extra_inputs"]) if control else (row, {})


def preset_method(preset: str, row: str) -> str:
    """The method a row of the preset (or a control) runs: its `method` entry (a variant such as `dareu-grpo`), else
    its name."""
    row = preset_row(row)[0]
    return PRESETS[preset]["unlearning"][row].get("method", row)


# `rlunlearn bench memory` and `bench gpu-check`: the precisions, as model-loading options (QLoRA: NF4 weights with
# double quantisation, bf16 compute, LoRA adapters in every linear layer).
MEMORY_MODES = {
    "fp32": {"dtype": "float32"},
    "bf16": {"dtype": "bfloat16"},
    "4bit-lora": {"dtype": "bfloat16", "load_in_4bit": True, "use_bnb_nested_quant": True, "use_peft": True},
}
