"""The shared-memory pool on its own: regions reused across calls, grown when needed, bounded, and freed."""
from __future__ import annotations

import numpy as np

from clients.shm import ShmPool, is_already_registered, is_regions_lost


def test_regions_are_reused_grown_and_bounded():
    pool = ShmPool("system", max_slots=2)
    try:
        small = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
        outputs = {"y": (np.dtype(np.float32), (2, 3))}
        first = pool.lease(small, outputs)
        names = {key: region.name for key, region in first.slot.regions.items()}
        first.slot.regions["out:y"].registered = True
        pool.release(first)
        again = pool.lease(small, outputs)
        assert {key: region.name for key, region in again.slot.regions.items()} == names  # reused, not recreated
        assert again.retired == []
        pool.release(again)
        big = {"x": np.zeros((4096, 4), np.float32)}  # 64 KiB outgrows the first 4 KiB region
        grown = pool.lease(big, outputs)
        assert [r.name for r in grown.retired] == [names["in:x"]]
        assert grown.slot.regions["in:x"].byte_size >= big["x"].nbytes
        assert grown.unregistered() and all(r.name != names["out:y"] for r in grown.unregistered())
        second = pool.lease(small, outputs)
        assert second is not None and second.slot is not grown.slot
        assert pool.lease(small, outputs) is None  # max_slots in flight: the third call goes in-band
        pool.release(second)
        # what the server writes is read back as a copy
        region = second.slot.regions["out:y"]
        import tritonclient.utils.shared_memory as shm

        shm.set_shared_memory_region(region.handle, [np.full((2, 3), 7.0, np.float32)])
        read = pool.read_outputs(second, {"y": [2, 3]})
        np.testing.assert_array_equal(read["y"], np.full((2, 3), 7.0, np.float32))
        for retired in grown.retired:
            pool.destroy(retired)
        pool.release(grown)
    finally:
        for region in pool.close():
            pool.destroy(region)
    import tritonclient.utils.shared_memory as shm

    assert not [k for k in shm.mapped_shared_memory_regions() if k.startswith(f"/{pool.prefix}")]


def test_triton_messages_about_regions_are_recognised():
    assert is_regions_lost("Unable to find shared memory region: 'ic1_0_0'")
    assert is_already_registered("shared memory region 'ic1_0_0' already in manager")
    assert not is_regions_lost("unexpected shape for input 'x'")
