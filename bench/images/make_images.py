"""Draw the bench's photos from scikit-image's bundled sample data (nothing is downloaded).

``python make_images.py OUT_DIR`` writes:
- ``person_640x480.jpg``: NASA's astronaut portrait (public domain), 480×480 on a 640×480 grey
  canvas: W2's 640×480 JPEG, with one person for the detector to find;
- ``motorcycle.jpg``: the right view of the Middlebury 2014 motorcycle (741×500): W3's photo, which
  the vehicle workflow classifies as a motorcycle above its 0.75 gate.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
canvas = Image.new("RGB", (640, 480), (90, 90, 90))
canvas.paste(Image.fromarray(data.astronaut()).resize((480, 480)), (80, 0))
canvas.save(out / "person_640x480.jpg", "JPEG", quality=90)
_, right, _ = data.stereo_motorcycle()
Image.fromarray(np.asarray(right)).save(out / "motorcycle.jpg", "JPEG", quality=90)
