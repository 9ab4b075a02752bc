"""tb/objcache.py: Verilator's run-time objects shared between builds, everything else compiled as is."""
import shutil

import pytest

from tb import objcache

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="needs a C++ compiler")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    root = tmp_path / "vroot"
    (root / "include").mkdir(parents=True)
    (root / "include" / "lib.cpp").write_text("int lib_answer() { return LIB_VALUE; }\n")
    (tmp_path / "model.cpp").write_text("int model() { return 1; }\n")
    monkeypatch.setenv("VERILATOR_ROOT", str(root))
    monkeypatch.setattr(objcache, "CACHE", tmp_path / "cache")
    for b in ("b1", "b2"):
        (tmp_path / b).mkdir()
    return tmp_path


def compile_in(build, src, flags=("-DLIB_VALUE=7",), obj="lib.o"):
    return objcache.main(["c++", *flags, "-MMD", "-c", "-o", str(build / obj), str(src)])


def test_runtime_object_compiled_once_then_copied(tree):
    src = tree / "vroot" / "include" / "lib.cpp"
    assert compile_in(tree / "b1", src) == 0
    entries = sorted(p.suffix for p in (tree / "cache").iterdir())
    assert entries == [".d", ".o"]
    (tree / "vroot" / "include" / "lib.cpp").touch()      # same bytes: still the same entry
    assert compile_in(tree / "b2", src) == 0
    assert (tree / "b2" / "lib.o").read_bytes() == (tree / "b1" / "lib.o").read_bytes()
    assert (tree / "b2" / "lib.d").exists()
    assert len(list((tree / "cache").iterdir())) == 2


def test_other_flags_or_source_make_another_entry(tree):
    src = tree / "vroot" / "include" / "lib.cpp"
    compile_in(tree / "b1", src)
    compile_in(tree / "b2", src, flags=("-DLIB_VALUE=8",))
    assert len(list((tree / "cache").iterdir())) == 4
    src.write_text("int lib_answer() { return LIB_VALUE + 1; }\n")
    compile_in(tree / "b2", src)
    assert len(list((tree / "cache").iterdir())) == 6


def test_model_sources_and_failures_are_not_cached(tree):
    assert compile_in(tree / "b1", tree / "model.cpp", obj="model.o") == 0
    assert (tree / "b1" / "model.o").exists()
    (tree / "vroot" / "include" / "bad.cpp").write_text("this is not C++\n")
    assert compile_in(tree / "b1", tree / "vroot" / "include" / "bad.cpp", obj="bad.o") != 0
    assert not (tree / "cache").exists()
