"""assert_identical: two nested training states (tensors, dicts, lists) equal bit for bit, with the
path of the first difference. Shared by the resume and the data-parallel tests."""

from __future__ import annotations

import torch


def assert_identical(first, second, path="state"):
    if isinstance(first, torch.Tensor):
        assert torch.equal(first, second), f"{path} differs"
    elif isinstance(first, dict):
        assert first.keys() == second.keys(), f"{path} keys differ"
        for key in first:
            assert_identical(first[key], second[key], f"{path}.{key}")
    elif isinstance(first, (list, tuple)):
        assert len(first) == len(second), f"{path} lengths differ"
        for index, (a, b) in enumerate(zip(first, second)):
            assert_identical(a, b, f"{path}[{index}]")
    else:
        assert first == second, f"{path}: {first!r} != {second!r}"
