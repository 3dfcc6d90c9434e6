"""Temperature forecast (``temperatura``): 60 hourly temperatures in °C → the next hour."""
