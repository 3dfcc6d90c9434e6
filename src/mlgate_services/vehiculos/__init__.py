"""Vehicle classifier (``vehiculos``): an image → ``inferences = [p_bicycle, p_motorcycle]``."""
