"""Load scenarios for the broker; `make bench` runs them (see __main__)."""
