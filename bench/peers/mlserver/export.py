"""Export the committed skops model to the joblib file MLServer's sklearn runtime loads."""

import sys

import joblib
import skops.io as sio

src, dst = sys.argv[1], sys.argv[2]
joblib.dump(sio.load(src, trusted=sio.get_untrusted_types(file=src)), dst)
