"Finding the data and refusing bad files, on small IDX files the tests write themselves."
import gzip
import hashlib
from pathlib import Path

import pytest
import torch

import fashion_nb.datafiles as datafiles
from fashion_nb.data import load_split
from conftest import idx_bytes, write_split_files


def tiny_specs(images, labels):
    "SPLITS for a tiny data set: the shapes and checksums of `images` and `labels`, used for both splits."
    def spec(name, arr): return datafiles.IdxSpec(name, tuple(arr.shape), hashlib.md5(idx_bytes(arr)).hexdigest())
    return {split: (spec(datafiles.SPLITS[split][0].name, images), spec(datafiles.SPLITS[split][1].name, labels))
            for split in datafiles.SPLITS}


@pytest.fixture
def tiny(isolated, monkeypatch):
    "A valid tiny data set of 6 images in a folder, with SPLITS describing it."
    images = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([9, 0, 0, 3, 0, 2], dtype=torch.uint8)
    folder = isolated/'given'
    for split in datafiles.SPLITS: write_split_files(folder, images, labels, split)
    monkeypatch.setattr(datafiles, 'SPLITS', tiny_specs(images, labels))
    monkeypatch.setattr(datafiles, 'ALL_FILES', tuple(s for pair in datafiles.SPLITS.values() for s in pair))
    return folder, images, labels


def test_missing_everywhere_is_one_clear_line(isolated):
    with pytest.raises(datafiles.DataNotFoundError) as info:
        load_split('train', download=False)
    message = str(info.value)
    assert '\n' not in message
    for place in ('project data folder', 'system package', 'torchvision download'):
        assert place in message
    for fix in ('apt-get install dataset-fashion-mnist', 'FASHION_NB_DATA', 'online'):
        assert fix in message
    assert info.value.__context__ is None  # no chain of tracebacks behind it


def test_a_folder_named_explicitly_is_the_only_place_looked_in(tiny, monkeypatch):
    "The usual places hold the data, but a named folder that lacks it is an error naming the folder and the missing files."
    folder, images, labels = tiny
    for split in datafiles.SPLITS: write_split_files(datafiles.SYSTEM_DATA_DIR, images, labels, split)
    (folder/'t10k-labels-idx1-ubyte.gz').unlink(); (folder/'train-images-idx3-ubyte.gz').unlink()
    with pytest.raises(datafiles.DataNotFoundError) as info:
        datafiles.find_data(folder, download=False)
    assert str(info.value) == (f"data_dir {folder} lacks train-images-idx3-ubyte, t10k-labels-idx1-ubyte (gzipped or not); "
                               "put the four Fashion-MNIST files there, or name no folder to search the usual places")
    monkeypatch.setenv(datafiles.ENV_VAR, str(folder/'nowhere'))
    with pytest.raises(datafiles.DataNotFoundError, match=r'^\$FASHION_NB_DATA .*nowhere: no such folder'):
        datafiles.find_data(download=False)
    monkeypatch.delenv(datafiles.ENV_VAR)
    assert datafiles.find_data(download=False)['train-images-idx3-ubyte'].parent == datafiles.SYSTEM_DATA_DIR


def test_outside_a_checkout_the_data_lives_in_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(datafiles, 'checkout_root', lambda: None)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert datafiles.project_data_dir() == tmp_path/'fashion_nb'/'FashionMNIST'/'raw'
    monkeypatch.delenv('XDG_CACHE_HOME')
    assert datafiles.project_data_dir() == Path.home()/'.cache'/'fashion_nb'/'FashionMNIST'/'raw'


def test_download_failure_is_reported(isolated, monkeypatch):
    monkeypatch.setattr(datafiles, '_download', lambda root: 'URLError: <urlopen error [Errno 101] Network is unreachable>')
    with pytest.raises(datafiles.DataNotFoundError, match='torchvision download \\(URLError'):
        datafiles.find_data()


def test_loads_a_valid_folder_given_explicitly(tiny):
    folder, images, labels = tiny
    split = load_split('test', data_dir=folder, download=False)
    assert torch.equal(split.images, images) and split.labels.tolist() == labels.tolist()
    assert split[0][0].shape == (1, 28, 28)


def test_environment_variable_is_searched_first(tiny, monkeypatch):
    folder, images, _ = tiny
    monkeypatch.setenv(datafiles.ENV_VAR, str(folder))
    assert torch.equal(load_split('train', download=False).images, images)


def test_search_order(tiny):
    "The project's folder wins over the system package's; a given folder wins over both."
    folder, images, labels = tiny
    system, project = datafiles.SYSTEM_DATA_DIR, datafiles.project_data_dir()
    for split in datafiles.SPLITS:
        write_split_files(system, images, labels, split)
        write_split_files(project, images, labels, split, gz=False)
    assert datafiles.find_data(download=False)['train-images-idx3-ubyte'] == project/'train-images-idx3-ubyte'
    assert datafiles.find_data(folder, download=False)['train-images-idx3-ubyte'] == folder/'train-images-idx3-ubyte.gz'


def test_wrong_magic_names_the_file(tiny):
    folder, images, _ = tiny
    bad = folder/'train-images-idx3-ubyte.gz'
    bad.write_bytes(gzip.compress(b'\x00\x00\x09\x03' + idx_bytes(images)[4:]))
    with pytest.raises(datafiles.DataIntegrityError, match='train-images-idx3-ubyte.gz: wrong magic number'):
        load_split('train', folder, download=False)


def test_truncated_gzip_and_truncated_idx(tiny):
    folder, images, _ = tiny
    target = folder/'train-images-idx3-ubyte.gz'
    target.write_bytes(gzip.compress(idx_bytes(images))[:-20])
    with pytest.raises(datafiles.DataIntegrityError, match='cannot be read'):
        load_split('train', folder, download=False)
    target.write_bytes(gzip.compress(idx_bytes(images)[:-100]))
    with pytest.raises(datafiles.DataIntegrityError, match='truncated'):
        load_split('train', folder, download=False)


def test_a_damaged_gzip_body_is_one_line(tiny):
    "Flipped bits inside the compressed body make zlib fail, not gzip's own checks: still a DataIntegrityError."
    folder, images, _ = tiny
    target = folder/'train-images-idx3-ubyte.gz'
    gz = gzip.compress(idx_bytes(images))
    target.write_bytes(gz[:10] + bytes(b ^ 0xff for b in gz[10:-8]) + gz[-8:])  # header and trailer kept
    with pytest.raises(datafiles.DataIntegrityError) as info:
        load_split('train', folder, download=False)
    assert str(info.value).startswith(f"{target}: cannot be read (error: ") and '\n' not in str(info.value)


def test_image_and_label_counts_must_match(isolated, monkeypatch):
    images = torch.zeros(5, 28, 28, dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.uint8)
    write_split_files(isolated/'given', images, labels, 'test')
    write_split_files(isolated/'given', images, labels, 'train')
    monkeypatch.setattr(datafiles, 'SPLITS', tiny_specs(images, labels))
    with pytest.raises(datafiles.DataIntegrityError, match='5 images but 4 labels'):
        load_split('test', isolated/'given', download=False)


def test_counts_must_be_the_data_sets(isolated):
    "With the real specs, a file of the right kind but the wrong number of images is refused."
    images, labels = torch.zeros(7, 28, 28, dtype=torch.uint8), torch.zeros(7, dtype=torch.uint8)
    for split in datafiles.SPLITS: write_split_files(isolated/'given', images, labels, split)
    with pytest.raises(datafiles.DataIntegrityError, match=r'holds shape \(7, 28, 28\), expected \(10000, 28, 28\)'):
        load_split('test', isolated/'given', download=False)


def test_checksum_mismatch_on_a_full_size_file(isolated):
    images, labels = torch.zeros(10000, 28, 28, dtype=torch.uint8), torch.zeros(10000, dtype=torch.uint8)
    for split in datafiles.SPLITS: write_split_files(isolated/'given', images, labels, split)
    with pytest.raises(datafiles.DataIntegrityError, match="checksum .* differs from Fashion-MNIST's"):
        load_split('test', isolated/'given', download=False)


def test_labels_outside_the_ten_classes(tiny, monkeypatch):
    folder, images, _ = tiny
    labels = torch.tensor([9, 0, 0, 3, 0, 12], dtype=torch.uint8)
    for split in datafiles.SPLITS: write_split_files(folder, images, labels, split)
    monkeypatch.setattr(datafiles, 'SPLITS', tiny_specs(images, labels))
    with pytest.raises(datafiles.DataIntegrityError, match='label 12 is not one of the 10 classes'):
        load_split('train', folder, download=False)


def test_missing_one_file_is_not_a_complete_set(tiny):
    "Even the split that has both its files is refused: a folder is used whole or not at all."
    folder, images, labels = tiny
    for split in datafiles.SPLITS: write_split_files(datafiles.project_data_dir(), images, labels, split)
    (datafiles.project_data_dir()/'t10k-labels-idx1-ubyte.gz').unlink()
    with pytest.raises(datafiles.DataNotFoundError, match=r'project data folder \S+ \(no complete set'):
        load_split('train', download=False)


def test_real_data_matches_torchvision(real_data_available):
    ours = load_split('test', download=False)
    theirs = datafiles.torchvision_dataset('test', download=False)
    for i in (0, 1, 4999, 9999):
        assert torch.equal(ours[i][0], theirs[i][0]) and ours[i][1] == theirs[i][1]


@pytest.mark.parametrize('split', ['valid', 'Train', 'test '])
def test_torchvision_dataset_refuses_an_unknown_split(isolated, split):
    "Any name but 'train' used to give the test split without a word."
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]"):
        datafiles.torchvision_dataset(split, download=False)
