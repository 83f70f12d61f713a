"""Every user-facing error of `jaxcurv audit` is one line on stderr with exit status 2, before
any training: bad sizes and seeds, a bad step, an --out that is a file, damaged npz files."""

import numpy as np
import pytest

from jaxcurv.cli import main

QUICK = ["--models", "6", "--epochs", "1", "--quiet"]


def _bad_npz(tmp_path, kind: str) -> str:
    path = tmp_path / f"{kind}.npz"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # a real npz cut in half
        full = tmp_path / "full.npz"
        np.savez(full, images=np.zeros((64, 8, 8, 1), np.float32), labels=np.zeros(64, np.int32))
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return f"npz:{path}"


@pytest.mark.parametrize("flags, needle", [
    (["--seed", str(2**63)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--models", str(10**12)], "--models"),
    (["--batch-size", str(10**12)], "--batch-size"),
    (["--num-probes", str(10**12)], "--num-probes"),
    (["--h", "inf"], "--h"),
    (["--model-kwargs", "[1, 2]"], "--model-kwargs"),
    (["--bootstrap", "1000000000000"], "--bootstrap"),
    (["--h", "1e12"], "--h must be <= 0.5"),
    (["--fraction", "0.6"], "--fraction 0.6 with --models 6"),
    (["--process-id", "0"], "--coordinator"),
    (["--num-processes", "2"], "--coordinator"),
    (["--epochs", "1000001"], "--epochs"),
])
def test_bad_flags_exit_2_with_one_line(flags, needle, tmp_path, capsys):
    assert main(["audit", *QUICK, *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_out_that_is_a_file_exits_2(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("not a folder")
    assert main(["audit", *QUICK, "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("kind", ["random", "empty", "truncated"])
def test_damaged_npz_exits_2_without_pickle_advice(kind, tmp_path, capsys):
    assert main(["audit", *QUICK, "--dataset", _bad_npz(tmp_path, kind),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pickle" not in err.lower(), err


def test_no_prefix_matching_of_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["audit", *QUICK, "--num-probe", "3", "--out", str(tmp_path / "out")])
    assert err.value.code == 2 and "unrecognized arguments: --num-probe" in capsys.readouterr().err


@pytest.mark.parametrize("flags, needle", [
    (["--seed", "-5"], "--seed"),
    (["--num-probes", "0"], "--num-probes"),
])
def test_curvature_command_checks_like_the_audit(flags, needle, tmp_path, capsys):
    assert main(["curvature", "--epochs", "1", *flags, "--out", str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_curvature_command_checks_its_output_before_training(tmp_path, capsys, monkeypatch):
    from jaxcurv import ensemble

    def never(*args, **kwargs):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(ensemble, "fit_one", never)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(["curvature", "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a folder" in err and len(err.splitlines()) == 1, err
    blocked = tmp_path / "file"
    blocked.write_text("x")
    assert main(["curvature", "--out", str(blocked / "c.csv")]) == 2
    assert "--out" in capsys.readouterr().err
