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
    assert "500 images cached at shortest side 96" in out
    built = sorted(p.name for p in tmp_path.iterdir())
    assert len(built) == 3  # train, validation, test
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    main(argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == built
    # Reused: the same files, none rewritten (a rebuild into the same folders would pass above).
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files


def test_quickstart_runs_end_to_end(tmp_path, capsys):
    main(["quickstart", "--output_dir", str(tmp_path), "--steps", "3"])
    out = capsys.readouterr().out
    assert "AutoModel loads it as ViTMAEModel" in out and "pipeline scores" in out
    assert (tmp_path / "classifier" / "preprocessor_config.json").is_file()
