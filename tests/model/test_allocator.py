"""fathom gives CUDA's caching allocator expandable segments unless the user chose its settings."""

import os
from pathlib import Path

from fathom.cli import main
from fathom.model.allocator import (
    ALLOCATOR_VARIABLES,
    EXPANDABLE_SEGMENTS,
    allocator_settings,
    prefer_expandable_segments,
)

SHIPPED_7B = Path(__file__).resolve().parents[2] / "configs" / "qwen2.5-7b-maritime-32k.yaml"


def test_expandable_segments_are_set_only_where_the_user_set_nothing():
    environ = {}
    assert prefer_expandable_segments(environ)
    assert environ == {"PYTORCH_CUDA_ALLOC_CONF": EXPANDABLE_SEGMENTS}
    for name in ALLOCATOR_VARIABLES:
        mine = {name: "max_split_size_mb:512"}
        assert not prefer_expandable_segments(mine)
        assert mine == {name: "max_split_size_mb:512"}


def test_every_fathom_command_sets_it_before_cuda_is_touched(monkeypatch, capsys):
    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert allocator_settings() == "default"
    assert main(["plan", "--config", str(SHIPPED_7B), "--json", "--gpu", "rtx4090"]) == 0
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == EXPANDABLE_SEGMENTS
    assert allocator_settings() == f"PYTORCH_CUDA_ALLOC_CONF={EXPANDABLE_SEGMENTS}"

    capsys.readouterr()


def test_train_sets_it_for_callers_other_than_the_cli(monkeypatch):
    """The guide's script and notebooks call fathom.train.loop.train without the CLI."""
    import pytest

    import fathom.train.loop as loop
    from fathom.config import config_from_dict

    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started  # the first thing train does after choosing the allocator: stop there

    monkeypatch.setattr(loop.distributed, "setup", started)
    with pytest.raises(Started):
        loop.train(config_from_dict({}))
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == EXPANDABLE_SEGMENTS
