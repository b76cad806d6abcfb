// Registers the CPU operators as torch.ops.exodus_jit_cpu.*.
#include "cpu_backend.h"
#include "ops_autograd.h"

EXODUS_DEFINE_OPS(exodus_jit_cpu, exodus::CpuBackend)
EXODUS_DEFINE_AUTOGRAD_OPS(exodus_jit_cpu, exodus::CpuBackend)
