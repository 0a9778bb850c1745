"""What a newcomer meets first on `wbc-edge run`: the final differential on stdout and the log on
stderr (so `run ... > out.txt` keeps the result), and a Pascal-VOC folder's JPEGImages/ named
after its slide."""

from __future__ import annotations

from runtime_models import GREEN, RED, make_onnx, write_images

from wbc_edge import cli
from wbc_edge.runtime.sample import derive_sample_id
from wbc_edge.runtime.sources import parse_uri


def test_run_prints_the_differential_on_stdout_and_the_log_on_stderr(tmp_path, capsys):
    model = make_onnx(tmp_path / "m.onnx")
    write_images(tmp_path / "S-7", [RED, RED, GREEN])
    argv = ["run", str(tmp_path / "S-7"), "--model", str(model), "--no-live"]
    assert cli.run([*argv, "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "Differential of sample S-7" in captured.out and "Neutrophil" in captured.out
    assert "3 of 3 cells counted" in captured.out  # the banner: counted of all, and review
    assert "Differential of sample" not in captured.err
    assert "3 items, 3 cells" in captured.err and "3 items" not in captured.out


def test_a_voc_jpegimages_folder_is_named_after_its_slide(tmp_path):
    (tmp_path / "slide-12" / "JPEGImages").mkdir(parents=True)
    assert derive_sample_id(parse_uri(str(tmp_path / "slide-12" / "JPEGImages"))) == "slide-12"
    assert derive_sample_id(parse_uri(f"{tmp_path}/slide-12/JPEGImages/*.jpg")) == "slide-12"
