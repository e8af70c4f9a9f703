"""The shared multimodal plumbing: error policy, path confinement, image decoding, limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from iaa_eval.errors import DataError, UsageError
from iaa_eval.tasks.multimodal import ImageSource, Item, Problems, b64_image, first, inside


def test_problems_policy() -> None:
    with pytest.raises(DataError, match="bad row"):
        Problems("raise").report("bad row")
    skip = Problems("skip")
    skip.report("bad row")
    assert skip.reasons == ["bad row"]
    with pytest.raises(UsageError, match="--on-error 'ignore'"):
        Problems("ignore")


def test_inside(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    assert inside(tmp_path, "a.png", "f:1") == (tmp_path / "a.png").resolve()
    with pytest.raises(DataError, match=r"f:1: image path '\.\./a\.png' leaves the data folder"):
        inside(tmp_path / "sub", "../a.png", "f:1")
    with pytest.raises(DataError, match="f:1: image path '/etc/hostname' leaves"):
        inside(tmp_path, "/etc/hostname", "f:1")
    with pytest.raises(DataError, match=r"f:1: image file .*b\.png not found"):
        inside(tmp_path, "b.png", "f:1")


def test_image_source_decoding_and_bomb_limit(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.png")
    assert ImageSource("a", path=tmp_path / "a.png").open(None).size == (40, 30)
    with pytest.raises(DataError, match="a: image of 40x30 pixels exceeds the 1000-pixel limit"):
        ImageSource("a", path=tmp_path / "a.png").open(1000)
    truncated = (tmp_path / "a.png").read_bytes()[:60]
    with pytest.raises(DataError, match="t: cannot decode the image"):
        ImageSource("t", data=truncated).open(None)
    with pytest.raises(DataError, match="h: row without an image"):
        ImageSource("h", fetch=lambda: None).open(None)
    with pytest.raises(DataError, match="row 3: image field is not valid base64"):
        b64_image("not base64!", "row 3")


def test_first_limits_items_or_keys() -> None:
    items = [Item(str(i), "p", "t", None, {"g": i // 2}) for i in range(6)]
    assert [it.doc_id for it in first(items, 3)] == ["0", "1", "2"]
    assert [it.doc_id for it in first(items, 2, key=lambda it: it.meta["g"])] == ["0", "1", "2", "3"]
    assert first(items, None) == items



def test_a_task_logs_the_host_work_its_generation_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The batcher's wait counted from the task's start: earlier tasks' waits are not its own."""
    from types import SimpleNamespace

    from iaa_eval.rundir import SampleRecord
    from iaa_eval.tasks import multimodal as mm
    from tests.tasks.conftest import fake_context

    ctx = fake_context(lambda requests: [], None)
    ctx.model.batcher = SimpleNamespace(host_seconds=40.0)
    clock = mm.start(ctx)
    ctx.model.batcher.host_seconds += 2.5
    sample = SampleRecord("0", "q", "a", "a", True)
    with caplog.at_level("INFO", logger="iaa_eval.tasks.multimodal"):
        mm.result("t", ctx, clock, Problems("raise"), [sample], {}, "acc", {}, {})
    assert "t: 1 samples, 0 skipped" in caplog.text
    assert "(2.5s of it waiting for host work: tokenizing, image preprocessing)" in caplog.text
