"""Bad input: each case exits with 2 and one line naming the value and the fix, before any
data is loaded or any file is written."""

import os
import subprocess
import sys

import pytest
import torch

import main
from conftest import REPO_ROOT

CASES = [
    (["--imbalanced_factor", "0.5"], "--imbalanced_factor 0.5 is below 1"),
    (["--corruption_ratio", "1.5", "--corruption_type", "uniform"],
     "--corruption_ratio 1.5 is outside [0, 1]"),
    (["--corruption_ratio", "-0.1", "--corruption_type", "flip1"],
     "--corruption_ratio -0.1 is outside [0, 1]"),
    (["--corruption_type", "uniform"],
     "--corruption_type was given without --corruption_ratio"),
    (["--corruption_ratio", "0.4"], "--corruption_ratio was given without --corruption_type"),
    (["--num_meta", "55"], "--num_meta 55 is not a positive multiple of the 10 classes"),
    (["--num_meta", "0"], "--num_meta 0 is not a positive multiple"),
    (["--dataset", "cifar100", "--num_meta", "1050"],
     "--num_meta 1050 is not a positive multiple of the 100 classes"),
    (["--num_meta", "260"], "--num_meta 260 asks for 26 images per class but the smallest "
                            "class has 20 training images; use at most 200"),
    (["--imbalanced_factor", "100", "--fixed_class_order"],
     # n_max = 15: 15 * 100 ** (-6 / 9) = 0.70, so classes 6 to 9 get no image.
     "--imbalanced_factor 100 leaves no training image for 4 classes (class006, class007, "
     "class008, class009)"),
    (["--nesterov", "--momentum", "0"], "--nesterov needs --momentum above 0"),
    (["--hypergrad_alpha", "0"], "--hypergrad_alpha 0.0 must be above 0"),
    (["--lr", "-0.1"], "--lr -0.1 is negative"),
    (["--weight_decay", "-1"], "--weight_decay -1.0 is negative"),
    (["--momentum", "1.5"], "--momentum 1.5 is outside [0, 1)"),
    (["--lr_milestones", "50", "20"], "--lr_milestones 50 20 must be positive iterations in "
                                      "increasing order"),
    # 20 images per class: 200 meta images leave none to train on, imbalanced or not.
    (["--num_meta", "200"], "--num_meta 200 leaves no training image for any class"),
    (["--batch_size", "0"], "--batch_size 0 must be a positive integer"),
    (["--save_step", "3", "--unroll_steps", "2"], "--save_step 3 is not a multiple of"),
    (["--resume"], None),  # the output folder has no checkpoint; message checked below
]


@pytest.mark.parametrize("flags, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_flag_exits_2(tiny_cifar10, tmp_path, capsys, flags, message):
    output_dir = tmp_path / "run"
    code = main.main(["--data_root", tiny_cifar10, "--output_dir", str(output_dir),
                      "--num_meta", "50", *flags] if "--num_meta" not in flags else
                     ["--data_root", tiny_cifar10, "--output_dir", str(output_dir), *flags])
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1
    assert error.startswith("error: ")
    if message is not None:
        assert message in error
    else:
        assert "no checkpoint.pt" in error
        assert "--save_step" in error
    assert not output_dir.exists()


def test_data_root_not_a_directory(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main.main(["--data_root", str(missing), "--output_dir", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert f"--data_root {str(missing)!r} is not a directory" in error
    assert not (tmp_path / "r").exists()


def test_data_root_without_layout(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main.main(["--data_root", str(empty), "--output_dir", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert "contains neither train/<class>/ and test/<class>/" in error
    assert "--download" in error
    assert os.listdir(empty) == []


def test_class_count_mismatch(tiny_cifar10, tmp_path, capsys):
    assert main.main(["--dataset", "cifar100", "--data_root", tiny_cifar10,
                      "--output_dir", str(tmp_path / "r")]) == 2
    assert "needs the same 100 in both" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda"], "--device cuda was given but CUDA is not available"),
    (["--fp16"], "--fp16 needs CUDA"),
])
def test_cuda_flags_without_cuda(tiny_cifar10, tmp_path, capsys, flags, message):
    assert main.main(["--data_root", tiny_cifar10, "--output_dir", str(tmp_path / "r"),
                      *flags]) == 2
    assert message in capsys.readouterr().err


def test_distributed_outside_launcher(tiny_cifar10, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main.main(["--data_root", tiny_cifar10, "--output_dir", str(tmp_path / "r"),
                      "--distributed"]) == 2
    assert "torchrun --nproc_per_node" in capsys.readouterr().err


def test_command_line_error_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "main.py", "--imbalanced_factor", "0", "--data_root", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "error: --imbalanced_factor 0.0 is below 1; use a value >= 1 " \
                            "(1 or no flag gives a balanced training subset)\n"
    assert result.stdout == ""


def test_help_describes_every_flag():
    parser = main.build_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no help text"
    text = parser.format_help()
    assert "--imbalanced_factor" in text
    assert "default: 0.1" in text


def test_nesterov_is_a_switch():
    assert main.build_parser().parse_args([]).nesterov is False
    assert main.build_parser().parse_args(["--nesterov"]).nesterov is True
    with pytest.raises(SystemExit):
        main.build_parser().parse_args(["--nesterov", "False"])
