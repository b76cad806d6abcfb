"""Instruction census of the fast kernels' machine code (SASS), read without a GPU.

The latency-bound sizes (16x500x512) pay per instruction of each step's straight-line code
(NOTES.md: ncu's ~4.3 cycles per instruction, one warp per scheduler). This counts those
instructions from the built extension, so a change to the step can be predicted on any machine
with the CUDA compiler before it costs device time. It lists, per kernel instance, its longest
straight-line blocks (the unrolled chunk of steps: forward kChunk = 16 steps, backward K = 8 per
recomputation and per reverse walk) with their instructions by opcode.

    python -m exodus_jit build --cuda             # TORCH_CUDA_ARCH_LIST=9.0 for the H200's code
    python benchmarks/sass_census.py --object ~/.cache/exodus-jit/exodus_kernels_cuda-*/cuda_membrane_wide.cuda.o

Needs `cuobjdump`: CUDA's bin folder, or `pip download --no-deps nvidia-cuda-cuobjdump` unzipped
(`--cuobjdump PATH`). Default kernels: float32 LIF with sinabs' default options (MultiSpike,
MembraneSubtract, no clipping), without the synaptic stage.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# a SASS line: /*0a30*/  [@P0 ]OPCODE operands ;
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_FUNCTION = re.compile(r"^\s*Function : (\S+)")
# control flow ends a straight-line block; so does a convergence barrier's sync
_BLOCK_ENDS = ("BRA", "EXIT", "RET", "BSYNC", "WARPSYNC", "CALL", "BREAK", "JMP")
DEFAULT_CELL = "CellIfLNS_9SpikeKindE1ELNS_9ResetKindE0ELb0EEE"  # Cell<float, Multi, Subtract, no clip>

Instruction = Tuple[int, str]


def opcode(text: str) -> str:
    """The opcode of an instruction without its guard predicate or modifiers (FADD.RZ -> FADD)."""
    words = text.split()
    word = words[1] if words[0].startswith("@") else words[0]
    return word.split(".")[0]


def functions(sass: str) -> Dict[str, List[Instruction]]:
    """Each function's instructions (address, text) in a cuobjdump -sass listing."""
    found: Dict[str, List[Instruction]] = {}
    current: Optional[List[Instruction]] = None
    for line in sass.splitlines():
        name = _FUNCTION.match(line)
        if name:
            current = found.setdefault(name.group(1), [])
            continue
        instruction = _INSTRUCTION.match(line)
        if instruction and current is not None:
            current.append((int(instruction.group(1), 16), instruction.group(2)))
    return found


def blocks(instructions: List[Instruction]) -> List[List[Instruction]]:
    """Straight-line blocks: split after each control-flow instruction and before each branch
    target, so a block runs from its first instruction to its last without a jump in or out."""
    targets = set()
    for _, text in instructions:
        if opcode(text) in ("BRA", "BSSY", "CALL"):
            address = re.search(r"0x([0-9a-f]+)\s*$", text)
            if address:
                targets.add(int(address.group(1), 16))
    result: List[List[Instruction]] = []
    current: List[Instruction] = []
    for address, text in instructions:
        if address in targets and current:
            result.append(current)
            current = []
        current.append((address, text))
        if opcode(text) in _BLOCK_ENDS:
            result.append(current)
            current = []
    if current:
        result.append(current)
    return result


def census(instructions: List[Instruction], longest: int = 3) -> dict:
    """The function's instruction count and its `longest` straight-line blocks, each with its
    first address, length and opcodes by count."""
    ranked = sorted(blocks(instructions), key=len, reverse=True)[:longest]
    return {
        "instructions": len(instructions),
        "blocks": [{"start": block[0][0], "length": len(block),
                    "opcodes": Counter(opcode(text) for _, text in block).most_common()}
                   for block in ranked],
    }


def find_cuobjdump(given: Optional[str]) -> str:
    candidates = [given, shutil.which("cuobjdump")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(str(Path(home) / "bin" / "cuobjdump"))
    try:  # the pip wheel nvidia-cuda-cuobjdump, installed
        import nvidia  # type: ignore

        for root in nvidia.__path__:
            candidates.extend(str(p) for p in Path(root).glob("cu*/bin/cuobjdump"))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("sass_census: no cuobjdump found; give --cuobjdump PATH (CUDA's bin folder, or the "
             "nvidia-cuda-cuobjdump wheel: pip download --no-deps nvidia-cuda-cuobjdump, unzip)")


def demangle(names: List[str]) -> List[str]:
    if not shutil.which("c++filt"):
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    return out.splitlines() if len(out.splitlines()) == len(names) else names


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--object", required=True, help="a built .o or .so of the CUDA extension")
    parser.add_argument("--kernel", default=f"membrane_(forward|backward)_fast.*{DEFAULT_CELL}fLb0E",
                        help="regular expression over the mangled names (default: %(default)s)")
    parser.add_argument("--longest", type=int, default=3, help="blocks listed per kernel")
    parser.add_argument("--cuobjdump", help="path of cuobjdump")
    args = parser.parse_args(argv)
    tool = find_cuobjdump(args.cuobjdump)
    sass = subprocess.run([tool, "-sass", args.object], capture_output=True, text=True, check=True).stdout
    chosen = {name: ins for name, ins in functions(sass).items() if re.search(args.kernel, name)}
    if not chosen:
        sys.exit(f"sass_census: no kernel matches {args.kernel!r} in {args.object}")
    for (name, instructions), readable in zip(chosen.items(), demangle(list(chosen))):
        result = census(instructions, args.longest)
        print(f"{readable}: {result['instructions']} instructions")
        for block in result["blocks"]:
            mix = " ".join(f"{op} {n}" for op, n in block["opcodes"])
            print(f"  block at {block['start']:#06x}: {block['length']:4d} instructions: {mix}")


if __name__ == "__main__":
    main()
