"""`fashion-nb predict` on a reader's pictures: photos made from test pictures (enlarged, a dark garment on a light tinted
background, PNG and JPEG) are judged about as well as the pictures themselves, and a broken file gets one line of its own
while the others are still judged."""
import subprocess
import sys
from pathlib import Path

import torch

from fashion_nb.cli import main
from fashion_nb.core import project_root
from fashion_nb.data import CLASS_NAMES, load_split
from fashion_nb.inference import photo_of

MODEL = project_root()/'nbs'/'results'/'demo_model.pt'  # the main job's model, committed beside the pages


def test_photos_of_test_pictures_are_judged_right(tmp_path, capsys):
    test = load_split('test', download=False)
    chosen = torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[:60].tolist()
    photos = []
    for k, i in enumerate(chosen):
        photos.append(tmp_path/f"photo{k}.{'jpg' if k % 2 else 'png'}")
        photo_of(test.images[i], seed=k).save(photos[-1])
    broken = tmp_path/'broken.jpg'
    broken.write_bytes(photos[1].read_bytes()[:300])  # a JPEG cut short, as a failed download leaves it
    code = main(['predict', '--model', str(MODEL), str(photos[0]), str(broken), *map(str, photos[1:])])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1 and len(lines) == 61, lines[:3]
    assert lines[1].startswith(f"{broken}: cannot judge it: ") and '\n' not in lines[1]
    judged = lines[:1] + lines[2:]
    right = [line.split(': ', 1)[1].startswith(CLASS_NAMES[int(test.labels[i])] + ' ') for line, i in zip(judged, chosen)]
    assert all(line.startswith(f"{photo}: ") for line, photo in zip(judged, photos))
    assert sum(right) >= 45, f"{sum(right)} of 60 right"  # the pictures themselves: about 87 %


def test_the_installed_command(tmp_path):
    photo_of(load_split('test', download=False).images[0]).save(tmp_path/'boot.png')
    command = [str(Path(sys.executable).parent/'fashion-nb'), 'predict', '--model', str(MODEL), str(tmp_path/'boot.png')]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(f"{tmp_path/'boot.png'}: Ankle boot "), done
    missing = subprocess.run(command[:3] + [str(tmp_path/'none.pt'), str(tmp_path/'boot.png')], capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.count('\n') == 1 and 'no such checkpoint' in missing.stderr
