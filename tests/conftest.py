"""Test configuration: float64 for accuracy oracles (see docs/VERIFICATION.md), 4 CPU devices."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# no compilation cache under $HOME from the CLI's tests (test_startup turns a tmp one on)
os.environ["JAXCELL_CACHE"] = "off"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
