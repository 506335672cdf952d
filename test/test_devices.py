"""Device and precision rules (dehaze_ros.devices), with the machine's capabilities as inputs."""

import pytest
import torch

from dehaze_ros import devices
from dehaze_ros.devices import DeviceError, cpu_flags, cpu_supports_bf16, resolve_precision

CPU = torch.device("cpu")
X86_CPUINFO = (
    "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw {extra}\nbogomips\t: 4000\n"
)
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd {extra}\nCPU implementer\t: 0x41\n"


def test_cpu_flags_read_x86_and_arm_cpuinfo():
    assert "avx512_bf16" in cpu_flags(X86_CPUINFO.format(extra="avx512_bf16"))
    assert "bf16" in cpu_flags(ARM_CPUINFO.format(extra="bf16 i8mm"))
    assert cpu_flags("no flags here") == frozenset()


@pytest.mark.parametrize(
    "cpuinfo, onednn, native",
    [
        (X86_CPUINFO.format(extra="avx512_bf16"), True, True),
        (X86_CPUINFO.format(extra="amx_bf16 amx_tile"), True, True),
        (ARM_CPUINFO.format(extra="bf16"), True, True),
        # oneDNN says yes on any AVX512BW CPU, but without the instruction bf16 is emulated (slow).
        (X86_CPUINFO.format(extra=""), True, False),
        (X86_CPUINFO.format(extra="avx512_bf16"), False, False),
        ("", True, True),  # no /proc/cpuinfo (macOS): oneDNN's word is all there is
    ],
)
def test_native_bf16_needs_the_instruction_and_onednn(cpuinfo, onednn, native):
    assert cpu_supports_bf16(cpu_flags(cpuinfo), onednn) is native


def test_cpu_precision_rules():
    assert resolve_precision("bf16", CPU, cpu_bf16=True) == torch.bfloat16
    with pytest.raises(
        DeviceError, match="bf16 on the CPU needs native bf16 support .*use fp32 or auto"
    ):
        resolve_precision("bf16", CPU, cpu_bf16=False)
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU, cpu_bf16=True)
    assert resolve_precision("fp32", CPU, cpu_bf16=True) == torch.float32
    # auto never picks bf16 on a CPU without it, and follows the measured rule on one with it.
    assert resolve_precision("auto", CPU, cpu_bf16=False) == torch.float32
    assert resolve_precision("auto", CPU, cpu_bf16=True) == devices.dtype(
        devices.CPU_AUTO_PRECISION
    )
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


def test_auto_on_the_cpu_with_a_gpu_in_the_machine_says_why_and_what_to_do():
    """The Jetson case: a CPU wheel installed over NVIDIA's, auto then runs on the CPU in silence."""
    cpu_wheel = devices.auto_cpu_warning("auto", "cpu", "/dev/nvidia0 exists", torch_cuda=None)
    assert (
        "NVIDIA GPU is visible (/dev/nvidia0 exists)" in cpu_wheel and "CPU-only build" in cpu_wheel
    )
    assert "Install on a GPU or a Jetson" in cpu_wheel and "device cpu" in cpu_wheel
    broken_cuda = devices.auto_cpu_warning(
        "auto", "cpu", "nvidia-smi is at /usr/bin/nvidia-smi", torch_cuda="12.6"
    )
    assert "CUDA 12.6" in broken_cuda and "torch.cuda.is_available() is False" in broken_cuda
    # No GPU, a GPU in use, or the CPU asked for by name: nothing to say.
    assert devices.auto_cpu_warning("auto", "cpu", "", torch_cuda=None) == ""
    assert devices.auto_cpu_warning("auto", "cuda", "/dev/nvidia0 exists", torch_cuda="12.6") == ""
    assert devices.auto_cpu_warning("cpu", "cpu", "/dev/nvidia0 exists", torch_cuda=None) == ""


def test_a_gpu_is_seen_by_its_device_files_or_nvidia_smi(tmp_path):
    jetson = tmp_path / "nv_tegra_release"
    assert devices.visible_gpu((str(tmp_path / "nvidia0"),), which=lambda name: None) == ""
    jetson.write_text("# R36 (release), REVISION: 4.3\n")
    assert (
        devices.visible_gpu((str(tmp_path / "nvidia0"), str(jetson)), which=lambda name: None)
        == f"{jetson} exists"
    )
    assert (
        devices.visible_gpu((), which=lambda name: "/usr/bin/nvidia-smi")
        == "nvidia-smi is at /usr/bin/nvidia-smi"
    )


def test_the_exporting_probe_works_on_torch_without_is_exporting():
    """NVIDIA's Jetson wheels lag PyPI: torch.compiler.is_exporting arrived in 2.7."""
    from types import SimpleNamespace

    from dehaze_ros.compat import exporting_probe, is_exporting

    assert is_exporting() is False
    older = SimpleNamespace(is_compiling=lambda: "compiling")
    assert exporting_probe(older)() == "compiling"
    assert exporting_probe(SimpleNamespace())() is False
