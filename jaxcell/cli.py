"""The ``jaxcell`` command line.

::

    jaxcell run [SCENARIO.toml | PhysiCell_settings.xml | builtin-name] [--out DIR] [--resume] [--set KEY=VALUE ...]
    jaxcell run --list                    # the built-in scenarios
    jaxcell fit SPEC.toml [--out DIR]     # fit parameters to a measured profile (jaxcell.fit_cli)
    jaxcell info                          # versions, devices, precision

A bad scenario or data file exits with status 2 and one line naming the file,
the key and the fix, and creates no output. Exit status 3: a run stopped early
(``--stop-after-chunks``, a test hook); 130: interrupted by Ctrl-C (continue
with ``--resume``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


CACHE_ENV = "JAXCELL_CACHE"


def cache_dir() -> Path | None:
    """Where ``jaxcell run`` and ``jaxcell fit`` keep compiled XLA programs between runs, or None (off).

    ``$JAXCELL_CACHE`` names the folder; ``0``, ``off``, ``no`` or empty switch the
    cache off. Default: ``$XDG_CACHE_HOME/jaxcell/jax`` (``~/.cache/jaxcell/jax``).
    """
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "no", "false") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxcell" / "jax"


def _enable_compilation_cache() -> None:
    """Switch on JAX's persistent compilation cache (see :func:`cache_dir`); a cache that cannot be made is skipped."""
    where = cache_dir()
    if where is None:
        return
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # no cache, same results: compiling again is only slower
    if not os.access(where, os.W_OK | os.X_OK):
        return  # a folder we cannot write: JAX would warn at every compile
    import jax

    jax.config.update("jax_compilation_cache_dir", str(where))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _out_of_memory(e: BaseException) -> bool:
    """An allocation failure reported by XLA (``JaxRuntimeError: RESOURCE_EXHAUSTED``) or NumPy."""
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "Unable to allocate" in text


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    print(f"jaxcell: warning: {message}", file=sys.stderr)


def _err(msg: str) -> int:
    print(f"jaxcell: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxcell", description="Paracrine signalling simulations (µm, s).")
    sub = p.add_subparsers(dest="command", metavar="{run,fit,info}")
    r = sub.add_parser("run", help="run a scenario (TOML file or built-in name) and write its outputs",
                       description="Run a scenario and write fields.zarr, summary.json and PNG figures to DIR.")
    r.add_argument("scenario", nargs="?", default=None,
                   help="a scenario .toml file, a PhysiCell settings .xml file or a built-in name "
                        "(default: paracrine_niche)")
    r.add_argument("--out", default="jaxcell-out", metavar="DIR", help="output folder (default ./jaxcell-out)")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run from its last snapshot")
    r.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a scenario value (TOML syntax), e.g. --set run.t_end=60 --set cells[1].count=100")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    r.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures (faster)")
    r.add_argument("--stop-after-chunks", type=int, default=None, help=argparse.SUPPRESS)
    f = sub.add_parser("fit", help="fit parameters to a measured profile (CSV) described by SPEC.toml")
    f.add_argument("spec", help="fit specification (TOML)")
    f.add_argument("--out", default="jaxcell-fit", metavar="DIR", help="output folder (default ./jaxcell-fit)")
    sub.add_parser("info", help="versions of jaxcell and its dependencies, devices, float precision")
    return p


def _cmd_list() -> int:
    from jaxcell.scenario import DEFAULT, builtin_scenarios

    for name, title in builtin_scenarios().items():
        mark = " (default)" if name == DEFAULT else ""
        print(f"{name:20s} {title}{mark}")
    return 0


def _continue_command(args: argparse.Namespace, overrides: Sequence[str]) -> str:
    """The shell command that continues this run: every --set value quoted for the shell."""
    words = ["jaxcell", "run", *([args.scenario] if args.scenario else []), "--out", args.out]
    for o in overrides:
        words += ["--set", o]
    return shlex.join([*words, "--resume"])


def _cmd_run(args: argparse.Namespace) -> int:
    if args.list:
        return _cmd_list()
    from jaxcell.io import OutputError, StopRequested, require_io, run_scenario, saved_overrides
    from jaxcell.scenario import ScenarioError, load, source_label

    overrides = list(args.overrides)
    if args.resume and not overrides:  # the interrupted run's --set values, if it ran this scenario
        overrides = saved_overrides(args.out, source_label(args.scenario)) or []
        if overrides:
            print(f"jaxcell: resuming with the interrupted run's settings: "
                  f"{' '.join('--set ' + shlex.quote(o) for o in overrides)}", file=sys.stderr)
    try:
        require_io(args.figures, check_only=True)
        sc = load(args.scenario, overrides)
    except (ScenarioError, OutputError) as e:
        return _err(str(e))
    except Exception as e:  # noqa: BLE001 - MemoryError, or XLA's RESOURCE_EXHAUSTED while building arrays
        if not (isinstance(e, MemoryError) or _out_of_memory(e)):
            raise
        return _err(f"{args.scenario or 'the scenario'}: out of memory while building it "
                    f"({str(e).splitlines()[0][:160]}); use a smaller grid.shape or a coarser grid.spacing")
    hint = _continue_command(args, overrides)
    try:
        summary = run_scenario(sc, args.out, resume=args.resume, progress=args.progress,
                               stop_after_chunks=args.stop_after_chunks, figures=args.figures,
                               overrides=overrides)
    except (ScenarioError, OutputError) as e:
        return _err(str(e))
    except MemoryError as e:
        return _err(f"{sc.source}: grid: {e or 'out of memory'}; in the scenario: a smaller grid.shape or a "
                    f"larger grid.spacing (e.g. --set grid.shape=[...])")
    except OSError as e:
        where = e.filename or args.out
        return _err(f"{where}: {e.strerror or e}; choose an --out in a folder you can write to, with free space")
    except StopRequested as e:
        print(f"jaxcell: {e.what}; continue with: {hint}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"jaxcell: interrupted; continue with: {hint}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - XLA's allocator failing is a JaxRuntimeError, not a MemoryError
        if not _out_of_memory(e):
            raise
        return _err(f"{sc.source}: grid: the run ran out of memory ({str(e).splitlines()[0][:160]}); in the "
                    "scenario: a smaller grid.shape or a larger grid.spacing (e.g. --set grid.shape=[...])")
    frac = summary.get("fraction_responders_activated")
    states: list[str] = []
    if frac is not None and sc.n_cells:  # what the scenario calls its responders' state ("hypoxic", ...)
        import numpy as np

        resp, tid = sc.has_activation(), np.asarray(sc.cells.type)
        states = sorted({sc.state_name(j) for j in range(len(sc.types)) if (resp & (tid == j)).any()})
    act = "" if frac is None else f", {100 * frac:.1f}% of responders {' / '.join(states) or 'activated'}"
    print(f"jaxcell: {sc.name}: {summary['steps']} steps to t = {summary['t_end_s']:g} s in "
          f"{summary['run_seconds']:.1f} s{act}; outputs in {args.out}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    try:
        fit_cli = importlib.import_module("jaxcell.fit_cli")
    except ImportError as e:
        return _err(f"jaxcell fit is not available in this installation (jaxcell.fit_cli: {e})")
    fn = getattr(fit_cli, "run_fit_cli", None)
    if fn is None:
        return _err("jaxcell fit is not available in this installation (jaxcell.fit_cli.run_fit_cli is missing)")
    from jaxcell.scenario import ScenarioError

    try:
        rc = fn(args.spec, args.out)
    except ScenarioError as e:
        return _err(str(e))
    return int(rc) if isinstance(rc, int) else 0


def _cmd_info() -> int:
    from importlib import metadata

    import jax
    import jax.numpy as jnp

    from jaxcell._version import __version__

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    rows = [("jaxcell", __version__), ("jax", jax.__version__), ("jaxlib", version("jaxlib")),
            ("numpy", version("numpy")), ("optax", version("optax"))]
    for extra in ("zarr", "xarray", "matplotlib"):
        rows.append((f"{extra} (jaxcell[io])", version(extra)))
    rows.append(("python", sys.version.split()[0]))
    rows.append(("backend", jax.default_backend()))
    rows.append(("devices", ", ".join(str(d) for d in jax.devices())))
    x64 = bool(jax.config.read("jax_enable_x64"))
    rows.append(("default float", f"{jnp.result_type(float)} (jax_enable_x64={x64}; "
                                  f"set JAX_ENABLE_X64=1 for float64)"))
    width = max(len(k) for k, _ in rows) + 1
    for k, v in rows:
        print(f"{k:{width}s} {v}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcell`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        if not args.list:
            _enable_compilation_cache()
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line each, no source excerpt
            return _cmd_run(args)
    if args.command == "fit":
        _enable_compilation_cache()
        return _cmd_fit(args)
    if args.command == "info":
        return _cmd_info()
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
