"""Files identified by digest: the same tensors give the same bytes, wherever they are written."""

import torch

from core.files import save_tensors_atomic, sha256_of


def test_the_same_tensors_give_the_same_sha256_under_any_name(tmp_path):
    state = {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3), "n": torch.tensor(7)}
    first, second = tmp_path / "a" / "backbone.pt", tmp_path / "b" / "other.pt"
    save_tensors_atomic(state, first)
    save_tensors_atomic(state, second)
    assert sha256_of(first) == sha256_of(second)
    loaded = torch.load(second, weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["n"].item() == 7
    assert sorted(p.name for p in second.parent.iterdir()) == ["other.pt"]  # no temporary file left behind
    save_tensors_atomic({"w": state["w"] + 1}, first)
    assert sha256_of(first) != sha256_of(second)
