"""The test suite.

Same seed, same numbers (``tests/golden``): PyTorch, oneDNN and MKL pick their CPU kernels by
the instruction set, and AVX-512 kernels sum in another order than AVX2 ones, so a run recorded
on one CPU differs in the last bits on another and the difference grows over training. The
package pins all three to AVX2 (MKL through its conditional numerical reproducibility) before
anything imports torch; the SuperLink and Ray processes the tests start inherit the environment.
That is not enough across CPUs: numbers recorded on an earlier machine differ from an AMD
EPYC's in the fifth digit of a loss, so the golden numbers are kept per CPU.
"""

import os

for _name, _value in {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}.items():
    os.environ.setdefault(_name, _value)
