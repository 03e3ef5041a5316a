"""Tools around a served model: validation, optimisation, load tests, batch and stream scoring."""
