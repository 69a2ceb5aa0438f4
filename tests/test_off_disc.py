"""Off-disc training slices: the vertebral-body slices every study holds, labelled like the rest."""

import numpy as np
import pydicom
import pytest

from train.data.mendeley import DatasetError, index_dataset, load_pair, read_image, read_label
from train.data.phantom import sample_patient
from train.data.phantom_dicom import plan_slices, series_folder
from train.data.synth import OFF_DISC_SLICES, synthesize


@pytest.fixture(scope="module")
def off_disc_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("off_disc")
    synthesize(out, patients=1, seed=3, dicom=True, off_disc=True)
    return out


def test_each_level_gets_disc_endplate_and_pedicle_slices_paired_by_tag(off_disc_set):
    pairs = index_dataset(off_disc_set)
    assert [p.key for p in pairs if p.disc == 3] == [("0001", 3, ""), ("0001", 3, "endplate"), ("0001", 3, "pedicle")]
    assert len(pairs) == 9
    for pair in pairs:
        assert pair.image_paths["T2"].name == pair.label_path.name.replace("L1_", "T2_")
        image, mask = load_pair(pair)
        assert image.shape == mask.shape == (320, 320)
    # Off-disc slices cut bone, not disc: no IVD pixels, but the canal and arch continue.
    for pair in pairs:
        mask = read_label(pair.label_path)
        assert ((mask == 1).sum() == 0) == (pair.tag != "")
        assert (mask == 3).sum() > 0


def test_off_disc_slices_are_the_slices_of_the_dicom_study(off_disc_set):
    patient = sample_patient(3, 0)
    planned = {(s.disc, s.slice_key): s.instance for s in plan_slices(patient)}
    series = off_disc_set / "01_MRI_Data" / patient.pid / series_folder(patient)
    keys = dict(OFF_DISC_SLICES) | {"": 0}
    matched = 0
    for pair in index_dataset(off_disc_set):
        instance = planned.get((pair.disc, keys[pair.tag]))
        if instance is None:  # e.g. the pedicle above D3 when the study starts at the end plate
            continue
        dicom = pydicom.dcmread(series / f"IM_{instance:04d}.ima").pixel_array
        assert np.array_equal(read_image(pair.image_paths["T2"]), dicom), pair.label_path.name
        matched += 1
    assert matched >= 7


def test_unknown_tag_characters_are_rejected(off_disc_set, tmp_path):
    label_dir = tmp_path / "05_Final_Ground_Truth_Data" / "Label_Images"
    label_dir.mkdir(parents=True)
    source = next((off_disc_set / "05_Final_Ground_Truth_Data" / "Label_Images").glob("*.png"))
    (label_dir / "L1_0001_D3-end_2.png").write_bytes(source.read_bytes())
    with pytest.raises(DatasetError, match="L1_0001_D3-end_2.png: file name does not match"):
        index_dataset(tmp_path)
