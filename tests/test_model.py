"""Model and State (jaxcell/model.py): what is refused before anything is allocated."""

import numpy as np
import pytest

import jaxcell as jc
from jaxcell.model import available_memory, memory_estimate


def test_a_grid_too_big_for_memory_is_refused_with_what_it_needs():
    model = jc.Model(jc.Grid((4000, 4000, 4000), 1.0), jc.Substrate("s", 1.0), solver="explicit")
    # float64 (the tests' precision): 6.4e10 voxels × 8 B × (2 + 1 scratch field) = 1430 GiB
    assert memory_estimate(model, np.float64, 0) == 4000**3 * 8 * 3
    with pytest.raises(MemoryError, match=r"needs about 1\.43e\+03 GiB; .* GiB are free: use a coarser spacing"):
        model.init()


def test_available_memory_is_known_on_this_machine():
    free = available_memory()
    assert free is not None and free > 2**28
