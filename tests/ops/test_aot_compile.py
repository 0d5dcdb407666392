"""Every Triton kernel variant compiles ahead of time to sm_80 and sm_90 cubin, with no register spills.

Runs ``python -m zs2_kernels.ops.aot --json`` in a subprocess: the test session runs Triton in the
interpreter, which replaces the kernels the compiler needs.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zs2_kernels.ops import aot

ROOT = Path(__file__).resolve().parents[2]


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


def test_every_variant_is_also_compiled_as_a_real_launch_specialises_it(resources):
    """A launch with 16-byte aligned tensors and sizes divisible by 16 (SD latents) runs a variant specialised on
    them, with vectorised loads and stores and other registers: the spill and 64-bit tests above cover it only if
    it is compiled here, beside the variant without hints (misaligned views, odd sizes)."""
    suffix = ",aligned16"
    plain = sorted((row["kernel"], row["variant"], row["arch"]) for row in resources if suffix not in row["variant"])
    aligned = sorted((row["kernel"], row["variant"].removesuffix(suffix), row["arch"]) for row in resources
                     if suffix in row["variant"])
    assert plain == aligned
    # The hints reach the compiler: every aligned elementwise kernel vectorises. The search kernel reads a few
    # columns per row of a runtime width, which nothing vectorises.
    unvectorised = [(row["kernel"], row["variant"]) for row in resources if suffix in row["variant"]
                    and row["kernel"] != "_search_kernel" and not row["vector_accesses"]]
    assert not unvectorised


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


def test_address_walk_follows_offsets_carried_through_loops():
    """The original bug: the frame offset carried through the frame loop in i32 (``step += frame_size``, add.s32
    then mul.wide.s32). The walk goes from a loop variable to its init and its scf.yield operand, so it is flagged
    like the i32 product ``frame * frame_size``; the real kernels pass (test above)."""
    # PYTHONPATH: a script's own folder comes first on sys.path, and zs2_kernels must be this checkout's.
    env = dict(os.environ, TRITON_INTERPRET="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("aot_mutants.py"))], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert [op.split(" = ")[1].split()[0] for op in found["_product_offset_kernel"]] == ["arith.muli"], found
    assert [op.split(" = ")[1].split()[0] for op in found["_carried_offset_kernel"]] == ["arith.addi"], found
    assert all(op.endswith(": i32") for ops in found.values() for op in ops), found


LOOP_LISTING = """
  tt.func public @k(%x_ptr: !tt.ptr<f32> loc("x_ptr"(#loc)), %n: i32 loc("n"(#loc))) attributes {noinline = false} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c1_i32 = arith.constant 1 : i32 loc(#loc1)
    %c0_i64 = arith.constant 0 : i64 loc(#loc1)
    %s:2 = scf.for %i = %c0_i32 to %n step %c1_i32 iter_args(%at = %c0_i32, %w = %c0_i64) -> (i32, i64)  : i32 {
      %at_1 = arith.muli %at, %n : i32 loc(#loc2)
      scf.yield %at_1, %w : i32, i64 loc(#loc3)
    } loc(#loc4)
    scf.for %j = %c0_i32 to %n step %c1_i32  : i32 {
      %at_1 = arith.extsi %j : i32 to i64 loc(#loc5)
      %p = tt.addptr %x_ptr, %s#1 : !tt.ptr<f32>, i64 loc(#loc6)
    } loc(#loc7)
    %q = tt.addptr %x_ptr, %s#0 : !tt.ptr<f32>, i32 loc(#loc8)
    tt.return loc(#loc9)
  } loc(#loc)
"""


def test_address_walk_reads_names_per_region_and_results_per_position():
    """MLIR's printer reuses a name in sibling regions (two loops may each define ``%at_1``): the walk resolves a
    name where it is used. ``%s#0`` is the carried i32 product, ``%s#1`` a carried constant."""
    assert aot.narrow_address_arithmetic(LOOP_LISTING) == ["%at_1 = arith.muli %at, %n : i32"]
    assert aot.narrow_address_arithmetic(LOOP_LISTING.replace("%x_ptr, %s#0", "%x_ptr, %s#1")) == []


def test_address_walk_refuses_ir_it_cannot_follow():
    """A region op it does not model (scf.while) or a name defined nowhere raises instead of ending the walk."""
    loop = textwrap.dedent("""
        tt.func public @k(%x_ptr: !tt.ptr<f32>, %n: i32) {
          %r = scf.while (%a = %n) : (i32) -> i32 {
            scf.condition(%a) %a : i32
          } do {
          ^bb0(%b: i32):
            scf.yield %b : i32
          }
          %p = tt.addptr %x_ptr, %r : !tt.ptr<f32>, i32
        }
    """)
    with pytest.raises(ValueError, match="scf.while"):
        aot.narrow_address_arithmetic(loop)
    with pytest.raises(ValueError, match="%undefined"):
        aot.narrow_address_arithmetic("tt.func public @k(%x_ptr: !tt.ptr<f32>) {\n"
                                      "  %p = tt.addptr %x_ptr, %undefined : !tt.ptr<f32>, i32\n}")


def test_search_kernel_compiles_once_for_any_candidate_count():
    """R is a runtime argument (columns are reduced in fixed-width chunks): one binary per mode, and the resource
    test above (no spills) covers every R. On a GPU, tests/test_gpu_kernels.py counts the compiled variants."""
    from zs2_kernels.ops.noise import triton as noise_search

    variants = [spec for spec in noise_search.aot_specs() if spec[0] is noise_search._search_kernel]
    assert len(variants) == 2  # exact and paper
    for _, signature, constexprs, _ in variants:
        assert signature["num_candidates"] == "i32" and set(constexprs) == {"EXACT", "ROWS", "COLS"}
