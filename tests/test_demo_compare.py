"""demo.py as a comparison runner: ``--vary`` parsing and its one-line errors, the choice of the fine-tuning rate,
the tuning protocol (the test split is read only after every arm of a seed has chosen its rate on val, and once
per arm), resume, and the shape of results.json. Tiny settings; no training outcome is asserted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import demo
import train
from training.stats import paired_gain
from training.vary import RESERVED, parse_vary

#: The smallest experiment that runs every stage: 2 seeds, 2 rates, 12 train / 6 val / 6 test videos, a few steps.
TINY = dataclasses.replace(demo.FULL, seeds=2, unlabeled=12, footage=False, train_per_class=2, val_per_class=1, test_per_class=1,
                           batch_size=4, pretrain_steps=4, finetune_steps=2, lr_grid=(0.001, 0.002), num_workers=0)


# ---- --vary parsing and its errors

@pytest.mark.parametrize("text, key, texts, values, args", [
    ("model.head=sort,speed,both", "model.head", ("sort", "speed", "both"), ("sort", "speed", "both"), ["--head=sort"]),
    ("model.norm=bn,tgn", "model.norm", ("bn", "tgn"), ("bn", "tgn"), ["--norm=bn"]),
    ("data.speeds=1,2,4,8;-8,-4,-2,-1,1,2,4,8", "data.speeds", ("1,2,4,8", "-8,-4,-2,-1,1,2,4,8"),
     ((1, 2, 4, 8), (-8, -4, -2, -1, 1, 2, 4, 8)), ["--speeds=1,2,4,8"]),
    ("data.num_clips=2,3,4", "data.num_clips", ("2", "3", "4"), (2, 3, 4), ["--num-clips=2"]),
    ("optim.weight_decay=0,0.001", "optim.weight_decay", ("0", "0.001"), (0.0, 0.001), ["--weight-decay=0.0"]),
    ("data.augment=true,false", "data.augment", ("true", "false"), (True, False), ["--augment"]),
])
def test_vary_parses_any_config_field(text, key, texts, values, args):
    v = parse_vary(text)
    assert (v.key, v.texts, v.values) == (key, texts, values)
    assert v.train_args(0) == args
    # the options reach train.py's own parser as the values given
    from training.config import parse_overrides
    section, name = key.split(".")
    for i, value in enumerate(values):
        _, overrides = parse_overrides(["pretrain", "--data", "x", *v.train_args(i)])
        assert overrides[section][name] == value


@pytest.mark.parametrize("text, message", [
    ("model.hed=a,b", "--vary model.hed: model has no field 'hed'"),
    ("foo.x=1,2", "--vary foo.x: unknown key; KEY is SECTION.FIELD"),
    ("head=sort,both", "--vary head: unknown key"),
    ("model.head", "expected KEY=V1,V2"),
    ("model.head=sort", "give at least two values"),
    ("data.num_clips=2,2", "a value is given twice"),
    ("data.num_clips=2,x", "bad value 'x': expected an integer"),
    ("data.augment=true,maybe", "bad value 'maybe': expected true or false"),
    ("data.speeds=1,2,4,8", "separate its values with ';'"),
    ("optim.lr=0.1,0.2", "chosen per arm on the val split"),
    ("run.seed=1,2", "--first-seed"),
])
def test_vary_errors_name_the_key(text, message):
    with pytest.raises(ValueError, match=None) as info:
        parse_vary(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_every_reserved_key_is_a_real_field():
    from training.config import SECTIONS
    for key in RESERVED:
        section, name = key.split(".")
        assert name in {f.name for f in dataclasses.fields(SECTIONS[section])}


@pytest.mark.parametrize("argv, message", [
    (["--vary", "model.head=sort,spin"], "demo.py: --vary model.head=spin: --head must be sort, speed or both, got 'spin'"),
    (["--vary", "data.num_clips=1,2"], "demo.py: --vary data.num_clips=1: --head both sorts clips: it needs --num-clips >= 2, got 1"),
    (["--vary", "data.speeds=1;1,2"], "demo.py: --vary data.speeds=1: --num-clips, --speeds: num_clips must be in"),
    (["--vary", "model.nrm=bn,tgn"], "demo.py: --vary model.nrm: model has no field 'nrm'"),
    (["--lr-grid", "0.001,fast"], "demo.py: --lr-grid '0.001,fast': expected comma-separated rates"),
    (["--lr-grid", "0.001,0.001"], "demo.py: lr_grid must hold distinct positive rates"),
    (["--seeds", "1"], "demo.py: seeds must be at least 2"),
])
def test_command_line_mistakes_are_one_line(argv, message):
    """Values that only the whole configuration refuses (head=spin, one clip for a sorting head) are caught
    before anything runs, by resolving each arm as train.py would."""
    with pytest.raises(SystemExit) as info:
        demo.main(argv + ["--out", "/nonexistent/never-created"])
    assert str(info.value.code).startswith(message) and "\n" not in str(info.value.code)
    assert not Path("/nonexistent/never-created").exists()


def test_command_line_settings():
    settings, out, variation, fresh = demo.parse_args(["--vary", "model.norm=bn,tgn", "--seeds", "3", "--first-seed", "4",
                                                       "--lr-grid", "0.001,0.003", "--scale", "mini"])
    assert (settings.seeds, settings.first_seed, settings.lr_grid, out, fresh) == (3, 4, (0.001, 0.003), Path("runs/vary-model.norm"), False)
    assert settings.pretrain_steps == demo.MINI.pretrain_steps
    assert [(a.name, a.pretrained, a.args) for a in demo.arms_for(variation)] == [("bn", True, ("--norm=bn",)), ("tgn", True, ("--norm=tgn",))]
    settings, out, variation, fresh = demo.parse_args(["--fresh"])
    assert (settings, out, variation, fresh) == (demo.FULL, Path("runs/demo"), None, True)
    assert [(a.name, a.pretrained) for a in demo.arms_for(None)] == [("scratch", False), ("pretrained", True)]
    # arms' folders differ even when their values differ only by sign
    folders = [a.folder for a in demo.arms_for(parse_vary("data.speeds=1,2;-1,-2"))]
    assert len(set(folders)) == 2


def test_choose_lr_best_val_video_accuracy_then_clip_then_grid_order():
    trials = {0.001: {"video_acc": 0.5, "clip_acc": 0.4}, 0.002: {"video_acc": 0.6, "clip_acc": 0.3}, 0.004: {"video_acc": 0.6, "clip_acc": 0.2}}
    assert demo.choose_lr(trials) == 0.002
    trials[0.004]["clip_acc"] = 0.35
    assert demo.choose_lr(trials) == 0.004
    tie = {0.002: {"video_acc": 0.5, "clip_acc": 0.5}, 0.001: {"video_acc": 0.5, "clip_acc": 0.5}}
    assert demo.choose_lr(tie) == 0.002  # the first listed


def test_out_folder_of_another_run_is_refused_not_emptied(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert "not empty and holds no earlier demo run" in demo.prepare_out(tmp_path / "other", TINY, None, fresh=True)
    assert (tmp_path / "other" / "notes.txt").exists()
    run = tmp_path / "run"
    demo._write_done(run / "settings.json", demo.settings_record(TINY, None))
    assert demo.prepare_out(run, TINY, None, fresh=False) is None  # same settings: resume
    problem = demo.prepare_out(run, dataclasses.replace(TINY, seeds=3), None, fresh=False)
    assert "holds a run with other settings" in problem and "--fresh" in problem
    assert "other settings" in demo.prepare_out(run, TINY, parse_vary("model.norm=bn,tgn"), fresh=False)
    assert demo.prepare_out(run, dataclasses.replace(TINY, seeds=3), None, fresh=True) is None and not run.exists()


# ---- real runs at TINY size (the data is built once for the module)

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("demo_data")
    pretrain, labelled = demo.build_data(root, TINY)
    return {"pretrain": str(pretrain), "labelled": str(labelled)}


def _with_data(root: Path, data: dict) -> Path:
    """An experiment folder that finds its data already built (as a resumed run would)."""
    demo._write_done(root / "data.json", data)
    return root


def _split_reads(monkeypatch) -> list[tuple[str, str]]:
    """Every shard listing train.py makes, in order: (data folder name, split)."""
    reads = []
    real = train.list_shards

    def recording(data, *args, split, **kwargs):
        reads.append((Path(str(data)).name, split))
        return real(data, *args, split=split, **kwargs)

    monkeypatch.setattr(train, "list_shards", recording)
    return reads


@pytest.mark.slow
def test_test_split_is_read_only_after_every_arm_chose_its_rate_on_val(tmp_path, monkeypatch, capsys, tiny_data):
    reads = _split_reads(monkeypatch)
    evals = []  # (checkpoint evaluated, split scored), in order
    real_evaluate = train.evaluate

    def recording_evaluate(cfg, info, state):
        evals.append((cfg.run.init, cfg.data.test_split))
        return real_evaluate(cfg, info, state)

    monkeypatch.setattr(train, "evaluate", recording_evaluate)
    root = _with_data(tmp_path / "run", tiny_data)
    results = demo.run_experiment(root, TINY)

    # reads per seed: split the record where the next seed's first run (the scratch arm's fine-tuning) starts
    labelled = [split for data, split in reads if data == "motion"]
    assert set(labelled) == {"train", "val", "test"}
    per_seed = len(labelled) // TINY.seeds
    for s in range(TINY.seeds):
        seed_reads = labelled[s * per_seed:(s + 1) * per_seed]
        last_val = max(i for i, split in enumerate(seed_reads) if split == "val")
        first_test = min(i for i, split in enumerate(seed_reads) if split == "test")
        assert last_val < first_test, seed_reads
    # val: every arm at every rate; test: each arm's chosen model once (plus the backbone evals, after them)
    assert sum(split == "val" for _, split in evals) == TINY.seeds * 2 * len(TINY.lr_grid)
    for r in results["seeds"]:
        for arm in ("scratch", "pretrained"):
            stored = r["arms"][arm]
            val = {float(lr): v for lr, v in stored["val"].items()}
            assert stored["lr"] == demo.choose_lr(val)
            folder = root / f"seed_{r['seed']}" / arm
            test_scores = [init for init, split in evals if split == "test" and init.startswith(str(folder / "lr_"))]
            assert test_scores == [str(folder / f"lr_{stored['lr']:g}" / "checkpoint.pt")]
            assert json.loads((folder / "test" / "eval.json").read_text())["video_acc"] == stored["video_acc"]

    # results.json: arms and comparisons computed from the per-seed numbers
    stored = json.loads((root / "results.json").read_text())
    assert (root / "results.png").stat().st_size > 0
    assert list(stored["arms"]) == ["scratch", "pretrained"] and stored["baseline"] == "scratch"
    assert stored["arms"]["pretrained"]["lr"] == [r["arms"]["pretrained"]["lr"] for r in stored["seeds"]]
    assert stored["arms"]["scratch"]["pretext"] is None and set(stored["arms"]["pretrained"]["pretext"]) == {"speed", "order"}
    assert [(c["a"], c["b"], c["metric"]) for c in stored["comparisons"]] == [("scratch", "pretrained", m) for m in demo.COMPARED]
    for c in stored["comparisons"]:
        expected = paired_gain([r["arms"]["pretrained"][c["metric"]] for r in stored["seeds"]],
                               [r["arms"]["scratch"][c["metric"]] for r in stored["seeds"]])
        assert (c["mean_gain"], *c["ci95"]) == pytest.approx((expected["mean_gain"], *expected["ci95"]))
        assert (c["wins"], c["seeds"]) == (expected["wins"], expected["seeds"])
    assert stored["verdicts"][0].startswith(next(c["verdict"] for c in stored["comparisons"] if c["metric"] == "video_acc") + "; pretext speed")
    demo.print_results(stored)
    printed = capsys.readouterr().out
    assert "lr chosen per seed" in printed and "pretrained - scratch" in printed


@pytest.mark.slow
def test_killed_comparison_reruns_only_what_is_missing(tmp_path, monkeypatch, tiny_data):
    """A --vary comparison killed in its second seed: the rerun redoes no finished run (seed 0's arms, seed 1's
    finished runs), completes the rest, and a third run does nothing."""
    variation = parse_vary("data.num_clips=2,3")
    calls: list[str] = []  # --out of every train.py run that finished
    real_main = train.main
    kill_at = {"call": 17}

    def recording_main(argv):
        if len(calls) + 1 == kill_at["call"]:
            raise KeyboardInterrupt  # as Ctrl-C or a kill in the middle of the run
        result = real_main(argv)
        calls.append(argv[argv.index("--out") + 1])
        return result

    monkeypatch.setattr(train, "main", recording_main)
    root = _with_data(tmp_path / "run", tiny_data)
    with pytest.raises(KeyboardInterrupt):
        demo.run_experiment(root, TINY, variation)
    first = list(calls)
    assert len(first) == 16 and not (root / "results.json").exists()
    assert (root / "seed_0" / "arm0_2" / "arm.json").exists() and not (root / "seed_1" / "arm0_2" / "arm.json").exists()

    calls.clear()
    kill_at["call"] = 0
    results = demo.run_experiment(root, TINY, variation)
    second = list(calls)
    assert not set(first) & set(second)  # nothing finished is redone
    assert not [out for out in second if "seed_0" in out]
    per_seed = 2 * (1 + 2 * len(TINY.lr_grid) + 2)  # per arm: pretrain, fine-tune and val per rate, test, pretext
    assert len(first) + len(second) == TINY.seeds * per_seed
    assert [r["seed"] for r in results["seeds"]] == TINY.seed_list()
    assert list(results["arms"]) == ["2", "3"] and results["vary"] == {"key": "data.num_clips", "values": ["2", "3"]}
    assert [(c["a"], c["b"]) for c in results["comparisons"]] == [("2", "3")] * len(demo.COMPARED)
    assert results["verdicts"][0].startswith("data.num_clips: 3 vs 2: ")
    assert results["arms"]["3"]["train_args"] == ["--num-clips=3"]
    stored_cfg = json.loads((root / "seed_1" / "arm1_3" / "pretrain" / "config.json").read_text())
    assert stored_cfg["data"]["num_clips"] == 3 and stored_cfg["run"]["seed"] == 1

    calls.clear()
    again = demo.run_experiment(root, TINY, variation)
    assert calls == []
    assert again["seeds"] == results["seeds"] and again["comparisons"] == results["comparisons"]


def test_an_order_only_arm_shows_its_pretext_in_table_and_plot(tmp_path, monkeypatch, capsys):
    """The sorting head alone has no speed accuracy: its order accuracy is still printed (named) and plotted.
    The input is a real result file (docs/ablations/head.json: arms sort, speed, both)."""
    import matplotlib.figure
    from matplotlib.collections import PathCollection

    results = json.loads((Path(__file__).resolve().parent.parent / "docs" / "ablations" / "head.json").read_text())
    demo.print_results(results)
    out = capsys.readouterr().out
    order = results["arms"]["sort"]["pretext"]["order"]
    assert f"order {order['accuracy']:.2f} [{order['ci95'][0]:.2f}, {order['ci95'][1]:.2f}]" in out
    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: figures.append(fig))
    demo.plot_results(results, tmp_path / "results.png")
    pretext = figures[0].axes[-1]
    scatters = [c for c in pretext.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 4  # one per (arm, task): sort (order), speed (speed), both (speed, order)
    assert sorted(t.get_text() for t in pretext.get_legend().get_texts()) == ["order", "speed"]
