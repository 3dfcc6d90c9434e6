"""The reference services that ship with mlgate: each folder is a model with its recipe and card."""
