"""The intruder-detection reference service ``intrusos``: COCO detector, processor, ``POST /prodfaces``."""
