"""Out of memory from the real allocators becomes one line naming the setting to lower."""

import numpy as np
import pytest
import torch

from arcdiff.errors import ResourceError
from arcdiff.runs.faults import out_of_memory_names


def test_torch_and_numpy_out_of_memory_name_the_setting():
    with pytest.raises(ResourceError) as torch_oom, out_of_memory_names("eval.batch_size", 256):
        torch.empty(1 << 60, dtype=torch.uint8)  # 1 EiB: DefaultCPUAllocator refuses
    assert str(torch_oom.value) == (
        "out of memory asking for 1152921504.61 GB with eval.batch_size=256; lower it "
        "(e.g. --set eval.batch_size=64)"
    )
    numpy_oom = pytest.raises(ResourceError, match="lora.batch_size=32; lower it")
    with numpy_oom, out_of_memory_names("lora.batch_size", 32):
        np.empty(1 << 60, dtype=np.uint8)


def test_other_errors_pass_through():
    with pytest.raises(RuntimeError, match="shape"), out_of_memory_names("train.batch_size", 8):
        torch.zeros(2, 3) @ torch.zeros(2, 3)
