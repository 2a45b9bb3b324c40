# Repo-level pytest setup: the plugin's own tests drive pytest in-process with pytester.
pytest_plugins = ["pytester"]

# SQLAlchemy (the results store) imported here, before any in-process pytester run: pytester
# drops the modules a run imported when it ends, and a second import of SQLAlchemy's compiled
# parts beside the first fails ("'InternalTraversal' object is not callable").
import sqlalchemy  # noqa: E402,F401
