"""BioFVM's LOD scheme and PhysiCell's set-up, transcribed in plain NumPy (float64) from
MathCancer/PhysiCell's C++ (BioFVM_solvers.cpp, BioFVM_microenvironment.cpp, BioFVM_basic_agent.cpp):
an oracle for jaxcell's ``solver="lod"`` and its PhysiCell reader. Arrays are indexed [i, j(, k)]
= (x, y(, z)); times and rates in PhysiCell's own units (min)."""

from __future__ import annotations

import numpy as np

FACE_ORDER = ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax")


def thomas(rho: np.ndarray, axis: int, c1: float, c2: float) -> np.ndarray:
    """One BioFVM sweep along ``axis``: (1 + c2 − c1·Δ) x = rho with no-flux ends (constant3a at the
    ends), c1 = dt·D/dx², c2 = the sweep's share of dt·decay; BioFVM's precomputed Thomas factors."""
    x = np.moveaxis(rho, axis, 0).copy()
    n = x.shape[0]
    if n == 1:
        return np.moveaxis(x / (1 + c2), 0, axis)
    denom = np.full(n, 1 + 2 * c1 + c2)
    denom[0] = denom[-1] = 1 + c1 + c2
    cx = np.full(n, -c1)
    cx[0] /= denom[0]
    for i in range(1, n):
        denom[i] += c1 * cx[i - 1]
        cx[i] /= denom[i]
    x[0] = x[0] / denom[0]
    for i in range(1, n):
        x[i] = (x[i] + c1 * x[i - 1]) / denom[i]
    for i in range(n - 2, -1, -1):
        x[i] = x[i] - cx[i] * x[i + 1]
    return np.moveaxis(x, 0, axis)


def dirichlet_nodes(shape: tuple[int, ...], faces: dict[str, tuple[list[bool], list[float]]],
                    n_sub: int) -> tuple[np.ndarray, np.ndarray]:
    """initialize_microenvironment's outer Dirichlet nodes: per face (activation per substrate,
    value per substrate) in BioFVM's face order, each face overwriting its whole layer's
    activation and value vectors (a later face wins at edges). Returns (active, value),
    ``(S, *shape)``."""
    active = np.zeros((n_sub,) + shape, bool)
    value = np.zeros((n_sub,) + shape)
    for f in FACE_ORDER:
        if f not in faces:
            continue
        act, val = faces[f]
        axis = "xyz".index(f[0])
        idx = [slice(None)] * len(shape)
        idx[axis] = 0 if f.endswith("min") else shape[axis] - 1
        for s in range(n_sub):
            active[(s, *idx)] = act[s]
            value[(s, *idx)] = val[s]
    return active, value


def lod_step(rho: np.ndarray, dt: float, dx: float, D: list[float], decay: list[float], active: np.ndarray | None,
             value: np.ndarray | None) -> np.ndarray:
    """simulate_diffusion_decay: Dirichlet values imposed, a sweep per axis (decay split in 1/ndim), imposed
    again after each; ``rho`` is ``(S, *shape)``; 2D uses the 2D solver's decay/2, 3D decay/3."""
    rho = rho.copy()
    ndim = rho.ndim - 1

    def impose(r: np.ndarray) -> np.ndarray:
        return r if active is None else np.where(active, value, r)

    for axis in range(ndim):
        rho = impose(rho)
        for s in range(rho.shape[0]):
            rho[s] = thomas(rho[s], axis, dt * D[s] / dx**2, dt * decay[s] / ndim)
    return impose(rho)


def secrete(rho: np.ndarray, cells: list[dict], dt: float, voxel_volume: float) -> np.ndarray:
    """Basic_Agent::simulate_secretion_and_uptake for each cell in order: per substrate
    ρ ← (ρ + dt·V/V_v·S·T)/(1 + dt·V/V_v·(S + U)), then ρ += dt·E/V_v; a cell is a dict with
    ``voxel`` (index tuple), ``V`` (µm³) and per-substrate arrays ``S``, ``T``, ``U``, ``E``."""
    rho = rho.copy()
    for c in cells:
        k = dt * c["V"] / voxel_volume
        for s in range(rho.shape[0]):
            v = (s, *c["voxel"])
            rho[v] = (rho[v] + k * c["S"][s] * c["T"][s]) / (1 + k * (c["S"][s] + c["U"][s]))
            rho[v] += c["E"][s] * dt / voxel_volume
    return rho
