"""Fault injection: what a hostile environment does to a run, and what the run must do about it.

- stale content under the same path, size and mtime (the decoded-JPEG cache is keyed on content);
- a SIGKILL while the report is written (the folder never mixes two runs' outputs);
- a failed rerun over a good --out (the old outputs move to previous/, never look current);
- a full disk: on a small tmpfs in a private mount namespace where the platform allows it
  (``unshare -rm``), and as a simulated OSError(ENOSPC) at each kind of write: one line, exit 1,
  no temporary file left, and a rerun after freeing space resumes from what was written.
"""

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcurv import report
from jaxcurv.cli import main
from jaxcurv.data import load
from jaxcurv.data import npz as npz_source
from jaxcurv.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--models", "6", "--epochs", "1", "--num-probes", "2", "--bootstrap", "10",
        "--max-examples", "120", "--batch-size", "32", "--no-zero-order", "--quiet"]
OUTPUTS = ("scores.csv", "summary.json", "figures", "report.html")


def _cli(*argv: str) -> tuple[int, str]:
    """Exit status and stderr of an in-process ``jaxcurv`` call."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def _temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith("-tmp")]


def _one_run(out: Path) -> dict:
    """The summary of the one run whose complete output set is in ``out`` (asserting it is)."""
    present = {name for name in OUTPUTS if (out / name).exists()}
    assert present == set(OUTPUTS), present
    summary = json.loads((out / "summary.json").read_text())
    figures = {p.name for p in (out / "figures").iterdir()}
    assert figures == {Path(rel).name for rel in summary["figures"].values()}
    header = (out / "scores.csv").read_text().splitlines()[0]
    assert ("flipped" in header) == (summary["config"]["label_noise"] > 0)
    return summary


@pytest.fixture(scope="module")
def good_out(tmp_path_factory):
    """A finished tiny audit: the good --out that the faults below are injected into."""
    out = tmp_path_factory.mktemp("good") / "out"
    code, err = _cli("audit", *TINY, "--out", str(out))
    assert code == 0, err
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- stale content ------------------------------------------------------------------------------


def _jpeg(img: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(img).save(b, format="JPEG", quality=95)
    return b.getvalue()


def test_jpeg_cache_sees_new_content_under_the_same_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCURV_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    blobs = [_jpeg(im) for im in images]
    path = tmp_path / "d.npz"

    def write(order):  # the same JPEG blobs in another order: same bytes count, other images
        chunks = [blobs[i] for i in order]
        np.savez(path, train_jpeg=np.frombuffer(b"".join(chunks), np.uint8),
                 train_offsets=np.cumsum([0] + [len(c) for c in chunks]).astype(np.int64),
                 train_labels=np.arange(6) % 3, num_classes=np.int64(3))

    write(range(6))
    first = load(f"npz:{path}").images
    stat = os.stat(path)
    write(range(5, -1, -1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size and os.stat(path).st_mtime_ns == stat.st_mtime_ns
    second = load(f"npz:{path}").images
    np.testing.assert_array_equal(second, first[::-1])  # decoded again, not the stale images


def test_a_failed_cache_write_of_decoded_images_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCURV_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "d.npz"
    blob = _jpeg(np.zeros((8, 8, 3), np.uint8))
    np.savez(path, train_jpeg=np.frombuffer(blob * 2, np.uint8),
             train_offsets=np.array([0, len(blob), 2 * len(blob)], np.int64),
             train_labels=np.array([0, 1]))

    def full_disk(file, array, *args, **kwargs):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(npz_source.np, "save", full_disk)
    with pytest.warns(UserWarning, match="could not write the decoded-image cache"):
        assert load(f"npz:{path}").images.shape == (2, 8, 8, 3)
    assert not _temporary_files(tmp_path / "cache")


# --- output ownership ----------------------------------------------------------------------------


def test_retire_and_publish_keep_one_run_per_folder(tmp_path):
    out = tmp_path / "out"
    names = ("a.csv", "figs", "report.html")

    def write_set(folder: Path, tag: str) -> None:
        (folder / "figs").mkdir(parents=True)
        (folder / "figs" / f"{tag}.png").write_text(tag)
        (folder / "a.csv").write_text(tag)
        (folder / "report.html").write_text(tag)

    write_set(out, "one")
    assert report.retire_outputs(out, names) == out / report.PREVIOUS
    assert not any((out / n).exists() for n in names)
    assert (out / report.PREVIOUS / "a.csv").read_text() == "one"
    staging = out / report.STAGING
    write_set(staging, "two")
    report.publish_outputs(staging, out, names)
    assert [(out / "a.csv").read_text(), (out / "report.html").read_text()] == ["two", "two"]
    assert [p.name for p in (out / "figs").iterdir()] == ["two.png"] and not staging.exists()
    # an incomplete set (a kill before report.html) is deleted, previous/ keeps the last good one
    (out / "report.html").unlink()
    assert report.retire_outputs(out, names) is None
    assert not any((out / n).exists() for n in names)
    assert (out / report.PREVIOUS / "a.csv").read_text() == "one"


def test_writers_remove_their_temporary_file_when_the_disk_is_full(tmp_path, monkeypatch):
    real_write_text = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        real_write_text(self, text[:10], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full_disk)
    for write in (lambda p: report.write_json(p, {"a": 1}),
                  lambda p: report.write_html(p, title="t", sections=[])):
        with pytest.raises(OutputError, match="No space left on device") as err:
            write(tmp_path / "x")
        assert len(str(err.value).splitlines()) == 1 and err.value.exit_code == 1
    monkeypatch.undo()

    class FullDiskWriter:  # csv.writer whose first row half-fills the disk
        def __init__(self, file, *args, **kwargs):
            self.file = file

        def writerow(self, row):
            self.file.write("partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(csv, "writer", FullDiskWriter)
    with pytest.raises(OutputError, match="No space left on device"):
        report.write_csv(tmp_path / "x.csv", {"a": [1, 2]})
    monkeypatch.undo()
    assert not _temporary_files(tmp_path) and not list(tmp_path.iterdir())


def test_stale_figures_of_another_configuration_disappear(good_out, tmp_path):
    out = _copy(good_out, tmp_path / "out")
    (out / "figures" / "label_noise.png").write_bytes(b"from an earlier configuration")
    code, err = _cli("audit", *TINY, "--bootstrap", "11", "--out", str(out))
    assert code == 0, err
    summary = _one_run(out)
    assert summary["config"]["bootstrap"] == 11
    assert not (out / "figures" / "label_noise.png").exists()
    assert (out / report.PREVIOUS / "figures" / "label_noise.png").exists()


@pytest.mark.slow
def test_sigkill_while_the_report_is_written_leaves_no_mix(good_out, tmp_path):
    out = _copy(good_out, tmp_path / "out")
    before = json.loads((out / "summary.json").read_text())
    script = textwrap.dedent(f"""
        import os, signal, sys
        from jaxcurv.workflow import sections
        real = sections.figures
        def figures_then_kill(*args, **kwargs):
            real(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        sections.figures = figures_then_kill
        from jaxcurv.cli import main
        main({["audit", *TINY, "--bootstrap", "12", "--out", str(out)]!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / report.STAGING / "scores.csv").exists()  # killed with the report half written
    assert not any((out / n).exists() for n in OUTPUTS)   # nothing of either run looks current
    assert _one_run(out / report.PREVIOUS) == before
    code, err = _cli("audit", *TINY, "--bootstrap", "12", "--out", str(out))
    assert code == 0, err
    assert _one_run(out)["config"]["bootstrap"] == 12 and not (out / report.STAGING).exists()


# --- a full disk, simulated at each kind of write ------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_writing_the_report_exit_1_and_the_rerun_resumes(good_out, tmp_path,
                                                                        monkeypatch):
    from jaxcurv.report import figures as figure_module

    out = _copy(good_out, tmp_path / "out")
    before = json.loads((out / "summary.json").read_text())
    real_save = figure_module._save
    calls = []

    def save_then_full(fig, path):  # the third figure finds the disk full
        calls.append(path)
        return real_save(fig, path) if len(calls) < 3 else _enospc()

    monkeypatch.setattr(figure_module, "_save", save_then_full)
    code, err = _cli("audit", *TINY, "--bootstrap", "13", "--out", str(out))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err and "rerun the same command" in err
    assert not _temporary_files(out) and not any((out / n).exists() for n in OUTPUTS)
    assert _one_run(out / report.PREVIOUS) == before  # the good run, clearly not current
    monkeypatch.undo()
    code, err = _cli("audit", *TINY, "--bootstrap", "13", "--out", str(out))
    assert code == 0, err
    summary = _one_run(out)
    assert summary["config"]["bootstrap"] == 13
    assert {k for k, v in summary["timings_s"].items() if v == "cached"} >= {
        "predictions", "curvature", "proxies", "attacks"}


def test_full_disk_while_caching_a_stage_exit_1_and_the_rerun_resumes(good_out, tmp_path,
                                                                     monkeypatch):
    out = _copy(good_out, tmp_path / "out")
    real_savez = np.savez
    writes = []

    def savez_then_full(file, *args, **kwargs):  # the second entry finds the disk full
        writes.append(file)
        if len(writes) < 2:
            return real_savez(file, *args, **kwargs)
        Path(file).write_bytes(b"PK partial")
        return _enospc()

    monkeypatch.setattr(np, "savez", savez_then_full)
    argv = ["audit", *TINY, "--num-probes", "3", "--out", str(out)]  # new curvature stage
    code, err = _cli(*argv)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err and "cache" in err
    assert not _temporary_files(out)
    monkeypatch.undo()
    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
        assert main([a for a in argv if a != "--quiet"]) == 0
    assert "curvature: resuming from 1 of 6 cached chunks" in said.getvalue()
    assert _one_run(out)["config"]["num_probes"] == 3


# --- a full disk, for real ------------------------------------------------------------------------


def _private_tmpfs_works() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _private_tmpfs_works(),
                    reason="mounting a small tmpfs needs a private mount namespace (unshare -rm), "
                           "which this platform refuses; the simulated ENOSPC tests above cover "
                           "the same writes")
def test_full_tmpfs_one_line_exit_1_and_no_temporary_files(tmp_path):
    """A 2 MB disk cannot hold the first training checkpoint: one line naming the fix, exit 1,
    nothing temporary left on the disk (the simulated tests above show the rerun resuming)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    audit = [sys.executable, "-m", "jaxcurv", "audit", *TINY, "--out", str(mount / "out")]
    script = textwrap.dedent(f"""
        mount -t tmpfs -o size=2m tmpfs {mount} || exit 3
        {" ".join(audit)} 2> {tmp_path}/stderr; echo $? > {tmp_path}/rc
        find {mount} -name '*tmp*' > {tmp_path}/leftovers
    """)
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env={**os.environ,
                   "PYTHONPATH": str(ROOT)}, timeout=300, check=True)
    err = (tmp_path / "stderr").read_text().strip()
    assert (tmp_path / "rc").read_text().strip() == "1", err
    assert len(err.splitlines()) == 1 and "No space left on device" in err, err
    assert "free space" in err and "training resumes" in err
    assert (tmp_path / "leftovers").read_text() == ""
