"""benchmarks/sass_census.py reads cuobjdump listings: its parsing against a hand-written one."""

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "sass_census.py"
_spec = importlib.util.spec_from_file_location("sass_census", _PATH)
sass_census = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sass_census)

LISTING = """
	code for sm_90
		Function : _Z3onev
	.headerflags	@"EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
                                                                          /* 0x000fe20000000800 */
        /*0010*/                   ISETP.NE.AND P0, PT, R1, RZ, PT ;      /* 0x000000ff0100720c */
        /*0020*/              @!P0 BRA 0x60 ;                              /* 0x0000000000088947 */
        /*0030*/                   FADD.RZ R2, R1, 8388608 ;              /* 0x4b00000001027421 */
        /*0040*/                @P0 FMUL R3, RZ, R2 ;                      /* 0x00000002ff030220 */
        /*0050*/                   FFMA R4, -R3, R2, R1 ;                 /* 0x0000000203047223 */
        /*0060*/                   STS [R0], R4 ;                         /* 0x0000000400007388 */
        /*0070*/                   EXIT ;                                 /* 0x000000000000794d */
		..........
		Function : _Z3twov
        /*0000*/                   FMUL R1, R2, R3 ;                      /* 0x0000000302017220 */
        /*0010*/                   EXIT ;                                 /* 0x000000000000794d */
"""


def test_opcode_drops_guard_and_modifiers():
    assert sass_census.opcode("@!P0 BRA 0x60") == "BRA"
    assert sass_census.opcode("FADD.RZ R2, R1, 8388608") == "FADD"
    assert sass_census.opcode("ISETP.NE.AND P0, PT, R1, RZ, PT") == "ISETP"


def test_functions_are_split_by_name_with_their_instructions():
    found = sass_census.functions(LISTING)
    assert list(found) == ["_Z3onev", "_Z3twov"]
    assert [address for address, _ in found["_Z3onev"]] == [0x0, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70]
    assert found["_Z3twov"] == [(0x0, "FMUL R1, R2, R3"), (0x10, "EXIT")]


def test_blocks_end_after_control_flow_and_start_at_branch_targets():
    one = sass_census.functions(LISTING)["_Z3onev"]
    starts_and_lengths = [(block[0][0], len(block)) for block in sass_census.blocks(one)]
    # the branch ends the first block; 0x60, its target, starts the last, which EXIT ends
    assert starts_and_lengths == [(0x0, 3), (0x30, 3), (0x60, 2)]


def test_census_ranks_the_longest_blocks_with_their_opcodes():
    result = sass_census.census(sass_census.functions(LISTING)["_Z3onev"], longest=2)
    assert result["instructions"] == 8
    assert [(b["start"], b["length"]) for b in result["blocks"]] == [(0x0, 3), (0x30, 3)]
    assert dict(result["blocks"][1]["opcodes"]) == {"FADD": 1, "FMUL": 1, "FFMA": 1}
