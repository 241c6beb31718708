"""Keyed cache files: a new key's file replaces the stale ones of its kind (the KEEP_OTHERS most recent stay) and
touches nothing else."""

import json
import os

import pytest

from planner.cachefiles import KEEP_OTHERS, prune_stale, write_keyed
from planner.cost import quality as Q


def _touch(path, text="{}", age_s=0):
    path.write_text(text)
    if age_s:
        t = path.stat().st_mtime - age_s
        os.utime(path, (t, t))
    return path


def test_writing_a_key_removes_only_the_same_kinds_stale_files(tmp_path):
    assert KEEP_OTHERS == 2
    # oldest first: of each kind, the two most recently written others stay and the rest go
    stale = [_touch(tmp_path / "hwdb-0123456789abcdef.json", age_s=400), _touch(tmp_path / "hwdb-00000000ffffffff.json", age_s=300),
             _touch(tmp_path / "layouts-qwen3-32b-0123456789abcdef.json", age_s=300)]
    recent = [_touch(tmp_path / "hwdb-0000000011111111.json", age_s=200), _touch(tmp_path / "hwdb-0000000022222222.json", age_s=100),
              _touch(tmp_path / "layouts-qwen3-32b-0000000011111111.json", age_s=200),
              _touch(tmp_path / "layouts-qwen3-32b-0000000022222222.json", age_s=100)]
    kept = recent + [_touch(tmp_path / n) for n in (
        "profiles-0123456789abcdef.json",  # another kind
        "layouts-qwen3-32b-instruct-0123456789abcdef.json",  # another model's layouts: its kind is longer
        "hwdb-notes.txt", "hwdb-0123456789abcdef.json.bak", "hwdb-0123456789ABCDEF.json", "hwdb-0123456789abcde.json",
        "membw.json")]
    (tmp_path / "hwdb-1111111111111111.json").mkdir()  # a directory named like a cache file is not a cache file
    target = _touch(tmp_path / "elsewhere.json", "user data")
    (tmp_path / "hwdb-2222222222222222.json").symlink_to(target)  # nor is a link, and its target is never followed
    write_keyed(tmp_path / "hwdb-fedcba9876543210.json", json.dumps({"a": 1}))
    write_keyed(tmp_path / "layouts-qwen3-32b-fedcba9876543210.json", "{}")
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "{}" for p in kept)
    assert json.loads((tmp_path / "hwdb-fedcba9876543210.json").read_text()) == {"a": 1}
    assert (tmp_path / "hwdb-1111111111111111.json").is_dir() and target.read_text() == "user data"
    assert (tmp_path / "hwdb-2222222222222222.json").is_symlink()


def test_a_name_outside_the_pattern_prunes_nothing(tmp_path):
    other = _touch(tmp_path / "membw-0123456789abcdef.json")
    assert prune_stale(tmp_path / "membw.json") == [] and other.exists()


def test_a_file_that_cannot_be_removed_is_left_and_not_an_error(tmp_path, monkeypatch):
    stale = [_touch(tmp_path / "hwdb-0123456789abcdef.json", age_s=400), _touch(tmp_path / "hwdb-00000000ffffffff.json", age_s=300)]
    for n in ("hwdb-0000000011111111.json", "hwdb-0000000022222222.json"):  # the two most recent others: kept anyway
        _touch(tmp_path / n)
    real = type(stale[0]).unlink

    def unlink(self, *a, **k):  # another process holds or already removed the first one
        if self.name == stale[0].name:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(type(stale[0]), "unlink", unlink)
    assert prune_stale(tmp_path / "hwdb-fedcba9876543210.json") == [stale[1]]
    assert stale[0].exists() and not stale[1].exists()


def test_the_quality_fit_cache_keeps_the_current_file_and_two_others(monkeypatch, tmp_path):
    """An edited quality module or table gets a new key: its fit is written beside the two most recent other versions'
    files (two installs sharing a cache keep theirs) and older ones go (the user cache once held 54 of them)."""
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path))
    old = [_touch(tmp_path / f"quality-fits-000000000000000{i}.json", json.dumps({}), age_s=100 * (4 - i)) for i in range(4)]
    Q._fits.cache_clear()
    try:
        Q._fits()
        files = set(tmp_path.glob("quality-fits-*.json"))
        (current,) = files - set(old)
        assert files == {current, old[2], old[3]} and json.loads(current.read_text())
    finally:
        Q._fits.cache_clear()


def test_a_user_catalog_and_the_bundled_one_keep_their_own_cache(monkeypatch, tmp_path):
    """Loaded together (the bundled catalog, then a user directory merged over it), each directory keeps one cache
    file: the second run reads both back instead of rebuilding the one the other evicted."""
    import yaml

    from planner.hardware.catalog import load_catalog
    from test_catalog import BASE

    cache = tmp_path / "cache"
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(cache))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "mine.yaml").write_text(yaml.safe_dump({"family": "mine", "devices": [{**BASE, "id": "my-box"}]}))
    load_catalog([mine])
    first = sorted(p.name for p in cache.glob("hwdb-*.json"))
    assert len(first) == 2
    assert load_catalog([mine]).get("my-box").id == "my-box"
    assert sorted(p.name for p in cache.glob("hwdb-*.json")) == first  # read back, nothing rewritten or evicted


def test_probed_devices_validate_once_then_come_from_one_cache_file(tmp_path, monkeypatch):
    """validated_device: pydantic validates a synthesized device the first time, the user cache answers after that
    (same fields), several devices share one file, a corrupt file is rebuilt, and bad figures raise one clear line."""
    import json

    from planner.hardware.device import DeviceRecord
    from planner.hardware.synthesized import validated_device
    from planner.hardware.targets import cpu_device

    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PLANNER_NO_CACHE", raising=False)
    first = cpu_device("Test CPU", 8, 32 * 2**30, ["avx2", "not-an-isa"])
    again = cpu_device("Test CPU", 8, 32 * 2**30, ["avx2", "not-an-isa"])
    assert not isinstance(first, DeviceRecord) and isinstance(again, DeviceRecord)
    assert json.loads(json.dumps(first.model_dump(mode="json"))) == again.model_dump(mode="json")
    assert again.cpu_isa == ["avx2"] and again.memory_gib == 32 and again.mem_bandwidth_gb_s == first.mem_bandwidth_gb_s
    other = cpu_device("Other CPU", 4, 16 * 2**30)
    files = list(tmp_path.glob("probed-devices-*.json"))
    assert len(files) == 1 and len(json.loads(files[0].read_text())) == 2 and other.cpu_cores == 4
    files[0].write_text("{not json")
    rebuilt = cpu_device("Test CPU", 8, 32 * 2**30, ["avx2"])
    assert not isinstance(rebuilt, DeviceRecord) and len(json.loads(files[0].read_text())) == 1  # validated anew
    bad = {**first.model_dump(mode="json"), "memory_gib": -1}
    with pytest.raises(ValueError, match="memory_gib"):
        validated_device(bad)


def test_catalog_cache_files_under_the_old_naming_are_removed_on_the_next_write(monkeypatch, tmp_path):
    """Before each catalog directory had a kind of its own the cache was `hwdb-<key>.json`; a rebuilt catalog cache
    removes those (and nothing else: another kind's file, a profile cache, a user's file stay)."""
    from planner.hardware.catalog import load_catalog

    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PLANNER_NO_CACHE", raising=False)
    legacy = [_touch(tmp_path / "hwdb-0123456789abcdef.json"), _touch(tmp_path / "hwdb-fedcba9876543210.json")]
    kept = [_touch(tmp_path / "profiles-0123456789abcdef.json"), _touch(tmp_path / "hwdb-notes.json"),
            _touch(tmp_path / "hwdb-0123456789abcdef.json.bak")]
    load_catalog()
    assert not any(p.exists() for p in legacy) and all(p.exists() for p in kept)
    (current,) = [p for p in tmp_path.glob("hwdb-*-*.json")]
    assert json.loads(current.read_text())
