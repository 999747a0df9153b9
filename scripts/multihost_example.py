"""Multi-device / multi-host jaxcell run: one 3D model split over every global device.

Single process (all local devices, e.g. several GPUs of one host, or forced CPU devices)::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python scripts/multihost_example.py

Several processes (one per host or per GPU) — set, in every process::

    JAXCELL_COORDINATOR=host0:12345   # address:port of process 0
    JAXCELL_NUM_PROCESSES=2
    JAXCELL_PROCESS_ID=0              # 0 .. N-1, different in every process

and run the same command in each (``scripts/launch_multihost.sh`` does this for a
local smoke test). Every process must build the same model and state: jaxcell is
SPMD, each process holds its slabs of the field and a replica of the cells.

Usage::

    python scripts/multihost_example.py [--n 64] [--steps 20] [--solver implicit] [--cells 1000]
"""

from __future__ import annotations

import argparse
import os
import time


def init_distributed() -> bool:
    """``jax.distributed.initialize`` from the JAXCELL_* variables; False when they are not set."""
    import jax

    keys = ("JAXCELL_COORDINATOR", "JAXCELL_NUM_PROCESSES", "JAXCELL_PROCESS_ID")
    if not all(os.environ.get(k) for k in keys):
        return False
    kwargs = {}
    local = os.environ.get("JAXCELL_LOCAL_DEVICE_IDS")  # e.g. "0" to pin one GPU per process
    if local:
        kwargs["local_device_ids"] = [int(i) for i in local.split(",")]
    jax.distributed.initialize(coordinator_address=os.environ["JAXCELL_COORDINATOR"],
                               num_processes=int(os.environ["JAXCELL_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAXCELL_PROCESS_ID"]), **kwargs)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=64, help="cube edge (voxels); divisible by the device count to split")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--dt", type=float, default=1.0, help="s")
    p.add_argument("--solver", default="implicit", choices=("implicit", "lod", "explicit", "spectral"))
    p.add_argument("--cells", type=int, default=1000, help="secreting cells with receptors")
    a = p.parse_args()

    distributed = init_distributed()  # before any other jax call

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils

    import jaxcell as jc

    pid, nproc = jax.process_index(), jax.process_count()
    print(f"[process {pid}/{nproc}] distributed={distributed} local devices={jax.local_devices()} "
          f"global device count={jax.device_count()}", flush=True)

    mesh = jax.make_mesh((jax.device_count(),), ("x",))
    n, h = a.n, 10.0
    grid = jc.Grid((n, n, n), spacing=h)
    model = jc.Model(grid, jc.Substrate("IL-2", diffusion=10.0, decay=2.8e-5), solver=a.solver,
                     max_diffusion=10.0 if a.solver == "explicit" else None)
    rng = np.random.default_rng(0)  # same seed in every process: identical replicas of the cells
    pos = (rng.random((a.cells, 3)) * n * h).astype(np.float32)
    cells = jc.Cells(jnp.asarray(pos), secretion=50.0, uptake=0.0,
                     receptors=jc.Receptors(total=1e3, kon=0.0515, koff=2.3e-4, kint=1.1e-3))
    state = jc.shard(model.init(cells), mesh)
    if pid == 0:
        print(f"mesh {dict(mesh.shape)}; fields {state.fields.shape} sharding {state.fields.sharding.spec}",
              flush=True)

    t0 = time.perf_counter()
    out, _ = jc.simulate(model, state, t_end=a.steps * a.dt, dt=a.dt)
    out.fields.block_until_ready()
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out, _ = jc.simulate(model, state, t_end=a.steps * a.dt, dt=a.dt)
    out.fields.block_until_ready()
    t_run = time.perf_counter() - t0

    b = jc.budget(out)  # global reductions: replicated scalars, gathered to every process
    b = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in b.items()}
    if pid == 0:
        print(f"{a.steps} steps of {a.solver} on {n}³ with {a.cells} cells over {jax.device_count()} devices "
              f"({nproc} processes): first call {t_first:.2f} s, second {t_run:.3f} s "
              f"({1e3 * t_run / a.steps:.2f} ms/step)")
        for k in ("secreted", "fields", "bound", "internalised", "decayed", "residual"):
            print(f"  {k:12s} {float(b[k].ravel()[0]):.6g}")
        rel = abs(float(b["residual"].ravel()[0])) / max(float(b["secreted"].ravel()[0]), 1e-30)
        print(f"  |residual|/secreted = {rel:.2e}", flush=True)
    if distributed:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
