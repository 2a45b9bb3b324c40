"""One cell's pipeline: artifact -> system under test -> driver -> Result. `cell.py` is the
entry point and dispatches on the serving system (in-process, served, generative) or on `ab`
(paired mode, which composes two systems under test: sides.py, remote.py)."""
