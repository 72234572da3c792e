"""The console script is a registry (``hf_cxr_mae.cli``): every command registers its parser and
binds its function, from its own module (``hf_cxr_mae.cli.<command>``); unknown flags are
refused by name; evaluate hands every flag to the recipe's parser."""

import argparse

import pytest

from hf_cxr_mae import cli


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_binds_its_own_function():
    commands = _subparsers(cli.build_parser())
    assert sorted(commands) == sorted(
        [
            *("cache", "predict", "reconstruct", "convert", "push", "demo", "evaluate"),
            *("compare", "export"),
        ]
    )
    for name, parser in commands.items():
        bound = parser.get_default("func")
        assert callable(bound), name
        assert bound.__module__ == f"hf_cxr_mae.cli.{name}" and bound.__name__ == name


def test_unknown_flag_of_a_command_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["push", "folder", "user/repo", "--bogus_flag", "1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus_flag 1" in capsys.readouterr().err


def test_evaluate_hands_every_flag_to_the_recipe_parser():
    # argparse alone would say "unrecognized arguments"; the recipe's parser names the close
    # match, in one line (SystemExit), not a traceback.
    with pytest.raises(SystemExit, match=r"evaluate: .*--model_name_or_path"):
        cli.main(["evaluate", "--model_name_or_pth", "x", "--split", "test"])


def test_backend_onnx_on_a_pytorch_folder_is_one_line(tmp_path):
    """``predict --backend onnx`` on a folder without an export ended in a FileNotFoundError
    traceback; its message (the folder, the export command) is now the one line."""
    from helpers import random_png, save_classifier, tiny_classifier

    folder = save_classifier(tiny_classifier(["Atelectasis", "Effusion"]), tmp_path / "model")
    image = random_png(tmp_path / "x.png", seed=0)
    with pytest.raises(SystemExit) as refused:
        cli.main(["predict", "--model", str(folder), "--backend", "onnx", str(image)])
    assert refused.value.code == (
        f"predict: {folder} holds no exported graph (onnx/model.onnx); make one with "
        "`hf-cxr-mae export MODEL OUT`."
    )


@pytest.mark.parametrize("with_output", [True, False])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys, with_output):
    """Ctrl-C during predict printed the KeyboardInterrupt traceback (and the workers'); it is
    one line now, saying that an --output file is kept and resumes, with the shell's 130."""
    from helpers import random_png, save_classifier, tiny_classifier

    import hf_cxr_mae.serving.predict as predict

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, as iter_predictions

    folder = save_classifier(tiny_classifier(["Atelectasis", "Effusion"]), tmp_path / "model")
    image, output = random_png(tmp_path / "x.png", seed=0), tmp_path / "out.csv"
    monkeypatch.setattr(predict, "iter_predictions", interrupted)
    argv = ["predict", "--model", str(folder), str(image), "--num_workers", "0"]
    capsys.readouterr()
    # KeyboardInterrupt caught too: escaping, it would stop the whole test session.
    with pytest.raises((SystemExit, KeyboardInterrupt)) as stopped:
        cli.main(argv + (["--output", str(output)] if with_output else []))
    assert isinstance(stopped.value, SystemExit) and stopped.value.code == 130
    kept = f"; what was written to {output} is kept, the same command resumes"
    err = capsys.readouterr().err  # the progress bars before it, then the one line
    assert err.endswith(f"\npredict: interrupted{kept if with_output else ''}\n")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_the_cli_starts_without_transformers_and_adds_dataset_flags_when_parsed():
    """``hf-cxr-mae --help`` and ``predict`` (which serves ONNX without torch or transformers)
    never build the dataset flags: those come from HfArgumentParser, i.e. transformers, and are
    added only when a command that reads a dataset is parsed."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from hf_cxr_mae.cli import build_parser\n"
        "parser = build_parser()\n"
        "try:\n"
        "    parser.parse_args(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('transformers' in sys.modules)\n"
    )
    for argv, loads in ((["--help"], False), (["predict", "--help"], False), (["compare", "--help"], True)):
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120
        )
        assert done.stdout.strip().splitlines()[-1] == str(loads), (argv, done.stdout[-500:], done.stderr[-2000:])
        if loads:
            assert "--uncertainty" in done.stdout and "--image_dir" in done.stdout, done.stdout


def test_export_refuses_dataset_flags_without_calibration(tmp_path):
    """``--image_dir`` (or ``--data_dir``) without ``--calibration`` describes no data export
    reads: refused before the model loads, naming the flags, instead of being dropped."""
    for extra in (["--image_dir", "images"], ["--data_dir", str(tmp_path)]):
        with pytest.raises(SystemExit, match=f"{extra[0]} describe the calibration data"):
            cli.main(["export", str(tmp_path / "no-model"), str(tmp_path / "out"), *extra])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_model_folder_that_does_not_exist_is_named(tmp_path, command):
    """A typo in a model path is one line naming it, not transformers' traceback about a
    malformed Hub repo id."""
    missing = str(tmp_path / "no-such-model")
    image = tmp_path / "x.png"
    argv = {"predict": ["predict", "--model", missing, str(image)],
            "export": ["export", missing, str(tmp_path / "out")]}[command]  # fmt: skip
    from PIL import Image

    Image.new("L", (32, 32)).save(image)
    with pytest.raises(SystemExit, match=f"model {missing}: no such folder"):
        cli.main(argv)
