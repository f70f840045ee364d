"""The application without a window: the workspace and its parts (app.workspace), the view
state, the notices, and the `RunSource` protocol for whatever produces records.

numpy, the standard library and dpgviz.core/store/ipc only: never dearpygui, torch,
dpgviz.engine or dpgviz.gui (tests/test_layering.py checks).
"""
