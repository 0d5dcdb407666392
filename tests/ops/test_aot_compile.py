"""Every Triton kernel variant compiles ahead of time to sm_80 and sm_90 cubin, with no register spills.

Runs ``python -m zs2_kernels.ops.aot --json`` in a subprocess: the test session runs Triton in the
interpreter, which replaces the kernels the compiler needs.
"""

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def resources():
    env = dict(os.environ, TRITON_INTERPRET="0")
    result = subprocess.run([sys.executable, "-m", "zs2_kernels.ops.aot", "--json"], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_variant_compiles_for_both_archs(resources):
    kernels = {row["kernel"] for row in resources}
    assert kernels == {"_momentum_update_kernel", "_kl_partial_sums_kernel", "_search_kernel", "_compose_kernel",
                       "_philox_normal_kernel"}
    for kernel in kernels:
        assert {row["arch"] for row in resources if row["kernel"] == kernel} == {80, 90}


def test_no_register_spills(resources):
    spilled = [row for row in resources if row["local_bytes"]]
    assert not spilled, f"register spills: {spilled}"
    # The only stack use allowed: the 32-byte frame libdevice's sin/cos keep for their slow-path argument
    # reduction, in the kernels that draw Philox normals (Box-Muller); no other kernel may use the stack.
    stack = {(row["kernel"], row["variant"], row["stack_bytes"]) for row in resources if row["stack_bytes"]}
    assert all(bytes_ <= 32 and ("PHILOX=True" in variant or kernel == "_philox_normal_kernel")
               for kernel, variant, bytes_ in stack), stack
    assert all(0 < row["registers"] <= 128 for row in resources)
    print("\n" + "\n".join(f"{r['kernel']} sm_{r['arch']} regs={r['registers']} smem={r['shared_bytes']} "
                           f"{r['variant']}" for r in resources))


def test_addresses_and_philox_counters_are_computed_in_64_bits(resources):
    """No i32 multiply/add feeds a pointer offset or a Philox counter (it wraps once one (guidance half, video)
    group holds 2**31 elements: SDXL 1024² at 821 frames), and every Philox counter is 64-bit."""
    narrow = {(row["kernel"], row["variant"]): row["narrow_arithmetic"] for row in resources
              if row["narrow_arithmetic"]}
    assert not narrow, f"32-bit arithmetic reaching an address or counter: {narrow}"
    philox = [row for row in resources if "PHILOX=True" in row["variant"] or row["kernel"] == "_philox_normal_kernel"]
    assert philox and all(row["wide_counter"] for row in philox)


def test_search_kernel_compiles_once_for_any_candidate_count():
    """R is a runtime argument (columns are reduced in fixed-width chunks): one binary per mode, and the resource
    test above (no spills) covers every R. On a GPU, tests/test_gpu_kernels.py counts the compiled variants."""
    from zs2_kernels.ops.noise import triton as noise_search

    variants = [spec for spec in noise_search.aot_specs() if spec[0] is noise_search._search_kernel]
    assert len(variants) == 2  # exact and paper
    for _, signature, constexprs, _ in variants:
        assert signature["num_candidates"] == "i32" and set(constexprs) == {"EXACT", "ROWS", "COLS"}
