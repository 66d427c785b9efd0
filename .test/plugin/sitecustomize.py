# Python imports this module at start-up when this folder is on PYTHONPATH
import vimodes_test_plugin  # noqa: F401
