"""The ``vehiculos`` workflows as written for AWS Step Functions, and the mapping that runs them here."""
