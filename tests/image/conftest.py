import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are small: OpenMP threads only add overhead (a lot on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
