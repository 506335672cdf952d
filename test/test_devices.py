"""Device and precision rules (dehaze_ros.devices), with the machine's capabilities as inputs."""
import pytest
import torch

from dehaze_ros import devices
from dehaze_ros.devices import DeviceError, cpu_flags, cpu_supports_bf16, resolve_precision

CPU = torch.device("cpu")
X86_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw {extra}\nbogomips\t: 4000\n"
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd {extra}\nCPU implementer\t: 0x41\n"


def test_cpu_flags_read_x86_and_arm_cpuinfo():
    assert "avx512_bf16" in cpu_flags(X86_CPUINFO.format(extra="avx512_bf16"))
    assert "bf16" in cpu_flags(ARM_CPUINFO.format(extra="bf16 i8mm"))
    assert cpu_flags("no flags here") == frozenset()


@pytest.mark.parametrize("cpuinfo, onednn, native", [
    (X86_CPUINFO.format(extra="avx512_bf16"), True, True),
    (X86_CPUINFO.format(extra="amx_bf16 amx_tile"), True, True),
    (ARM_CPUINFO.format(extra="bf16"), True, True),
    # oneDNN says yes on any AVX512BW CPU, but without the instruction bf16 is emulated (slow).
    (X86_CPUINFO.format(extra=""), True, False),
    (X86_CPUINFO.format(extra="avx512_bf16"), False, False),
    ("", True, True),   # no /proc/cpuinfo (macOS): oneDNN's word is all there is
])
def test_native_bf16_needs_the_instruction_and_onednn(cpuinfo, onednn, native):
    assert cpu_supports_bf16(cpu_flags(cpuinfo), onednn) is native


def test_cpu_precision_rules():
    assert resolve_precision("bf16", CPU, cpu_bf16=True) == torch.bfloat16
    with pytest.raises(DeviceError, match="bf16 on the CPU needs native bf16 support .*use fp32 or auto"):
        resolve_precision("bf16", CPU, cpu_bf16=False)
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU, cpu_bf16=True)
    assert resolve_precision("fp32", CPU, cpu_bf16=True) == torch.float32
    # auto never picks bf16 on a CPU without it, and follows the measured rule on one with it.
    assert resolve_precision("auto", CPU, cpu_bf16=False) == torch.float32
    assert resolve_precision("auto", CPU, cpu_bf16=True) == devices.dtype(devices.CPU_AUTO_PRECISION)
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", CPU)


def test_training_on_the_cpu_is_always_fp32():
    assert resolve_precision("auto", CPU, cpu_bf16=True, training=True) == torch.float32
    with pytest.raises(DeviceError, match="bf16 needs a CUDA device for training"):
        resolve_precision("bf16", CPU, cpu_bf16=True, training=True)


def test_device_spelling_and_availability():
    for good in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        devices.validate_device(good)
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "", None):
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
            devices.validate_device(bad)
    assert devices.resolve_device("cpu") == CPU
    assert devices.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            devices.resolve_device("cuda:0")


def test_precision_names_round_trip():
    for name in ("fp32", "fp16", "bf16"):
        assert devices.precision_name(devices.dtype(name)) == name
