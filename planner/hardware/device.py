"""Device behaviour shared by the pydantic schema (DeviceSpec) and cached records (DeviceRecord)."""

from __future__ import annotations

from planner.cache import Record

# ISA extensions as the probe names them (planner.hardware.probe normalises /proc/cpuinfo and sysctl flags to these);
# DeviceSpec.cpu_isa takes these names. Here, not in the schema module, so that the probe need not import pydantic.
CPU_ISA_NAMES = ("avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                 "avx512_fp16", "amx", "amx_bf16", "amx_int8", "neon", "dotprod", "i8mm", "bf16", "sve", "sve2", "sme",
                 "sme2")


class DeviceMethods:
    """Derived values of a device; needs the DeviceSpec fields."""

    @property
    def cc(self) -> float:
        """Compute capability as a number (0.0 where it does not apply)."""
        return float(self.compute_capability) if self.compute_capability else 0.0  # type: ignore[attr-defined]

    @property
    def memory_bytes(self) -> int:
        """Total device memory in bytes."""
        return int(self.memory_gib * 2**30)  # type: ignore[attr-defined]

    def peak_tflops(self, dtype: str) -> float | None:
        """Peak dense tensor throughput for a compute dtype ('fp16', 'bf16', 'fp8', 'fp4', 'int8', 'fp32')."""
        s = self
        return {
            "fp32": s.peak_fp32_tflops,  # type: ignore[attr-defined]
            "fp16": s.peak_fp16_tflops or s.peak_bf16_tflops,  # type: ignore[attr-defined]
            "fp16_acc16": s.peak_fp16_acc16_tflops or s.peak_fp16_tflops or s.peak_bf16_tflops,  # type: ignore[attr-defined]
            "bf16": s.peak_bf16_tflops,  # type: ignore[attr-defined]
            "fp8": s.peak_fp8_tflops,  # type: ignore[attr-defined]
            "fp4": s.peak_fp4_tflops,  # type: ignore[attr-defined]
            "int8": s.peak_int8_tops,  # type: ignore[attr-defined]
        }.get(dtype)


class DeratingRecord(Record):
    """Cached form of Derating."""


class DeviceRecord(Record, DeviceMethods):
    """Cached form of DeviceSpec (validated when the cache was written)."""

    _nested = {"bandwidth_derating": DeratingRecord}


class FabricRecord(Record):
    """Cached form of FabricSpec."""
