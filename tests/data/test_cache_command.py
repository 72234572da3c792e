"""``hf-cxr-mae cache``: it builds ahead exactly the pixel caches a recipe reuses (fine-tuning
splits at the recipe's sizes, pre-training mixtures with their hold-out), names a bad mixture,
and keeps its argument order."""

from pathlib import Path

import pytest
from recipe_utils import TINY_TRAIN, recipe

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
        "--image_dir",
        "images",
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
    options = ["--image_dir", "images", "--validation_size", "0.1"]
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
    from helpers import write_images
    from recipe_utils import TINY_TRAIN, recipe

    extra = tmp_path / "extra"
    write_images(extra, [f"{i}.png" for i in range(6)])
    cache_dir = tmp_path / "cache"
    main(["cache", "nih14", "imagefolder", "--data_dir", str(nih_dir), str(extra),
          "--recipe", "pretrain", "--image_size", "64", "--seed", "0",
          "--cache_dir", str(cache_dir), "--image_dir", "images"])  # fmt: skip
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
          "--uncertainty", "ones"], r"cache: --uncertainty is an option of --dataset chexpert"),
    ],
)  # fmt: skip
def test_cache_command_names_a_bad_mixture(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["cache", *argv])


def test_cache_takes_data_dir_before_the_dataset_as_it_did(tmp_path, capsys):
    # UNCLEAR (regression). `hf-cxr-mae cache --data_dir /data/nih nih14` worked before
    # --data_dir took several folders (nargs="+"); now argparse swallows "nih14" as a second
    # folder and answers "error: the following arguments are required: dataset".
    from hf_cxr_mae.cli import main

    missing = tmp_path / "no-such-folder"
    with pytest.raises(BaseException):  # noqa: B017 - the folder is missing: any refusal is fine
        main(["cache", "--data_dir", str(missing), "imagefolder", "--cache_dir", str(tmp_path)])
    assert "required: dataset" not in capsys.readouterr().err


def _cache_entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith("."))


def _split_file(path: Path, names: list[str]) -> Path:
    path.write_text("\n".join(names) + "\n")
    return path


def test_cache_command_for_pretrain_builds_what_the_pretrain_recipe_reuses(nih_dir, tmp_path):
    """README: ``hf-cxr-mae cache ... --recipe pretrain`` "builds ahead exactly the caches the
    recipe will reuse". Pre-training caches its own images (the sources' training images and a
    hold-out carved from them), so the command must build those, not the fine-tuning splits."""
    names = sorted(p.name for p in (nih_dir / "images").glob("*.png"))[:40]
    train = _split_file(tmp_path / "tr.txt", names[:30])
    val = _split_file(tmp_path / "va.txt", names[30:])
    cache_dir = tmp_path / "cache"
    options = ["--image_dir", "images",
               "--split_files", f"train={train},validation={val}"]  # fmt: skip
    main(["cache", "nih14", "--data_dir", str(nih_dir), "--recipe", "pretrain",
          "--image_size", "32", "--cache_dir", str(cache_dir), *options])  # fmt: skip
    built = _cache_entries(cache_dir)
    recipe("pretrain").main(
        [*TINY_TRAIN, "--dataset", "nih14", "--data_dir", str(nih_dir), "--image_dir", "images",
         "--split_files", f"train={train},validation={val}", "--image_size", "32",
         "--output_dir", str(tmp_path / "pt"), "--max_steps", "1", "--eval_strategy", "no",
         "--save_strategy", "no", "--cache_dir", str(cache_dir)]
    )  # fmt: skip
    assert _cache_entries(cache_dir) == built


def test_cache_command_skips_an_empty_split_as_the_recipe_does(nih_dir, tmp_path, capsys, caplog):
    """An empty split (here an empty test list) made ``cache`` fail with an IndexError inside
    ``datasets.load_from_disk`` and leave a cache folder without data, where the fine-tuning
    recipe skips such a split with a warning. The command skips it too, and every folder it
    leaves is a whole cache (a second run reuses them all)."""
    import logging

    data = tmp_path / "nih"  # the official layout, its test_list.txt empty
    data.mkdir()
    for name in ("images", "Data_Entry_2017.csv"):
        (data / name).symlink_to(nih_dir / name)
    names = sorted(p.name for p in (nih_dir / "images").glob("*.png"))[:12]
    _split_file(data / "train_val_list.txt", names)
    (data / "test_list.txt").write_text("")
    cache_dir = tmp_path / "cache"
    argv = ["cache", "nih14", "--data_dir", str(data), "--size", "32", "--num_proc", "1",
            "--cache_dir", str(cache_dir), "--image_dir", "images"]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        main(argv)
    assert f"The test split is empty (0 images) in {data}: not cached." in caplog.messages
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[:-1]] == [["train", "10"], ["validation", "2"]]
    assert out[-1].startswith("12 images cached")
    built = sorted(cache_dir.iterdir())
    assert len(built) == 2
    assert all(list(folder.glob("data-*.arrow")) for folder in built)
    main(argv)
    assert sorted(cache_dir.iterdir()) == built
