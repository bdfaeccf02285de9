"""The benchmark's statistics and its separation of validation from reported forget authors."""

import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from rlunlearn.data import generate_authors
from rlunlearn.data.draws import FORGET_SHAPES, REPORTED, TOFU_BENCHMARK_AUTHORS, VALIDATION, author_draws
from rlunlearn.data.generator import generated_pretraining_corpus
from rlunlearn.evaluation.aggregate import mean_interval, rank_agreement

# ---- intervals over draws ---------------------------------------------------------------------------------------------


def test_mean_interval_is_students_t_interval_by_hand():
    values = [0.1, 0.3, 0.2, 0.6]
    result = mean_interval(values)
    mean = 0.3
    # Sample standard deviation: sqrt(((-.2)^2 + 0 + (-.1)^2 + .3^2) / 3) = sqrt(0.14 / 3).
    half_width = 3.182446305284263 * math.sqrt(0.14 / 3) / 2  # t(0.975, 3) * s / sqrt(4)
    assert result["n"] == 4 and result["mean"] == pytest.approx(mean)
    assert result["low"] == pytest.approx(mean - half_width) and result["high"] == pytest.approx(mean + half_width)
    # The same as scipy's own interval for a mean.
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (result["low"], result["high"]) == pytest.approx((low, high))


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        result = mean_interval(rng.normal(1.0, 2.0, size=5))
        covered += result["low"] <= 1.0 <= result["high"]
    assert 0.93 < covered / 2000 < 0.97


def test_mean_interval_is_cut_to_the_range_and_skips_missing_values():
    result = mean_interval([0.0, 0.0, 0.9, None, float("nan")], bounds=(0.0, 1.0))
    assert result["n"] == 3 and result["values"] == [0.0, 0.0, 0.9]
    assert result["low"] == 0.0 and result["high"] <= 1.0
    one = mean_interval([0.4])
    assert one["mean"] == 0.4 and one["low"] is None and one["high"] is None
    assert mean_interval([None])["mean"] is None


def test_rank_agreement_is_kendalls_tau_on_shared_names():
    assert rank_agreement({"a": 3, "b": 2, "c": 1}, {"a": 0.9, "b": 0.5, "c": 0.1}) == pytest.approx(1.0)
    assert rank_agreement({"a": 3, "b": 2, "c": 1}, {"a": 0.1, "b": 0.5, "c": 0.9}) == pytest.approx(-1.0)
    # One discordant pair of three: (2 - 1) / 3.
    assert rank_agreement({"a": 3, "b": 2, "c": 1, "x": 5}, {"a": 0.9, "b": 0.1, "c": 0.5}) == pytest.approx(1 / 3)
    assert rank_agreement({"a": 1}, {"a": 2}) is None


# ---- draws of forget authors ---------------------------------------------------------------------------------------


def test_validation_reported_pretraining_and_kept_authors_never_meet():
    authors = TOFU_BENCHMARK_AUTHORS
    groups = [authors.retain, authors.reserved_for_holdout, authors.validation, authors.reported, authors.pretraining]
    every = [a for group in groups for a in group]
    assert len(every) == len(set(every)) == 200
    # Forget quality needs perturbed answers: TOFU has them for authors 180-199 (forget10_perturbed).
    assert set(authors.validation) | set(authors.reported) == set(range(180, 200))
    # The holdout authors of a forget05-shaped draw come after the retain authors and are never pretrained on.
    holdout = range(len(authors.retain), len(authors.retain) + FORGET_SHAPES["forget05"])
    assert set(holdout) <= set(authors.reserved_for_holdout)


@pytest.mark.parametrize("pool_name", [VALIDATION, REPORTED])
def test_draws_are_disjoint_while_the_pool_lasts_and_stable_in_their_count(pool_name):
    pool = TOFU_BENCHMARK_AUTHORS.pool(pool_name)
    pairs = author_draws(pool, 2, len(pool) // 2)
    assert sorted(a for pair in pairs for a in pair) == sorted(pool)
    assert author_draws(pool, 2, 1) == pairs[:1] == author_draws(pool, 2, 3)[:1]
    longer = author_draws(pool, 2, len(pool))
    assert longer[: len(pairs)] == pairs and all(set(d) <= set(pool) for d in longer)
    size = min(FORGET_SHAPES["forget05"], len(pool))
    assert all(set(d) <= set(pool) and len(set(d)) == size for d in author_draws(pool, size, 3))


def test_draws_refuse_impossible_requests():
    with pytest.raises(ValueError, match="A draw of 3 authors cannot come from a pool of 2"):
        author_draws([1, 2], 3, 1)
    with pytest.raises(ValueError, match="--draws=0"):
        author_draws([1, 2], 1, 0)
    with pytest.raises(ValueError, match="--draws_from 'test'"):
        TOFU_BENCHMARK_AUTHORS.pool("test")


# ---- the generated pretraining corpus ------------------------------------------------------------------------------


def test_generated_pretraining_corpus_shares_no_author_with_the_data_and_leaves_it_unchanged():
    bundle = generate_authors(num_authors=6, num_forget=1, seed=3)
    corpus = generated_pretraining_corpus(num_authors=6, num_forget=1, seed=3)
    again = generate_authors(num_authors=6, num_forget=1, seed=3)
    assert bundle.fingerprint() == again.fingerprint()
    names = set(bundle.forget["author"]) | set(bundle.retain["author"]) | set(bundle.eval_splits["holdout"]["author"])
    text = " ".join(list(corpus["question"]) + list(corpus["answer"]))
    assert not any(name in text for name in names)
    # The world's general knowledge is in it (what the utility splits ask), and many other authors.
    background = set(zip(bundle.background["question"], bundle.background["answer"]))
    assert background <= set(zip(corpus["question"], corpus["answer"]))
    assert len(corpus) > 20 * 100


# ---- the bench: tuning on validation draws, reporting over draws --------------------------------------------------


def fake_report(forget_authors, figures: dict[str, tuple[float, float]]) -> dict:
    """A draw's report: each model's forget quality and model utility; the target's utility is 1."""
    models = {
        "target": {"role": "target", "summary": {"forget_quality": 1e-6, "model_utility": 1.0}},
        "retain": {"role": "retain", "summary": {"forget_quality": 1.0, "model_utility": 0.95}},
    }
    for name, (quality, utility) in figures.items():
        models[name] = {"role": "unlearned", "summary": {"forget_quality": quality, "model_utility": utility}}
    return {
        "draw": forget_authors,
        "forget_authors": forget_authors,
        "models": models,
        "costs": {},
        "bundle": {"name": "fake"},
    }


def test_tuning_reads_only_validation_authors_and_follows_its_rule(tofu_dir, tmp_path, monkeypatch, capsys):
    from rlunlearn import bench

    loaded = []

    def fake_run_draw(args, cache_args, data_args, base, configs, probes, folder):
        bundle = data_args.bundle()  # the data a real run would train and evaluate on
        loaded.append(sorted(set(bundle.info["forget_author_ids"])))
        assert not probes
        # npo keeps utility at 1e-4 and 3e-4 (3e-4 forgets more), collapses above; ga collapses at every rate.
        figures = {}
        for name, (method, config, extra_options) in configs.items():
            assert extra_options == {}  # a tuned row runs its method's extra inputs at their defaults
            rate = config.learning_rate
            if name.startswith("dareu-grpo@"):  # a variant row runs its method at the row's settings
                assert method == "dareu" and config.algorithm == "grpo"
                figures[name] = (0.2 if rate == 1e-4 else 0.1, 0.95)  # forgets most at the grid's lowest rate
            elif method == "npo":
                figures[name] = (0.5 if rate == 3e-4 else 0.1, 0.95 if rate <= 3e-4 else 0.5)
            elif method == "flat":  # keeps utility at its lowest rate only
                figures[name] = (0.05, 0.95 if rate < 1e-4 else 0.5)
            else:
                figures[name] = (0.9, 0.8 - rate * 100)
        return fake_report(data_args.forget_authors, figures)

    monkeypatch.setattr(bench, "run_draw", fake_run_draw)
    monkeypatch.setattr(bench, "_base_model", lambda args, cache_args: "unused")
    monkeypatch.setitem(
        bench.PRESETS["cpu"],
        "grid",
        {"npo": [1e-4, 3e-4, 1e-3], "ga": [1e-5, 1e-4], "dareu-grpo": [1e-4, 2e-4], "flat": [1e-5, 1e-4]},
    )
    methods = ["npo", "ga", "dareu-grpo", "flat"]
    args = bench.TuneArguments(tofu_path=str(tofu_dir), methods=methods, output_dir=str(tmp_path))
    result = bench.bench_tune(args, bench.CacheArguments(cache_dir=str(tmp_path)), tmp_path)

    validation = set(TOFU_BENCHMARK_AUTHORS.validation)
    assert len(loaded) == 4 and all(set(draw) <= validation for draw in loaded)
    assert result["chosen"]["npo"] == {
        "learning_rate": 3e-4,
        "forget quality": 0.5,
        "MU / target": 0.95,
        "collapsed": False,
        "grid_edge": None,
        "reaches_retain": False,
    }
    # No rate keeps ga's utility: the least damaging one is chosen, and marked collapsed (not at the grid's edge).
    assert result["chosen"]["ga"]["learning_rate"] == 1e-5 and result["chosen"]["ga"]["collapsed"]
    assert result["chosen"]["ga"]["grid_edge"] is None
    # A choice at an end of the grid is marked where the next rate kept utility and forgot less: a lower rate than any
    # tried might forget more. Where the next rate collapsed, the choice is bracketed and not marked.
    assert result["chosen"]["dareu-grpo"]["learning_rate"] == 1e-4
    assert result["chosen"]["dareu-grpo"]["grid_edge"] == "lowest"
    assert "(the grid's lowest rate: a lower one may do better; widen the grid to see)" in capsys.readouterr().out
    assert result["chosen"]["flat"]["learning_rate"] == 1e-5 and not result["chosen"]["flat"]["collapsed"]
    assert result["chosen"]["flat"]["grid_edge"] is None
    with pytest.raises(ValueError, match="not in the validation pool"):
        bench.bench_tune(
            bench.TuneArguments(tofu_path=str(tofu_dir), forget_authors=[190, 191]),
            bench.CacheArguments(cache_dir=str(tmp_path)),
            tmp_path,
        )
    with pytest.raises(ValueError, match="dareu-no-attribution: a control is not tuned; it runs at its row's rate"):
        bench.bench_tune(
            bench.TuneArguments(tofu_path=str(tofu_dir), methods=["dareu-no-attribution"]),
            bench.CacheArguments(cache_dir=str(tmp_path)),
            tmp_path,
        )


def test_a_task_is_tuned_on_its_validation_worlds_and_reported_at_the_chosen_rates(tmp_path, monkeypatch, capsys):
    from rlunlearn import bench
    from rlunlearn.presets import STANDIN_SEEDS

    worlds, runs = [], []

    def fake_run_draw(args, cache_args, data_args, base, configs, probes, folder):
        worlds.append(data_args.generator_seed)
        models = {
            "target": {"role": "target", "summary": {"harmful_rate": 0.8, "normal_rougeL_recall": 1.0}},
            "retain": {"role": "retain", "summary": {"harmful_rate": 0.485, "normal_rougeL_recall": 1.0}},
        }
        for name, (method, config, extra_options) in configs.items():
            rate = config.learning_rate
            runs.append((name, method, rate, extra_options))
            # A higher rate answers fewer harmful prompts (lower is better here); npo loses the normal answers at 1e-3.
            # The control without dareu's reward answers more harmful prompts, by 0.05 a world's seed.
            harmful = 0.5 - 100 * rate + (0.05 * data_args.generator_seed if extra_options else 0)
            models[name] = {
                "role": "unlearned",
                "summary": {"harmful_rate": harmful, "normal_rougeL_recall": 0.5 if rate >= 1e-3 else 0.95},
            }
        return {"draw": f"seed {data_args.generator_seed}", "models": models, "costs": {}, "bundle": {"name": "fake"}}

    monkeypatch.setattr(bench, "run_draw", fake_run_draw)
    monkeypatch.setattr(bench, "_base_model", lambda args, cache_args: "unused")
    monkeypatch.setitem(
        bench.PRESETS["cpu"], "grid", {"npo": [1e-4, 3e-4, 1e-3], "ga": [1e-5, 1e-4], "dareu": [1e-4, 2e-4]}
    )
    cache = bench.CacheArguments(cache_dir=str(tmp_path))
    args = bench.TuneArguments(task="harmful", methods=["npo", "ga", "dareu"], draws=2)
    result = bench.bench_tune(args, cache, tmp_path / "tune")

    assert worlds == list(STANDIN_SEEDS[VALIDATION][:2])
    # The lowest harmful rate among the rates that keep the normal answers, not the lowest overall (1e-3).
    assert result["task"] == "harmful"
    assert result["chosen"]["npo"] == {
        "learning_rate": 3e-4,
        "harmful rate": pytest.approx(0.47),
        "normal / target": 0.95,
        "collapsed": False,
        "grid_edge": None,
        "reaches_retain": True,
    }
    # ga's highest rate stops short of the retain model's 0.485 (a higher rate may remove more), dareu's reaches it.
    assert result["chosen"]["ga"]["learning_rate"] == 1e-4
    assert result["chosen"]["ga"]["grid_edge"] == "highest" and not result["chosen"]["ga"]["reaches_retain"]
    assert result["chosen"]["dareu"]["learning_rate"] == 2e-4
    assert result["chosen"]["dareu"]["grid_edge"] is None and result["chosen"]["dareu"]["reaches_retain"]
    out = capsys.readouterr().out
    edge_note = "(the grid's highest rate: a higher one may do better; widen the grid to see)"
    assert f"ga: learning_rate 0.0001: harmful rate 0.490, normal / target 0.950 {edge_note}" in out
    retain_note = "(the grid's highest rate, at or past the retain model's harmful rate 0.485: a higher one has nothing"
    assert f"dareu: learning_rate 0.0002: harmful rate 0.480, normal / target 0.950 {retain_note}" in out

    worlds.clear(), runs.clear()
    report = str(tmp_path / "tune" / "tune.json")
    # A control runs its row's method at the rate tuned for that row, with its own extra inputs.
    controlled = ["npo", "ga", "dareu", "dareu-no-attribution"]
    args = bench.BenchArguments(task="harmful", methods=controlled, draws=2, validation_report=report)
    summary = bench.bench_unlearn(args, cache, tmp_path / "bench")
    assert worlds == list(STANDIN_SEEDS[REPORTED][:2])
    assert runs[:4] == [
        ("npo", "npo", 3e-4, {}),
        ("ga", "ga", 1e-4, {}),
        ("dareu", "dareu", 2e-4, {}),
        ("dareu-no-attribution", "dareu", 2e-4, {"reward_funcs": ["degeneracy"]}),
    ]
    assert summary["rank_agreement_with_validation"] == pytest.approx(1.0)
    # The row against its control, paired by world: 0.05 x seed lower on reported worlds 1 and 2.
    difference = summary["against_controls"]["dareu-no-attribution"]
    assert difference["row"] == "dareu"
    assert difference["harmful rate"]["values"] == pytest.approx([-0.05, -0.1])
    # Every figure of the table is paired: both kept 0.95 of the target's normal answers.
    assert difference["normal / target"]["values"] == pytest.approx([0.0, 0.0])
    out = capsys.readouterr().out
    assert "Kendall's tau, ranking by harmful rate on the validation draws vs these: 1.0" in out
    assert "Each row minus its control, paired by draw: mean [95% interval] over 2 draw(s)" in out
    # t(0.975, 1 df) x the standard error of [-0.05, -0.1] is 0.3177 either side of -0.075.
    assert re.search(r"dareu minus dareu-no-attribution +-0\.075 \[-0\.393, 0\.243\]", out)
    table = (tmp_path / "bench" / "table.md").read_text()
    assert "| dareu minus dareu-no-attribution | -0.075 [-0.393, 0.243] | - | - | - | 0.000 [0.000, 0.000] |" in table
    with pytest.raises(
        ValueError, match="tuned with --preset cpu --task harmful; this run is --preset cpu --task wmdp"
    ):
        bench.bench_unlearn(
            bench.BenchArguments(task="wmdp", methods=["npo"], draws=1, validation_report=report),
            cache,
            tmp_path / "other",
        )


def test_draws_are_aggregated_and_collapsed_methods_are_not_ranked():
    from rlunlearn import bench
    from rlunlearn.bench import aggregate_draws, draw_tables, rank_methods

    reports = [
        fake_report([180, 181], {"npo": (0.2, 0.95), "flat": (0.05, 0.92), "ga": (0.9, 0.3)}),
        fake_report([182, 183], {"npo": (0.4, 0.93), "flat": (0.01, 0.97), "ga": (0.8, 0.2)}),
    ]
    aggregated = aggregate_draws(reports)
    assert aggregated["npo"]["forget quality"]["mean"] == pytest.approx(0.3)
    assert aggregated["npo"]["forget quality"]["values"] == [0.2, 0.4]
    assert aggregated["npo"]["MU / target"]["mean"] == pytest.approx(0.94)
    assert aggregated["npo"]["forget quality"]["low"] == 0.0  # cut at 0: forget quality is a p-value
    # ga forgets "best" by destroying the model: it is marked collapsed, not ranked first.
    assert rank_methods(aggregated) == {
        "target": "target",
        "retain": "retain",
        "npo": "1",
        "flat": "2",
        "ga": "collapsed",
    }
    rows = draw_tables(aggregated, ["forget quality", "MU / target"])
    assert [row["model"] for row in rows] == ["target", "retain", "npo", "flat", "ga"]
    # Agreement with a tune.json: over the methods tuned there and not collapsed in either; flat was not tuned.
    validation = {"npo": {"forget quality": 0.5, "collapsed": False}, "ga": {"forget quality": 0.9, "collapsed": True}}
    assert bench._rank_agreement(validation, aggregated) is None  # one method left: no ranking to compare
    validation["flat"] = {"forget quality": 0.1, "collapsed": False}
    assert bench._rank_agreement(validation, aggregated) == pytest.approx(1.0)
    assert rows[2]["forget quality"].startswith("0.300 [")


def test_a_report_made_with_another_attribution_classifier_recipe_is_not_reused(tmp_path):
    from rlunlearn import bench
    from rlunlearn.arguments import DataArguments
    from rlunlearn.presets import CONTROLS, STANDIN_ATTRIBUTOR, STANDIN_TASKS

    data_args = DataArguments(**STANDIN_TASKS["muse"], generator_seed=1)
    config = bench._method_config("cpu", "dareu")
    recipe = bench._row_entry("dareu", {}, data_args)["attributor"]
    assert recipe["num_train_epochs"] == STANDIN_ATTRIBUTOR["muse"]["num_train_epochs"]
    assert bench._row_entry("npo", {}, data_args) == {}
    # The control without the attribution reward trains no classifier: its report records its rewards instead.
    control = CONTROLS["dareu-no-attribution"]["extra_inputs"]
    assert bench._row_entry("dareu", control, data_args) == {"extra_inputs": {"reward_funcs": ["degeneracy"]}}
    arguments = bench._method_arguments("dareu", control, None, data_args.bundle(), data_args)
    assert arguments.reward_funcs == ["degeneracy"] and arguments.attributor is None

    def what(attributor):
        entry = {} if attributor is None else {"attributor": attributor}
        return {"draw": "seed 1", "configs": {"dareu": {"method": "dareu", **config.to_dict(), **entry}}}

    report = tmp_path / "report.json"
    defaults = {"dareu": bench._field_defaults(config)}
    report.write_text(json.dumps(what(recipe), default=str))
    assert bench._saved_rows(report, what(recipe), defaults)[1] == {"dareu"}
    # Another recipe, or a report from before the recipe was recorded: unlearned again.
    for older in ({**recipe, "num_train_epochs": 3.0}, None):
        report.write_text(json.dumps(what(older), default=str))
        assert bench._saved_rows(report, what(recipe), defaults)[1] == set()


def test_a_report_from_before_the_attribution_views_is_read_back_where_they_are_at_their_defaults(tmp_path):
    from rlunlearn import bench
    from rlunlearn.arguments import DataArguments
    from rlunlearn.presets import STANDIN_ATTRIBUTOR, STANDIN_TASKS

    config = bench._method_config("cpu", "dareu")
    defaults = {"dareu": bench._field_defaults(config)}
    report = tmp_path / "report.json"
    for task, reused in (("muse", {"dareu"}), ("harmful", set())):
        recipe = bench._row_entry("dareu", {}, DataArguments(**STANDIN_TASKS[task], generator_seed=1))["attributor"]
        views = {key: recipe[key] for key in ("prefix_views", "padded_views")}
        assert views == {key: STANDIN_ATTRIBUTOR[task].get(key, 0) for key in views}
        # A report whose classifier recipe predates the views: read back on MUSE, which leaves them at 0; on the
        # harmful stand-in, which sets them, unlearned again.
        older = {key: value for key, value in recipe.items() if key not in views}
        entry = {"method": "dareu", **config.to_dict()}
        report.write_text(
            json.dumps({"draw": "seed 1", "configs": {"dareu": {**entry, "attributor": older}}}, default=str)
        )
        what = {"draw": "seed 1", "configs": {"dareu": {**entry, "attributor": recipe}}}
        assert bench._saved_rows(report, what, defaults)[1] == reused, task
