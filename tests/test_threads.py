"""``intra_op_threads`` sets torch's intra-op thread count for a block and restores it."""

import pytest
import torch

from weightlab.threads import intra_op_threads


def test_sets_and_restores_also_on_error():
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
