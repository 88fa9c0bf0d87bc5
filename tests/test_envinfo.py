"""Environment fingerprint: CPU feature parsing (x86 / ARM / fallbacks), git commit, the env dict."""

from __future__ import annotations

import subprocess

import pytest

from toolchain import envinfo

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu
"""
ZEN3 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n"
ALDER = "model name\t: 12th Gen Intel(R) Core(TM) i7\nflags\t\t: avx avx2 fma avx_vnni\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes asimddp i8mm sve\nCPU part\t: 0xd0c\n"


def test_x86_flags_with_avx512_vnni_and_amx() -> None:
    features = envinfo.cpu_features(X86, machine="x86_64")
    assert features["avx2"] and features["avx512f"] and features["avx512_vnni"] and features["vnni"]
    assert features["amx"] and features["amx_int8"] and not features["neon"]
    assert envinfo.cpu_model(X86) == "Intel(R) Xeon(R) Platinum 8480+"


def test_avx2_only_cpu_has_no_vnni() -> None:
    features = envinfo.cpu_features(ZEN3, machine="x86_64")
    assert features["avx2"] and features["fma"]
    assert not features["avx512f"] and not features["vnni"] and not features["amx"]


def test_avx_vnni_without_avx512_counts_as_vnni() -> None:
    features = envinfo.cpu_features(ALDER, machine="x86_64")
    assert features["vnni"] and features["avx_vnni"] and not features["avx512_vnni"]


def test_arm_features() -> None:
    features = envinfo.cpu_features(ARM, machine="aarch64")
    assert features["neon"] and features["arm_dotprod"] and features["arm_i8mm"] and features["sve"]
    assert not features["avx2"]
    assert "0xd0c" in envinfo.cpu_model(ARM)
    assert envinfo.cpu_features("", machine="arm64")["neon"]  # macOS: no cpuinfo, NEON is architectural


def test_unreadable_cpuinfo_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(envinfo, "CPUINFO", tmp_path / "missing")
    features = envinfo.cpu_features()
    assert set(features) >= {"avx2", "avx512f", "vnni", "amx", "neon"}
    assert envinfo.cpu_model()  # platform fallback, never empty


def test_this_machine() -> None:
    features = envinfo.cpu_features()
    assert all(isinstance(v, bool) for v in features.values())
    counts = envinfo.cpu_counts()
    assert counts["logical_cpus"] >= 1 and 1 <= counts["usable_cpus"] <= counts["logical_cpus"]


def test_git_commit_tolerates_missing_git(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    envinfo.git_commit.cache_clear()
    monkeypatch.setattr(subprocess, "run", no_git)
    try:
        assert envinfo.git_commit() == {}
    finally:
        envinfo.git_commit.cache_clear()


def test_environment_fingerprint_keys() -> None:
    env = envinfo.environment(device="cpu", threads=2)
    assert {"cpu", "threads", "device", "gpu", "versions", "vtool", "python", "load_average"} <= set(env)
    assert env["threads"] == 2 and env["cpu"]["model"] and isinstance(env["cpu"]["features"], list)
    assert env["versions"]["vtool"] == env["vtool"]["version"]
    assert "CPUs" in envinfo.describe_cpu(env)


def test_gpu_info_is_none_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        assert envinfo.gpu_info()["name"]
    else:
        assert envinfo.gpu_info() is None
