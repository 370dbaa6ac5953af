"""The round report both adapters share (fedcrypt.integrations._report): field order, JSON keys, copies."""

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.integrations._report import RoundReport, check_number, save_arrays

BASE = ["round", "nodes", "survivors", "dropped", "refused", "stage_seconds", "aborted", "bytes_down", "bytes_up"]


def test_the_base_report_is_json_friendly_and_copies_its_containers() -> None:
    report = RoundReport(2, [7, 3], survivors=[3], dropped={7: "ENCRYPT"}, refused={7: "SpecMismatchError: x"})
    out = report.to_dict()
    assert list(out) == BASE and out["dropped"] == {"7": "ENCRYPT"} and out["refused"] == {"7": "SpecMismatchError: x"}
    out["survivors"].append(7)
    out["dropped"]["3"] = "DECRYPT"
    assert report.survivors == [3] and report.dropped == {7: "ENCRYPT"}
    assert json.loads(json.dumps(out)) == out


def test_the_flower_report_is_the_shared_one() -> None:
    flower = pytest.importorskip("fedcrypt.integrations.flower")
    assert flower.RoundReport is RoundReport


def test_the_flare_report_keeps_its_sites_key_and_its_file_format() -> None:
    pytest.importorskip("nvflare.collab")
    from fedcrypt.integrations.nvflare import RoundReport as FlareReport

    report = FlareReport(1, ["site-1", "site-2"], survivors=["site-1"], dropped={"site-2": "UNMASK"}, weight=3.0,
                         metrics={"loss": 0.5}, dp={"mechanism": "skellam"})
    assert isinstance(report, RoundReport) and report.sites == ["site-1", "site-2"]
    out = report.to_dict()
    assert list(out) == [("sites" if k == "nodes" else k) for k in BASE] + ["weight", "metrics", "dp"]
    # what the server wrote before the report was shared: dataclasses.asdict with a `sites` field
    before = {("sites" if k == "nodes" else k): v for k, v in dataclasses.asdict(report).items()}
    assert json.dumps(out, indent=1) == json.dumps(before, indent=1)


def test_check_number_names_the_bound() -> None:
    check_number("train_timeout", None, optional=True)
    check_number("rounds", 1, minimum=1)
    with pytest.raises(ValueError, match="stage_timeout must be a positive number of seconds, got 0"):
        check_number("stage_timeout", 0)
    with pytest.raises(ValueError, match="max_weight must be a positive finite number, got inf"):
        check_number("max_weight", float("inf"))
    with pytest.raises(ValueError, match="rounds must be an integer >= 1, got True"):
        check_number("rounds", True, minimum=1)


def test_site_floor_is_the_stricter_of_the_job_and_the_site_environment(monkeypatch) -> None:
    """A job (maybe the server's operator's) cannot lower a floor the site's operator pinned."""
    from fedcrypt.integrations._report import site_floor

    monkeypatch.delenv("FEDCRYPT_MAX_COLLUDERS", raising=False)
    assert site_floor("max_colluders", 2, integer=True) == 2  # nothing pinned: the job's
    monkeypatch.setenv("FEDCRYPT_MAX_COLLUDERS", "3")
    assert site_floor("max_colluders", 0, integer=True) == 3  # the job says less: the site's
    assert site_floor("max_colluders", 5, integer=True) == 5  # the job says more: stricter still
    monkeypatch.setenv("FEDCRYPT_MIN_NOISE_MULTIPLIER", "0.5")
    assert site_floor("min_noise_multiplier", None, integer=False) == 0.5  # the job asked for no DP
    assert site_floor("min_noise_multiplier", 0.8, integer=False) == 0.8
    monkeypatch.setenv("FEDCRYPT_MIN_CLIENTS", " ")
    assert site_floor("min_clients", 4, integer=True) == 4  # blank: not set
    for variable, value, name, integer in (("FEDCRYPT_MIN_CLIENTS", "two", "min_clients", True),
                                           ("FEDCRYPT_MAX_COLLUDERS", "1.5", "max_colluders", True),
                                           ("FEDCRYPT_MAX_COLLUDERS", "-1", "max_colluders", True),
                                           ("FEDCRYPT_MIN_NOISE_MULTIPLIER", "nan", "min_noise_multiplier", False)):
        monkeypatch.setenv(variable, value)
        with pytest.raises(ValueError, match=variable):
            site_floor(name, 1, integer=integer)


@settings(max_examples=30, deadline=None)
@given(names=st.lists(st.sampled_from(["file", "allow_pickle", "args", "kwds", "base_model.model.layers.0.q_proj.lora_A.weight", "a/b", "x"]) | st.text(min_size=1, max_size=12).filter(lambda n: "\0" not in n and not n.endswith(".npy")),
                      min_size=1, max_size=6, unique=True))
def test_save_arrays_round_trips_every_name(tmp_path_factory, names: list[str]) -> None:
    # np.savez(path, **model) fails on a layer named 'file' and silently drops one named 'allow_pickle'
    path = tmp_path_factory.mktemp("npz") / "model.npz"
    arrays = {name: np.arange(i + 3, dtype=np.float32 if i % 2 else np.float64) * (i + 1) for i, name in enumerate(names)}
    save_arrays(path, arrays)
    with np.load(path, allow_pickle=False) as loaded:
        assert sorted(loaded.files) == sorted(names)
        for name, value in arrays.items():
            assert loaded[name].dtype == value.dtype and np.array_equal(loaded[name], value)


def test_save_arrays_refuses_a_name_npz_cannot_give_back(tmp_path) -> None:
    for bad in ["", "w.npy", "a\0b"]:
        with pytest.raises(ValueError, match="cannot be stored"):
            save_arrays(tmp_path / "m.npz", {bad: np.zeros(2)})
    with pytest.raises(TypeError):  # control: what np.savez does with the same layer
        np.savez(tmp_path / "n.npz", **{"file": np.zeros(2)})
