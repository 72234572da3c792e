import pytest

from hf_cxr_mae.cli import main


def test_cache_command_builds_and_reuses(nih_dir, tmp_path, capsys):
    argv = [
        "cache",
        "nih14",
        "--data_dir",
        str(nih_dir),
        "--size",
        "96",
        "--cache_dir",
        str(tmp_path),
        "--option",
        "image_dir=images",
    ]
    main(argv)
    out = capsys.readouterr().out
    assert "500 images cached" in out
    assert [line.split()[:6] for line in out.splitlines()[:3]] == [
        [split, n, "images", "shortest", "side", "96"]
        for split, n in (("train", "360"), ("validation", "40"), ("test", "100"))
    ], out
    built = sorted(p.name for p in tmp_path.iterdir())
    assert len(built) == 3  # train, validation, test
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    main(argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == built
    # Reused: the same files, none rewritten (a rebuild into the same folders would pass above).
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files


def test_cache_command_sizes_splits_as_the_recipe_and_the_recipe_reuses_it(nih_dir, tmp_path):
    """Without --size the command caches each split at the size the fine-tuning recipe asks for
    (train: what its smallest crop needs; others: the eval resize), so the recipe builds nothing."""
    from recipe_utils import TINY_TRAIN, recipe

    from hf_cxr_mae.data.cache import cache_size_for

    cache_dir = tmp_path / "cache"
    options = ["--option", "image_dir=images", "--option", "validation_size=0.1"]
    main(["cache", "nih14", "--data_dir", str(nih_dir), "--image_size", "64",
          "--cache_dir", str(cache_dir), *options])  # fmt: skip
    built = sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith("."))
    # 64 px crops at scale 0.08 need 64 / sqrt(0.08) = 226.3 -> 227; the eval resize is 64 / 0.875.
    assert cache_size_for(64, 0.08, 73) == 227
    assert sorted(name.rsplit("-", 1)[1] for name in built) == ["227", "73", "73"]
    recipe("finetune").main(
        [*TINY_TRAIN, "--dataset", "nih14", "--data_dir", str(nih_dir), "--image_dir", "images",
         "--output_dir", str(tmp_path / "ft"), "--max_steps", "1", "--eval_strategy", "no",
         "--save_strategy", "no", "--load_best_model_at_end", "false",
         "--cache_dir", str(cache_dir), "--model_name_or_path", ""]
    )  # fmt: skip
    assert sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith(".")) == built


def test_cache_command_builds_a_pretraining_mixture_the_recipe_reuses(nih_dir, tmp_path):
    """Several datasets with --recipe pretrain: the recipe's --dataset mixture, cached as the
    pre-training recipe builds it (its images and hold-out), so the recipe builds nothing."""
    from recipe_utils import TINY_TRAIN, recipe
    from test_data_sources import write_images

    extra = tmp_path / "extra"
    write_images(extra, [f"{i}.png" for i in range(6)])
    cache_dir = tmp_path / "cache"
    main(["cache", "nih14", "imagefolder", "--data_dir", str(nih_dir), str(extra),
          "--recipe", "pretrain", "--image_size", "64", "--seed", "0",
          "--cache_dir", str(cache_dir), "--option", "image_dir=images"])  # fmt: skip
    built = sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith("."))
    assert len(built) == 2  # images and hold-out
    recipe("pretrain").main(
        [*TINY_TRAIN, "--dataset", "nih14", "imagefolder", "--data_dir", str(nih_dir), str(extra),
         "--image_dir", "images", "--seed", "0", "--output_dir", str(tmp_path / "pt"),
         "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
         "--cache_dir", str(cache_dir)]
    )  # fmt: skip
    assert sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith(".")) == built


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nih14", "chexpert", "--data_dir", "a"], "one --data_dir per dataset"),
        (["nih14", "chexpert", "--data_dir", "a", "b"], "add --recipe pretrain"),
        (["nih14", "imagefolder", "--data_dir", "a", "b", "--recipe", "pretrain",
          "--option", "uncertainty=ones"], r"no dataset of .* takes option\(s\) \['uncertainty'\]"),
    ],
)  # fmt: skip
def test_cache_command_names_a_bad_mixture(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["cache", *argv])
